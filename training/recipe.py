"""The library side of ``bridge-stg train``: its arguments, the model / data it builds, and the training run.

``bridge-stg train`` (:mod:`bridge_stg.commands.train`) parses a recipe file plus command-line overrides into
:class:`ModelArguments`, :class:`DataArguments`, ``transformers.TrainingArguments`` and :class:`RunArguments`
and calls :func:`run`, which builds the model and processor (:func:`build_model_and_processor`), the data
(``datasets`` splits in the canonical schema + :class:`~bridge_stg.processing.collator.BridgeSTGDataCollator`),
trains with :class:`~bridge_stg.training.trainer.BridgeSTGTrainer` and writes a Hub-ready checkpoint folder
(:func:`bridge_stg.model_cards.hub.save_for_hub`). The same functions serve Python users who build their own run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from bridge_stg.errors_bridge_stg import BridgeSTGError, MissingDependencyError

PROG = "bridge-stg train"
#: the training targets the collator emits (Trainer's ``label_names``)
LABEL_NAMES = ["labels", "frame_labels", "target_boxes", "target_box_mask"]
TINY_BACKBONES = ("qwen2_5_vl", "qwen3_vl")


class RecipeError(BridgeSTGError):
    """A recipe file or a command-line option of ``bridge-stg train`` is invalid."""


#: what the ``[train]`` extra installs, by what needs it
TRAIN_DEPENDENCIES = {"accelerate": "transformers.Trainer", "peft": "--lora", "trl": "--method grpo"}


def check_train_dependencies(lora: bool = False, grpo: bool = False) -> None:
    """Raise :class:`MissingDependencyError` naming the ``[train]`` extra when a package training needs is missing:
    ``accelerate`` always (``transformers.Trainer`` and ``TrainingArguments`` need it), ``peft`` with ``lora``, ``trl``
    with ``grpo``."""
    needed = ["accelerate"] + (["peft"] if lora else []) + (["trl"] if grpo else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        why = ", ".join(f"{name} (for {TRAIN_DEPENDENCIES[name]})" for name in missing)
        raise MissingDependencyError(f"training needs {why}: install the [train] extra, pip install \"bridge-stg[train]\" "
                                     "(from a clone: pip install -e \".[train]\")")


@dataclass
class ModelArguments:
    """Where the model comes from and how it is trained (besides ``TrainingArguments``)."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "an existing Bridge-STG checkpoint folder or Hub id (continue training it)"})
    mllm: str | None = field(default=None, metadata={
        "help": "a Qwen2.5-VL / Qwen3-VL checkpoint (Hub id or local folder): start from it with a fresh bridge "
                "and spatial decoder"})
    tiny_backbone: str | None = field(default=None, metadata={
        "help": "'qwen2_5_vl' or 'qwen3_vl': a tiny randomly initialised backbone with the compact tokenizer "
                "(CPU smoke runs and tests; the real classes and code paths)"})
    config_overrides: str | None = field(default=None, metadata={
        "help": "BridgeSTGConfig fields as a JSON object (in a YAML recipe: a mapping), e.g. "
                "'{\"num_bridge_queries\": 8, \"decoder_layers\": 6}'"})
    dtype: str = field(default="auto", metadata={
        "help": "dtype of the loaded weights: auto, float32, bfloat16 or float16 (mixed precision itself is "
                "TrainingArguments' --bf16)"})
    attn_implementation: str | None = field(default=None, metadata={
        "help": "attention kernel of the MLLM (e.g. sdpa, flash_attention_2)"})
    freeze_vision: bool = field(default=True, metadata={"help": "freeze the vision encoder and merger"})
    lora: bool = field(default=False, metadata={
        "help": "LoRA on the LLM's q/k/v/o/gate/up/down (PEFT); bridge, decoder and heads trained in full"})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=128, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    merge_lora: bool = field(default=True, metadata={
        "help": "merge the LoRA adapters into the saved checkpoint (else the final folder holds the PEFT adapter)"})
    mllm_learning_rate: float | None = field(default=None, metadata={
        "help": "learning rate of the MLLM (LoRA adapters included); default: --learning_rate"})
    head_learning_rate: float | None = field(default=None, metadata={
        "help": "learning rate of the bridge, decoder and heads; default: --learning_rate"})
    upcast_trainable: bool = field(default=True, metadata={
        "help": "keep the trainable parameters in float32 when the weights load in bf16/fp16 (AdamW on 16-bit "
                "weights loses small updates; --bf16 still computes in bf16). Not applied under DeepSpeed or FSDP, "
                "which keep their own fp32 master copy"})


