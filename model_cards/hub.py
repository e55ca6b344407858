"""Hub-ready checkpoint folders: model, processor, code, pipeline registration and model card in one call.

```python
>>> from bridge_stg.model_cards.hub import save_for_hub
>>> save_for_hub(model, processor, "bridge-stg-7b-vidstg", metrics="metrics.json",
...              card_kwargs={"model_id": "me/bridge-stg-7b-vidstg", "training_data": "VidSTG train split ..."})
>>> from huggingface_hub import upload_folder
>>> upload_folder(repo_id="me/bridge-stg-7b-vidstg", folder_path="bridge-stg-7b-vidstg")  # publishes it as is
```

The folder then loads anywhere with ``pipeline("video-grounding", model=folder_or_repo, trust_remote_code=True)``
or ``AutoModel`` / ``AutoProcessor`` with ``trust_remote_code=True``, also where ``bridge_stg`` is not installed.

Checkpoints write their own code here, at export: ``save_pretrained`` writes weights and configs only (the
package registers its classes with the Auto classes, so an installed package loads any folder), while
:func:`save_for_hub` copies every file of the remote-code folder (``modeling_bridge_stg/``, imported as
``bridge_stg``: all of its ``.py`` files but ``__init__.py``) next to the weights and writes ``auto_map``
(AutoConfig, AutoModel, AutoProcessor) and ``custom_pipelines`` into the configs.

This module is a helper of the installed package, not remote code: it is never copied into a checkpoint
(it reads the card templates from the package data ``bridge_stg.model_cards``).
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from transformers.pipelines import PIPELINE_REGISTRY

import bridge_stg
from bridge_stg.errors_bridge_stg import MissingAssetError
from bridge_stg.pipeline_video_grounding import VideoGroundingPipeline

TASK = "video-grounding"
#: the remote-code folder: the ``bridge_stg`` package directory itself (``modeling_bridge_stg/`` in the repository)
REMOTE_CODE_DIR = Path(bridge_stg.__file__).resolve().parent
#: every file a checkpoint folder carries as code (the package's flat remote-code files)
REMOTE_CODE_FILES = tuple(sorted(p.name for p in REMOTE_CODE_DIR.glob("*.py") if p.name != "__init__.py"))
#: ``auto_map`` entries written at export: Auto class -> ``module.Class`` inside the folder
AUTO_MAP = {
    "AutoConfig": "configuration_bridge_stg.BridgeSTGConfig",
    "AutoModel": "modeling_bridge_stg.BridgeSTGForVideoGrounding",
}
PROCESSOR_AUTO_MAP = {"AutoProcessor": "processing_bridge_stg.BridgeSTGProcessor"}
MODEL_CARD_TEMPLATES = ("template", "demo_checkpoint")
METRIC_COLUMNS = ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5")
_FIELD = re.compile(r"\{\{(\w+)\}\}")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# --------------------------------------------------------------------------------------------- card text
def model_card_template(name: str = "template") -> str:
    """Text of a model card template of ``model_cards/`` (package data ``bridge_stg.model_cards``).

    Args:
        name: ``"template"`` (any checkpoint) or ``"demo_checkpoint"`` (the tiny synthetic-data demo).
    """
    if name not in MODEL_CARD_TEMPLATES:
        raise ValueError(f"model card template: expected one of {MODEL_CARD_TEMPLATES}, got {name!r}")
    res = importlib.resources.files("bridge_stg.model_cards").joinpath(f"{name}.md")
    if not res.is_file():
        raise MissingAssetError(f"model card template {name}.md is missing from bridge_stg.model_cards; reinstall bridge-stg")
    return res.read_text(encoding="utf-8")


def fill_template(template: str, values: Mapping[str, str]) -> str:
    """Replace every ``{{name}}`` of ``template``; raise ``ValueError`` naming any field without a value."""
    missing = sorted({m for m in _FIELD.findall(template) if m not in values})
    if missing:
        raise ValueError(f"model card: no value for the template fields {missing}")
    return _FIELD.sub(lambda m: str(values[m.group(1)]), template)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100.0 * float(value):.2f}"


def load_metrics(metrics: Any) -> list[tuple[str | None, dict[str, Any]]]:
    """Normalise the output of ``bridge-stg evaluate --json`` to ``[(dataset name or None, result), ...]``.

    Accepts a path to that JSON, one result dict (``{"protocol", "protocol_params", "all", ...}``), a list of
    them, or a dict ``{dataset name: result}``. A result may carry ``"dataset"`` (its data set's name) and
    ``"sampling"`` (``{"fps", "max_frames"}`` when the evaluation sampled differently from the processor).
    """
    if metrics is None:
        return []
    source = metrics
    if isinstance(metrics, (str, os.PathLike)):
        path = Path(metrics)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: metrics file not found")
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
    if isinstance(metrics, Mapping) and "protocol" in metrics:
        items: list[tuple[str | None, Any]] = [(None, metrics)]
    elif isinstance(metrics, Mapping):
        items = [(str(k), v) for k, v in metrics.items()]
    elif isinstance(metrics, Sequence) and not isinstance(metrics, (str, bytes)):
        items = [(None, v) for v in metrics]
    else:
        raise ValueError(f"metrics: expected the JSON of `bridge-stg evaluate --json`, got {type(metrics).__name__}")
    out = []
    for name, res in items:
        if not isinstance(res, Mapping) or "protocol" not in res or "all" not in res:
            raise ValueError(
                f"metrics ({source if isinstance(source, (str, os.PathLike)) else 'given'}): entry {name or len(out)} "
                "is not a `bridge-stg evaluate --json` result (needs 'protocol' and 'all')"
            )
        out.append((name or res.get("dataset"), dict(res)))
    return out


def _evaluation_section(
    results: list[tuple[str | None, dict[str, Any]]], sampling: dict[str, Any], default_dataset: str | None
) -> tuple[str, list[Any]]:
    """Markdown table (+ notes) of the metrics and the ``EvalResult`` list of the model-index."""
    from huggingface_hub import EvalResult

    if not results:
        return ("No evaluation results were supplied with this checkpoint (`save_for_hub(..., metrics=None)`).", [])
    header = (
        "| data set | protocol | protocol parameters | frames given to the model | group | queries | "
        + " | ".join(METRIC_COLUMNS) + " |"
    )
    lines = [header, "|" + "---|" * (6 + len(METRIC_COLUMNS))]
    evals = []
    for name, res in results:
        dataset = name or default_dataset
        if not dataset:
            raise ValueError(
                "metrics: name the evaluation data set (a 'dataset' key in the metrics JSON, a dict "
                "{dataset: result}, or card_kwargs['eval_dataset'])"
            )
        samp = {**sampling, **(res.get("sampling") or {})}
        frames = f"{float(samp['fps']):g} fps, ≤ {int(samp['max_frames'])} frames"
        params = ", ".join(f"{k}={v}" for k, v in (res.get("protocol_params") or {}).items()) or "–"
        for group in ("all", "declarative", "interrogative"):
            row = res.get(group)
            if not isinstance(row, Mapping) or not row.get("num_queries"):
                continue
            cells = [dataset, f"`{res['protocol']}`", params, frames, group, str(int(row["num_queries"]))]
            cells += [_pct(row.get(c)) for c in METRIC_COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
        overall = res["all"]
        slug = re.sub(r"[^a-z0-9]+", "-", dataset.lower()).strip("-") or "dataset"
        for metric in ("m_vIoU", "m_tIoU", "vIoU@0.3", "vIoU@0.5"):
            if overall.get(metric) is not None:
                evals.append(EvalResult(
                    task_type="spatio-temporal-video-grounding", task_name="Spatio-temporal video grounding",
                    dataset_type=slug, dataset_name=dataset, metric_type=metric, metric_name=f"{metric} ({res['protocol']})",
                    metric_value=round(100.0 * float(overall[metric]), 2), metric_config=res["protocol"],
                ))
        if res.get("avg_m_vIoU") is not None:
            lines.append(f"\n{dataset}: average m_vIoU (declarative + interrogative) / 2 = {_pct(res['avg_m_vIoU'])}.")
    lines.append(
        "\nValues are percentages (×100) computed by `bridge-stg evaluate` (exact STVG metrics; vIoU@R uses a "
        "strict `>`). *protocol* says which frames are scored; *frames given to the model* is the sampling of the "
        "processor at evaluation time."
    )
    return "\n".join(lines), evals


def _describe(model: Any, processor: Any) -> dict[str, str]:
    """Card fields read from the config and the processor (never typed in)."""
    cfg = model.config
    mllm = cfg.mllm_config
    text, vision = mllm.get_text_config(), mllm.vision_config
    families = {"qwen2_5_vl": "Qwen2.5-VL", "qwen3_vl": "Qwen3-VL"}
    vp = processor.video_processor
    n = model.num_parameters()
    size = f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} K"
    span = {
        "text": '`text`: the MLLM writes "From A s to B s." and the span is parsed from it',
        "frame": "`frame`: per-frame start/end logits on the frame-aligned LLM states",
    }[cfg.span_source]
    return {
        "backbone_family": families.get(mllm.model_type, mllm.model_type),
        "llm": (f"{text.num_hidden_layers} layers, hidden size {text.hidden_size}, {text.num_attention_heads} heads "
                f"({getattr(text, 'num_key_value_heads', text.num_attention_heads)} KV), vocabulary {text.vocab_size}"),
        "vision": (f"depth {vision.depth}, hidden size {vision.hidden_size}, patch {vision.patch_size}, "
                   f"spatial merge {vision.spatial_merge_size}, temporal patch {vision.temporal_patch_size}"),
        "bridge": (f"{cfg.num_bridge_queries} bridge tokens, last {cfg.bridge_num_layers} LLM layers fused, "
                   f"explicit temporal alignment {'on' if cfg.eta else 'off'}"),
        "decoder": (f"{cfg.decoder_layers} layers, width {cfg.decoder_hidden_size}, {cfg.decoder_heads} heads, "
                    f"FFN {cfg.decoder_ffn_dim}, box head `{cfg.box_head}`"
                    + (f" (readout `{cfg.reference_readout}`)" if cfg.box_head == "reference_point" else "")
                    + f", visual memory `{cfg.visual_memory}`"),
        "span_source": span,
        "num_parameters": size,
        "sampling": (f"{processor.sample_fps:g} fps (the frame shown at every 1/{processor.sample_fps:g} s), at most "
                     f"{processor.max_frames} frames (uniform over the video beyond that), at least "
                     f"{processor.min_frames}; {vp.min_pixels}–{vp.max_pixels} pixels per frame, at most "
                     f"{vp.max_video_tokens} merged visual tokens per clip"),
        "sampling_short": f"{processor.sample_fps:g} fps, at most {processor.max_frames} frames",
    }


def _base_model(model: Any, card_kwargs: Mapping[str, Any]) -> str | None:
    if card_kwargs.get("base_model"):
        return str(card_kwargs["base_model"])
    name = getattr(model.config.mllm_config, "_name_or_path", "") or ""
    return name if _HUB_ID.match(name) and not os.path.exists(name) else None


def files_text(code_files: Sequence[str]) -> str:
    """The card's list of the folder's files: with the code it carries, or saying that it carries none."""
    if code_files:
        return ("`config.json` (with `auto_map` and `custom_pipelines`), `model.safetensors`, `processor_config.json` and "
                "the tokenizer files, and the code: " + ", ".join(f"`{f}`" for f in code_files) + ".")
    return ("`config.json`, `model.safetensors`, `processor_config.json` and the tokenizer files. This folder carries no "
            "code: load it with the `bridge-stg` package installed, or export a self-contained folder (code, "
            "`auto_map`, pipeline registration) with `bridge_stg.model_cards.hub.save_for_hub`.")


def build_model_card(
    model: Any,
    processor: Any,
    out_dir: str | os.PathLike,
    metrics: Any = None,
    card_kwargs: Mapping[str, Any] | None = None,
    code_files: Sequence[str] = REMOTE_CODE_FILES,
) -> str:
    """The README.md text of a checkpoint folder (template of ``model_cards/`` filled from config + metrics).

    ``code_files``: the code the folder carries (``()`` for a folder without code, such as the demo checkpoint
    shipped inside the package); the card's list of files says which.
    """
    from huggingface_hub import ModelCardData

    kw = dict(card_kwargs or {})
    template_name = kw.pop("template", "template")
    known = {"model_name", "model_id", "summary", "training_data", "training_procedure", "limitations", "license",
             "base_model", "datasets", "tags", "eval_dataset"}
    unknown = sorted(set(kw) - known)
    if unknown:
        raise ValueError(f"card_kwargs: unknown keys {unknown}; known: {sorted(known | {'template'})}")
    folder = Path(out_dir).resolve().name
    info = _describe(model, processor)
    base = _base_model(model, kw)
    sampling = {"fps": processor.sample_fps, "max_frames": processor.max_frames}
    results = load_metrics(metrics)
    evaluation, evals = _evaluation_section(results, sampling, kw.get("eval_dataset"))
    model_name = str(kw.get("model_name") or folder)
    tags = ["bridge-stg", "video-grounding", "spatio-temporal-video-grounding"] + (["custom_code"] if code_files else [])
    tags += [t for t in kw.get("tags") or [] if t not in tags]
    if template_name == "demo_checkpoint" and "synthetic-data" not in tags:
        tags.append("synthetic-data")
    data = ModelCardData(
        license=kw.get("license", "apache-2.0"), library_name="transformers", base_model=base, tags=tags,
        datasets=list(kw["datasets"]) if kw.get("datasets") else None, model_name=model_name,
        eval_results=evals or None,
    )
    default_training = (
        "Synthetic clips rendered by `bridge_stg.processing.synthetic` (`bridge-stg synth`): coloured geometric "
        "shapes moving over a generated background, exact boxes, templated queries. No real video."
        if template_name == "demo_checkpoint" else
        "**Not documented.** The uploader did not describe the training data "
        "(`save_for_hub(..., card_kwargs={'training_data': ...})`)."
    )
    limitations = kw.get("limitations") or []
    if isinstance(limitations, str):
        limitations = [limitations]
    source = metrics if isinstance(metrics, (str, os.PathLike)) else None
    values = {
        **info,
        "front_matter": f"---\n{data.to_yaml()}\n---",
        "model_name": model_name,
        "model_id": str(kw.get("model_id") or folder),
        "summary": str(kw.get("summary") or (
            f"A Bridge-STG spatio-temporal video grounding model on a {info['backbone_family']} backbone.")),
        "backbone": (f"`{model.config.mllm_config.model_type}` ({info['backbone_family']} architecture); base weights: "
                     + (f"[{base}](https://huggingface.co/{base})" if base else "not stated")),
        "training_data": str(kw.get("training_data") or default_training),
        "limitations_extra": "\n".join(f"- {item}" for item in limitations),
        "evaluation": evaluation,
        "training_procedure": str(kw.get("training_procedure") or "**Not documented.** The uploader did not describe "
                                  "how the model was trained (`card_kwargs={'training_procedure': ...}`)."),
        "files": files_text(code_files),
        "card_source": (f" and `{Path(source).name}`" if source else " and the supplied metrics" if results else ""),
    }
    return fill_template(model_card_template(template_name), values)


# --------------------------------------------------------------------------------------------- saving
def _pipeline_registration() -> dict[str, Any]:
    """``custom_pipelines`` entry of config.json, as ``Pipeline.save_pretrained`` writes it."""
    info = PIPELINE_REGISTRY.supported_tasks.get(TASK)
    if info is None or info["impl"] is not VideoGroundingPipeline:
        raise RuntimeError(f"the {TASK!r} pipeline is not registered to VideoGroundingPipeline (import bridge_stg)")
    entry = {"impl": f"{VideoGroundingPipeline.__module__.split('.')[-1]}.{VideoGroundingPipeline.__name__}",
             "pt": [c.__name__ for c in info["pt"]]}
    if "type" in info:
        entry["type"] = info["type"]
    return {TASK: entry}


def _update_json(path: Path, **entries: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(entries)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_remote_code(out_dir: str | os.PathLike) -> list[str]:
    """Make a saved checkpoint folder self-contained: copy the remote-code files next to the weights and write
    ``auto_map`` / ``custom_pipelines`` into ``config.json`` and ``auto_map`` into ``processor_config.json``.
    Returns the names of the code files."""
    out = Path(out_dir)
    for name in REMOTE_CODE_FILES:
        shutil.copyfile(REMOTE_CODE_DIR / name, out / name)
    _update_json(out / "config.json", auto_map=dict(AUTO_MAP), custom_pipelines=_pipeline_registration())
    _update_json(out / "processor_config.json", auto_map=dict(PROCESSOR_AUTO_MAP))
    return list(REMOTE_CODE_FILES)


def _check_compatible(model: Any, processor: Any) -> None:
    cfg = model.config
    if cfg.mllm_config is None:
        raise ValueError("model: config.mllm_config is not set")
    if list(cfg.bridge_token_ids or []) != list(processor.bridge_token_ids):
        raise ValueError(
            f"model/processor mismatch: config.bridge_token_ids={cfg.bridge_token_ids} but the processor's tokenizer "
            f"has {processor.bridge_token_ids}"
        )
    vocab = int(cfg.mllm_config.get_text_config().vocab_size)
    if len(processor.tokenizer) > vocab:
        raise ValueError(f"model/processor mismatch: the tokenizer has {len(processor.tokenizer)} tokens, the model {vocab}")
    if processor.span_source != cfg.span_source:
        raise ValueError(f"model/processor mismatch: span_source {cfg.span_source!r} vs {processor.span_source!r}")
    if getattr(processor, "query_position", "before_video") != cfg.query_position:
        raise ValueError(f"model/processor mismatch: query_position {cfg.query_position!r} vs {processor.query_position!r}")


def verify_checkpoint_folder(out_dir: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming what a checkpoint folder lacks to load with ``trust_remote_code=True``."""
    out = Path(out_dir)
    problems = []
    for name in ("config.json", "processor_config.json", "README.md", *REMOTE_CODE_FILES):
        if not (out / name).is_file():
            problems.append(f"missing {name}")
    if not any(out.glob("*.safetensors")):
        problems.append("no .safetensors weights")
    if not ((out / "tokenizer.json").is_file() or (out / "tokenizer_config.json").is_file()):
        problems.append("no tokenizer files")
    if (out / "config.json").is_file():
        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
        auto_map = config.get("auto_map") or {}
        for key in ("AutoConfig", "AutoModel"):
            if key not in auto_map:
                problems.append(f"config.json auto_map has no {key}")
        if TASK not in (config.get("custom_pipelines") or {}):
            problems.append(f"config.json has no custom_pipelines[{TASK!r}]")
    if (out / "processor_config.json").is_file():
        pconf = json.loads((out / "processor_config.json").read_text(encoding="utf-8"))
        if "AutoProcessor" not in (pconf.get("auto_map") or {}):
            problems.append("processor_config.json auto_map has no AutoProcessor")
    if problems:
        raise ValueError(f"{out}: not a complete Bridge-STG checkpoint folder: {'; '.join(problems)}")


def save_for_hub(
    model: Any,
    processor: Any,
    out_dir: str | os.PathLike,
    metrics: Any = None,
    card_kwargs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> str:
    """Write a complete, publishable checkpoint folder.

    Writes the weights (safetensors), ``config.json`` and the processor (``processor_config.json``, tokenizer
    files: ``Pipeline.save_pretrained`` would not save it); the remote-code files with ``auto_map`` (AutoConfig,
    AutoModel, AutoProcessor) and ``custom_pipelines`` (``video-grounding``), see :func:`write_remote_code`; and
    ``README.md``, the model card filled from the config and ``metrics``. The folder is written under a temporary
    name beside ``out_dir`` and moved into place at the end, then checked.

    Args:
        model: a `BridgeSTGForVideoGrounding`.
        processor: its `BridgeSTGProcessor` (same bridge tokens and span source).
        out_dir: the folder to write; must be empty or absent unless ``overwrite``.
        metrics: the metrics JSON of ``bridge-stg evaluate --json`` (path, dict, list or ``{dataset: result}``).
        card_kwargs: text of the card: ``model_name``, ``model_id``, ``summary``, ``training_data``,
            ``training_procedure``, ``limitations``, ``license``, ``base_model``, ``datasets``, ``tags``,
            ``eval_dataset``, and ``template`` (``"template"`` or ``"demo_checkpoint"``).
        overwrite: allow writing into a non-empty folder (files of the same names are replaced, others kept).

    Returns:
        The folder path, ready for ``huggingface_hub.upload_folder(repo_id=..., folder_path=out_dir)``.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: folder is not empty (pass overwrite=True to write into it)")
    _check_compatible(model, processor)
    # render the card first: a bad metrics file or card field fails before anything is written
    card = build_model_card(model, processor, out, metrics=metrics, card_kwargs=card_kwargs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        write_remote_code(tmp)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        verify_checkpoint_folder(tmp)
        out.mkdir(exist_ok=True)
        for item in tmp.iterdir():
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


__all__ = [
    "save_for_hub", "write_remote_code", "build_model_card", "model_card_template", "verify_checkpoint_folder",
    "load_metrics", "fill_template", "REMOTE_CODE_FILES",
]