@dataclass
class DataArguments:
    """The dataset (canonical schema) and its video decoding."""

    dataset: str | None = field(default=None, metadata={
        "help": "dataset folder (bridge-stg convert / synth) or Hub id, loaded with datasets.load_dataset"})
    dataset_config: str | None = field(default=None, metadata={"help": "dataset configuration name"})
    train_split: str = field(default="train", metadata={"help": "split to train on"})
    eval_split: str | None = field(default=None, metadata={
        "help": "split to evaluate on (grounding + the exact metric at each evaluation and at the end)"})
    video_root: str | None = field(default=None, metadata={
        "help": "folder the 'video' column is relative to (default: the dataset folder when it is local)"})
    max_train_samples: int | None = field(default=None, metadata={"help": "use the first N training rows"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "use the first N evaluation rows"})
    sample_fps: float | None = field(default=None, metadata={"help": "frame sampling rate (default: the processor's)"})
    max_frames: int | None = field(default=None, metadata={"help": "sampled frames per clip at most (default: the processor's)"})
    min_frames: int | None = field(default=None, metadata={"help": "sampled frames per clip at least (default: the processor's)"})
    eval_protocol: str | None = field(default=None, metadata={
        "help": "metric protocol: tubedetr, sampled, dense or hcstvg (default: tubedetr when the rows allow it)"})
    eval_metrics: bool = field(default=True, metadata={
        "help": "evaluate by grounding + the metric (False: the teacher-forced losses only)"})
    task_mix: str | None = field(default=None, metadata={
        "help": "multi-task training (docs/multitask.md): rows of each task in every per-device batch, e.g. "
                "'stvg=2,tvg=1,rec=1' (summing to per_device_train_batch_size; the first task's rows set the epoch). "
                "One forward per task, losses logged per task (loss/<task>, <component>/<task>), tvg / rec rows of "
                "the eval split scored per task"})
    task_loss_weights: str | None = field(default=None, metadata={
        "help": "with task_mix: the weight of each task's loss, e.g. 'tvg=0.5,rec=0.5' (default 1 each)"})


#: what ``bridge-stg train`` trains with (``--method``)
METHODS = ("supervised", "grpo")


@dataclass
class RunArguments:
    """The training method and checks of a run."""

    method: str = field(default="supervised", metadata={
        "help": "supervised: the Bridge-STG losses with BridgeSTGTrainer; grpo: reinforcement fine-tuning of the MLLM's span "
                "answer with TRL's GRPOTrainer (its options: bridge-stg train --method grpo --help)"})
    dry_run: bool = field(default=False, metadata={
        "help": "build model + data, run one forward pass on one batch, print a JSON summary, do not train"})
    audit: bool = field(default=False, metadata={
        "help": "write OUTPUT_DIR/audit/: per rank, the query ids of every training batch and a digest of the "
                "final weights (checks data sharding and replica consistency in distributed runs)"})
    overwrite: bool = field(default=False, metadata={
        "help": "write into --output_dir even when it is a non-empty folder that bridge-stg train did not write (files of "
                "the same names are replaced, others kept); a folder of an earlier run is always continued"})


def load_recipe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML / JSON recipe: a flat mapping of option names to values (``config_overrides`` may be a mapping)."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"{p}: recipe file not found")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # yaml.YAMLError / json.JSONDecodeError
        raise RecipeError(f"{p}: not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'} ({err})") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{p}: a recipe must be a mapping of option names to values, got {type(data).__name__}")
    return data


def parse_config_overrides(text: str | None, option: str = "config_overrides") -> dict[str, Any]:
    """The ``BridgeSTGConfig`` fields of a JSON object (``'{"num_bridge_queries": 8}'``); empty for ``None`` or ``""``.

    Raises :class:`RecipeError` naming ``option`` for text that is not a JSON object and for keys that are not settable
    config fields (``mllm_config``, ``bridge_token_ids`` and ``model_type`` come from the backbone, never from here).
    The values are checked by the config itself when it is built."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise RecipeError(f"{option}: not a JSON object ({err})") from err
    if not isinstance(value, dict):
        raise RecipeError(f"{option}: expected a JSON object, got {type(value).__name__}")
    from bridge_stg import BridgeSTGConfig

    fields = set(BridgeSTGConfig().to_dict())
    bad = sorted(k for k in value if k not in fields or k in ("mllm_config", "bridge_token_ids", "model_type"))
    if bad:
        raise RecipeError(f"{option}: not settable BridgeSTGConfig fields: {bad}")
    return value


def check_arguments(model_args: ModelArguments, data_args: DataArguments, training_args: Any, run_args: RunArguments) -> None:
    """Raise :class:`RecipeError` naming the option for any inconsistent combination of arguments."""
    if run_args.method not in METHODS:
        raise RecipeError(f"method: must be one of {METHODS}, got {run_args.method!r}")
    sources = [n for n in ("model_name_or_path", "mllm", "tiny_backbone") if getattr(model_args, n)]
    if len(sources) != 1:
        raise RecipeError(f"give exactly one of --model_name_or_path, --mllm, --tiny_backbone (got {sources or 'none'})")
    if model_args.tiny_backbone and model_args.tiny_backbone not in TINY_BACKBONES:
        raise RecipeError(f"tiny_backbone: must be one of {TINY_BACKBONES}, got {model_args.tiny_backbone!r}")
    if model_args.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise RecipeError(f"dtype: must be auto, float32, bfloat16 or float16, got {model_args.dtype!r}")
    if not data_args.dataset:
        raise RecipeError("dataset: required (a dataset folder or Hub id in the canonical schema)")
    if not training_args.output_dir:
        raise RecipeError("output_dir: required (the final checkpoint folder)")
    if model_args.lora and model_args.merge_lora and (training_args.fsdp or _zero_stage(training_args) == 3):
        raise RecipeError("merge_lora with FSDP / ZeRO-3: the sharded adapters cannot be merged in the run; "
                          "set merge_lora false (the adapter is saved) or use DDP / ZeRO-2")
    if training_args.eval_strategy != "no" and not data_args.eval_split:
        raise RecipeError(f"eval_strategy={training_args.eval_strategy}: needs --eval_split")
    parse_config_overrides(model_args.config_overrides)
    if run_args.method == "grpo":
        from .grpo_recipe import check_grpo_arguments  # imports trl

        check_grpo_arguments(model_args, data_args, training_args, run_args)
    from .multitask import check_task_options

    check_task_options(data_args, training_args)


def _zero_stage(training_args: Any) -> int | None:
    ds = training_args.deepspeed
    if not ds:
        return None
    if isinstance(ds, str):
        try:
            ds = json.loads(Path(ds).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
    return (ds.get("zero_optimization") or {}).get("stage")


# ------------------------------------------------------------------------------------------------ building
def _dtype(name: str) -> Any:
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def build_model_and_processor(model_args: ModelArguments) -> tuple[Any, Any]:
    """The model and its processor, from a Bridge-STG checkpoint, a Qwen-VL checkpoint or a tiny backbone."""
    from bridge_stg import BridgeSTGConfig, BridgeSTGForVideoGrounding, BridgeSTGProcessor

    overrides = parse_config_overrides(model_args.config_overrides)
    load_kwargs: dict[str, Any] = {"dtype": _dtype(model_args.dtype)}
    if model_args.attn_implementation:
        load_kwargs["attn_implementation"] = model_args.attn_implementation
    if model_args.model_name_or_path:
        model = BridgeSTGForVideoGrounding.from_pretrained(model_args.model_name_or_path, **load_kwargs, **overrides)
        processor = BridgeSTGProcessor.from_pretrained(model_args.model_name_or_path)
        if overrides:  # sampling / span settings of the processor follow the (overridden) config
            processor = BridgeSTGProcessor.from_model_config(model.config, processor.tokenizer)
        return model, processor
    if model_args.mllm:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_args.mllm)
        k = int(overrides.get("num_bridge_queries", BridgeSTGConfig().num_bridge_queries))
        ids = BridgeSTGProcessor(tokenizer=tokenizer, num_bridge_queries=k).bridge_token_ids  # adds <bridge_i>
        model = BridgeSTGForVideoGrounding.from_mllm_pretrained(
            model_args.mllm, bridge_token_ids=ids, vocab_size=len(tokenizer), mllm_kwargs=load_kwargs, **overrides)
        return model, BridgeSTGProcessor.from_model_config(model.config, tokenizer)
    from bridge_stg.training.tiny import tiny_bridge_kwargs, tiny_mllm_config
    from bridge_stg.processing.tokenizer import bridge_token_ids, build_compact_tokenizer

    kwargs = tiny_bridge_kwargs(**overrides)
    k = int(kwargs["num_bridge_queries"])
    tokenizer = build_compact_tokenizer(num_bridge_queries=k)
    config = BridgeSTGConfig(mllm_config=tiny_mllm_config(model_args.tiny_backbone, tokenizer),
                             bridge_token_ids=bridge_token_ids(tokenizer, k), **kwargs)
    model = BridgeSTGForVideoGrounding(config)
    if model_args.dtype not in ("auto", "float32"):
        model.to(_dtype(model_args.dtype))
    return model, BridgeSTGProcessor.from_model_config(config, tokenizer)


def load_split(data_args: DataArguments, split: str, limit: int | None) -> Any:
    """One split of the dataset (``datasets.Dataset``), optionally its first ``limit`` rows."""
    from datasets import load_dataset

    try:
        ds = load_dataset(data_args.dataset, data_args.dataset_config, split=split)
    except ValueError as err:
        raise RecipeError(f"{data_args.dataset}: cannot load split {split!r} ({err})") from err
    if limit is not None:
        if limit < 1:
            raise RecipeError(f"max samples for split {split!r}: must be >= 1, got {limit}")
        ds = ds.select(range(min(limit, len(ds))))
    if len(ds) == 0:
        raise RecipeError(f"{data_args.dataset}: split {split!r} has no rows")
    return ds


def video_root(data_args: DataArguments) -> str | None:
    if data_args.video_root:
        return data_args.video_root
    return data_args.dataset if os.path.isdir(data_args.dataset) else None


class AuditingCollator:
    """Wraps a collator; appends the query ids of every batch it builds to ``path`` (one JSON list per line)."""

    def __init__(self, collator: Any, path: str | os.PathLike[str]) -> None:
        self.collator = collator
        self.path = str(path)

    def __getattr__(self, name: str) -> Any:  # set_epoch etc.
        return getattr(self.collator, name)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> Any:
        batch = self.collator(rows)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps([str(r.get("query_id")) for r in rows]) + "\n")
        return batch


def state_digest(model: Any) -> str:
    """SHA-256 over the model's state dict (names, dtypes, shapes, bytes), in name order."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def upcast_trainable_parameters(model: Any) -> int:
    """Cast every trainable bf16/fp16 parameter to float32 in place; return how many elements were cast."""
    import torch

    n = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16):
            p.data = p.data.float()
            n += p.numel()
    return n


def _count(model: Any) -> tuple[int, int]:
    seen, total, trainable = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return total, trainable


# ------------------------------------------------------------------------------------------------ run
def run(model_args: ModelArguments, data_args: DataArguments, training_args: Any, run_args: RunArguments) -> dict[str, Any]:
    """Build, train (unless ``dry_run``), evaluate and save; return the run summary. ``--method grpo`` runs
    :func:`bridge_stg.training.grpo_recipe.run_grpo` (``training_args`` is then its ``BridgeSTGGRPOConfig``)."""
    if run_args.method == "grpo":
        from .grpo_recipe import run_grpo

        return run_grpo(model_args, data_args, training_args, run_args)
    import torch
    from transformers import set_seed
    from transformers.utils import logging

    from bridge_stg.model_cards.hub import save_for_hub
    from bridge_stg.processing.collator import BridgeSTGDataCollator
    from bridge_stg.processing.paths import write_text_atomic
    from .lora import apply_lora, freeze_vision_encoder
    from .predict import make_compute_metrics
    from .trainer import COMPONENT_LOSSES, BridgeSTGTrainer, unwrap_bridge_model

    logger = logging.get_logger("bridge_stg.train")
    set_seed(training_args.seed)
    model, processor = build_model_and_processor(model_args)
    if model_args.lora:
        model = apply_lora(model, r=model_args.lora_r, alpha=model_args.lora_alpha, dropout=model_args.lora_dropout,
                           freeze_vision=model_args.freeze_vision)
        if training_args.activation_checkpointing or training_args.gradient_checkpointing:
            model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
    elif model_args.freeze_vision:
        freeze_vision_encoder(model)
    if model_args.upcast_trainable and not training_args.deepspeed and not training_args.fsdp:
        upcast = upcast_trainable_parameters(model)
        if upcast:
            logger.warning(f"{PROG}: {upcast / 1e6:.2f} M trainable parameters kept in float32 (the rest stays 16-bit)")
    total, trainable = _count(model)
    logger.warning(f"{PROG}: {total / 1e6:.2f} M parameters, {trainable / 1e6:.2f} M trainable")

    sampling = {"sample_fps": data_args.sample_fps, "max_frames": data_args.max_frames, "min_frames": data_args.min_frames}
    root = video_root(data_args)
    train_ds = load_split(data_args, data_args.train_split, data_args.max_train_samples)
    collator: Any = BridgeSTGDataCollator(processor, root, training=True, seed=training_args.seed, **sampling)
    eval_ds, eval_collator, compute_metrics = None, None, None
    if data_args.eval_split:
        eval_ds = load_split(data_args, data_args.eval_split, data_args.max_eval_samples)
        if data_args.eval_metrics:
            stvg = eval_ds.filter(lambda r: r.get("task", "stvg") == "stvg")
            if len(stvg) != len(eval_ds):
                logger.warning(f"{PROG}: evaluation scores the {len(stvg)} stvg rows of {len(eval_ds)} "
                               f"({len(eval_ds) - len(stvg)} tvg/rec rows are not scored by the STVG metric"
                               + ("; task_mix scores them per task)" if data_args.task_mix else ")"))
            eval_ds = stvg
            eval_collator = BridgeSTGDataCollator(processor, root, training=False, **sampling)
            compute_metrics = make_compute_metrics(processor, list(eval_ds), protocol=data_args.eval_protocol)
    summary: dict[str, Any] = {
        "parameters": total, "trainable_parameters": trainable, "train_rows": len(train_ds),
        "eval_rows": None if eval_ds is None else len(eval_ds), "output_dir": training_args.output_dir,
        "world_size": training_args.world_size,
    }

    if run_args.dry_run:
        batch = collator([train_ds[i] for i in range(min(training_args.per_device_train_batch_size, len(train_ds)))])
        device = training_args.device
        tensors = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        half = torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else None
        model.to(device)
        with torch.no_grad(), torch.autocast(device.type, dtype=half or torch.float32, enabled=half is not None):
            out = model(**tensors)
        summary["batch"] = {k: list(v.shape) for k, v in tensors.items()}
        summary["losses"] = {k: round(float(getattr(out, k)), 6) for k in ("loss", *COMPONENT_LOSSES)
                             if isinstance(getattr(out, k, None), torch.Tensor)}
        summary["dry_run"] = True
        return summary

    trainer_cls: Any = BridgeSTGTrainer
    trainer_kwargs: dict[str, Any] = {}
    if data_args.task_mix:  # multi-task: task blocks, one forward per task, per-task logs and evaluation
        from .multitask import multitask_trainer_setup

        collator, eval_collator, trainer_cls, trainer_kwargs = multitask_trainer_setup(
            data_args, training_args, train_ds, collator, eval_collator, processor, load_split, root, sampling)
        summary["task_mix"] = trainer_kwargs["task_mix"]

    if run_args.audit:
        audit_dir = Path(training_args.output_dir) / "audit"
        audit_dir.mkdir(parents=True, exist_ok=True)
        ids_file = audit_dir / f"query_ids_rank{training_args.process_index}.jsonl"
        ids_file.write_text("")
        collator = AuditingCollator(collator, ids_file)

    trainer = trainer_cls(
        model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds, data_collator=collator,
        eval_data_collator=eval_collator, compute_metrics=compute_metrics, processor=processor,
        mllm_lr=model_args.mllm_learning_rate, head_lr=model_args.head_learning_rate, **trainer_kwargs,
    )
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_metrics("train", result.metrics)
    summary["train"] = result.metrics
    card_metrics = None
    if eval_ds is not None:
        metrics = trainer.evaluate()
        trainer.save_metrics("eval", metrics)
        summary["eval"] = metrics
        if compute_metrics is not None and compute_metrics.last_result is not None:
            card_metrics = dict(compute_metrics.last_result, dataset=f"{data_args.dataset}:{data_args.eval_split}")

    out = Path(training_args.output_dir)
    merge = model_args.lora and model_args.merge_lora
    if not merge:  # a merged LoRA model is written below; an adapter folder next to it would shadow it on load
        trainer.save_model(str(out))  # engine-aware (gathers FSDP / ZeRO-3 shards); safetensors
    trainer.accelerator.wait_for_everyone()
    if run_args.audit:
        digest = state_digest(trainer.model)
        (out / "audit" / f"weights_rank{training_args.process_index}.sha256").write_text(digest + "\n")
    if trainer.is_world_process_zero():
        from bridge_stg import BridgeSTGForVideoGrounding

        if merge:
            final = trainer.model.merge_and_unload()  # the PeftModel -> BridgeSTGForVideoGrounding with merged weights
            # one dtype for the published weights: the backbone's (float32 heads / adapters were upcast for training)
            final.to(final.mllm.get_input_embeddings().weight.dtype)
        elif model_args.lora:
            final = None  # the PEFT adapter written by save_model is the result; the processor goes beside it
            processor.save_pretrained(out)
        else:
            # reload what save_model wrote: the folder is then checked to round-trip before it is published
            final = BridgeSTGForVideoGrounding.from_pretrained(str(out), dtype=next(unwrap_bridge_model(trainer.model).parameters()).dtype)
        if final is not None:
            base = model_args.mllm or model_args.model_name_or_path
            card = {"model_name": out.name, "training_data": data_args.dataset}
            if base and not os.path.isdir(base):
                card["base_model"] = base
            save_for_hub(final, processor, out, metrics=card_metrics, card_kwargs=card, overwrite=True)
            summary["checkpoint"] = str(out)
        # Trainer pickles its arguments next to the weights; a published folder carries them as JSON instead
        write_text_atomic(out / "training_args.json", training_args.to_json_string())
        (out / "training_args.bin").unlink(missing_ok=True)
        write_text_atomic(out / "run_summary.json", json.dumps(summary, indent=1, default=str))
    trainer.accelerator.wait_for_everyone()
    return summary
