"""Training recipe of the shipped demo checkpoint (``bridge-stg demo --train``).

A tiny Bridge-STG (a tiny Qwen2.5-VL-shaped backbone built from config, the real classes and code paths,
a compact tokenizer) is trained from random weights on an endless stream of synthetic STVG clips rendered
in memory (:func:`bridge_stg.processing.synthetic.render_synthetic_clip`), with the per-frame span head
(``span_source="frame"``) and the reference-point box head (docs/method.md §3.15).

Seeds. Every clip comes from ``numpy.random.default_rng([DEMO_SEED_ROOT, stream, seed, index])``. The
training stream (``TRAIN_STREAM``), the held-out validation stream used for the learning curve
(``VALIDATION_STREAM``) and the demo's test stream (``TEST_STREAM``) differ in the second entry, so no
test clip can ever be a training clip, whatever the seeds.

Why a plain loop and not ``transformers.Trainer``: the data is an endless in-memory stream whose batches
are built by the processor in the training process (rendering + processing is 10–20 % of a step, see
``benchmarks/train_throughput.py``), the run is a step budget with a wall-clock cap on a shared 2-core CPU, and
the learning curve is measured with the real
grounding path (``model.ground`` + ``post_process_grounding`` + the exact metric) every few minutes. A
Trainer would need an ``IterableDataset`` + collator + a time-budget callback + a custom evaluation loop
for the same thing, with dataloader worker processes competing for the 2 cores.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from ..configuration_bridge_stg import COMPONENT_LOSSES, REFERENCE_READOUTS, BridgeSTGConfig
from ..errors_bridge_stg import MissingAssetError
from ..modeling_bridge_stg import BridgeSTGForVideoGrounding
from ..processing_bridge_stg import BridgeSTGProcessor
from bridge_stg.processing.synthetic import SyntheticClip, SyntheticSpec
from bridge_stg.processing.synthetic_families import FAMILIES, render_family_clip
from .predict import predict_clips
from .tiny import tiny_bridge_kwargs, tiny_mllm_config
from bridge_stg.processing.tokenizer import bridge_token_ids, build_compact_tokenizer

logger = logging.get_logger(__name__)

#: folder of the shipped checkpoint inside the package (``bridge_stg/demo_checkpoint``)
DEMO_CHECKPOINT_DIR = "demo_checkpoint"
#: first entry of every demo clip seed sequence
DEMO_SEED_ROOT = 20260707
TRAIN_STREAM = 1
VALIDATION_STREAM = 2
TEST_STREAM = 3

#: optimizer steps of the shipped demo checkpoint's recipe (``bridge-stg demo --train`` default)
DEMO_RECIPE_STEPS = 7000
#: wall-clock cap of that recipe in minutes (the shipped run needed 81 minutes of training, 82 of wall clock, at 1
#: thread on a shared 2-core AMD EPYC beside a second run; the same recipe took 115 minutes on an Intel Xeon, also
#: beside a second run: docs/method.md §3.31)
DEMO_RECIPE_MINUTES_CAP = 118.0

#: the synthetic clips of the demo: 112×112, 80 frames at 10 fps (8 s), 2–4 shapes
DEMO_SPEC = SyntheticSpec()
#: the query families of the demo's benchmark (round robin by clip index; docs/benchmark.md)
DEMO_FAMILIES: tuple[str, ...] = FAMILIES
NUM_BRIDGE_QUERIES = 4
#: the method options of the shipped recipe, chosen by measurement on the synthetic benchmark (docs/method.md §3.17):
#: a normalised bridge projection and fan-in initialisation (the query reaches the decoder from step 0), the relevance
#: bias at 0 and the box head's reference-point scores supervised (BCE on the tokens whose cell overlaps the target);
#: the query stays before the video (after it, the recipe's run did not leave the plateau in its appearance phase);
#: the decoder's memory is the LLM's states at the video tokens (with it all three seeds left the plateau in the
#: appearance phase, with vision memory one in three did not: docs/method.md §3.21); at inference the box head reads
#: its attention at the peak (the top token's 3x3 cells), so a box split between look-alikes lands on one of them,
#: while training starts with the mean readout, with which every seed leaves the plateau (docs/method.md §3.23), and
#: switches to the peak for the curriculum's second phase (``DemoTrainingArguments.mix_reference_readout_training``,
#: docs/method.md §3.24); and the query's own words carried to the box head with motion in the memory: motion evidence
#: with its flow statistics, ``loss_query`` on the words that differ between the batch's prompts, and the box head's
#: scores reading the decoder query (with them three seeds scored m_vIoU 0.266-0.280 against 0.223-0.237 for four
#: runs without, and zeroing Q_b costs grounding for the first time: docs/method.md §3.30, §3.31)
DEMO_METHOD_OPTIONS: dict[str, Any] = {
    "bridge_query_norm": True, "decoder_init": "fan_in", "relevance_bias_init": 0.0,
    "reference_supervision": "bce", "loss_reference_weight": 1.0, "visual_memory": "llm", "reference_readout": "peak",
    "reference_readout_training": "mean",
    "motion_evidence": True, "motion_flow": True, "loss_query_weight": 1.0, "loss_query_tokens": "distinct",
    "reference_query_pos": True,
}


def demo_checkpoint_path() -> str:
    """Folder of the tiny demo checkpoint shipped in ``bridge_stg/demo_checkpoint/`` (package data).

    The checkpoint is trained on synthetic shapes only (see its README.md); it is what ``bridge-stg demo``
    scores and what ``bridge-stg ground`` uses without ``--model``.

    Raises:
        MissingAssetError: the folder or its ``config.json`` / weights are missing (a package built without it).
    """
    path = os.fspath(importlib.resources.files("bridge_stg").joinpath(DEMO_CHECKPOINT_DIR))
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise MissingAssetError(
            f"the demo checkpoint is not installed ({path} has no config.json); pass --model DIR with a "
            "Bridge-STG checkpoint folder, or reinstall bridge-stg with its package data"
        )
    if not any(name.endswith(".safetensors") for name in os.listdir(path)):
        raise MissingAssetError(f"the demo checkpoint at {path} has no .safetensors weights; reinstall bridge-stg")
    return path


def clip_rng(stream: int, seed: int, index: int) -> np.random.Generator:
    """The generator of clip ``index`` of ``stream`` (train / validation / test) under ``seed``."""
    return np.random.default_rng([DEMO_SEED_ROOT, int(stream), int(seed), int(index)])


def render_clips(stream: int, seed: int, start: int, count: int, spec: SyntheticSpec = DEMO_SPEC,
                 families: Sequence[str] = ("appearance",)) -> list[SyntheticClip]:
    """Render clips ``start .. start + count - 1`` of a stream in memory; clip ``i`` is of family
    ``families[i % len(families)]`` (round robin, so every family is equally present in any stretch of clips)."""
    families = tuple(families)
    return [render_family_clip(clip_rng(stream, seed, i), families[i % len(families)], spec)
            for i in range(start, start + count)]


@dataclass
class DemoModelArguments:
    """Sizes of the demo model (defaults: the shipped checkpoint)."""

    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 256
    vision_depth: int = 2
    vision_hidden_size: int = 64
    decoder_layers: int = 2
    decoder_hidden_size: int = 128
    decoder_ffn_dim: int = 256
    max_frames: int = 16
    frame_side: int = 112
    #: extra ``BridgeSTGConfig`` fields applied last; the default is the shipped recipe's choice of the method options
    #: (:data:`DEMO_METHOD_OPTIONS`, docs/method.md §3.17); ablations add their switch on top (``{"eta": False}``)
    config_overrides: dict[str, Any] = field(default_factory=lambda: dict(DEMO_METHOD_OPTIONS))


@dataclass
class DemoTrainingArguments:
    """Options of ``bridge-stg demo --train``."""

    output_dir: str = "demo_checkpoint"
    seed: int = 0
    minutes: float = DEMO_RECIPE_MINUTES_CAP
    #: optimizer steps (the learning-rate schedule follows them); None: train for ``minutes``, the schedule following
    #: the clock
    max_steps: int | None = DEMO_RECIPE_STEPS
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    max_grad_norm: float = 1.0
    eval_every_minutes: float = 3.0
    #: evaluate every this many steps instead of every ``eval_every_minutes`` (a curve that does not depend on the
    #: machine's speed)
    eval_every_steps: int | None = None
    num_eval_clips: int = 96
    #: query families of the training / validation clips, round robin by clip index (``synthetic_families.FAMILIES``)
    families: tuple[str, ...] = DEMO_FAMILIES
    #: a curriculum: the first ``family_warmup_steps`` steps train on ``warmup_families`` only (the families that can
    #: be solved frame by frame, where the box head leaves its plateau first), then on ``families``
    warmup_families: tuple[str, ...] = ("appearance",)
    family_warmup_steps: int = 1000
    #: with ``family_warmup_steps``: each phase of the curriculum gets its own learning-rate schedule (warm-up, then
    #: cosine over the phase's steps), so the second phase starts like a fine-tuning of the first phase's model rather
    #: than in the middle of one long schedule; needs ``max_steps``
    restart_schedule: bool = True
    #: the learning rate of the curriculum's second phase (default: ``learning_rate``): its peak with
    #: ``lr_schedule="cosine"`` and ``restart_schedule``, its constant value with ``lr_schedule="constant"``
    mix_learning_rate: float | None = None
    #: the box head's train-mode readout (``reference_readout_training``) from the curriculum's second phase on. The
    #: recipe's ``"peak"``: the first phase trains with the config's mean readout, whose box loss reaches every token
    #: and pulls the attention onto the target, the mix phase with the peak readout it is scored with (three seeds: each
    #: at least as good, the spread 0.037 instead of 0.064; docs/method.md §3.24); saved in the checkpoint's config.
    #: None, or no curriculum (``family_warmup_steps=0``): the config's readout throughout
    mix_reference_readout_training: str | None = "peak"
    #: ``"constant"``: ``learning_rate`` at every step (the shipped checkpoint's run, docs/method.md §3.18: its
    #: per-phase cosine was computed but, by a bug fixed since, never applied to the optimizer); ``"cosine"``: warm-up
    #: and cosine (per phase with ``restart_schedule``), the schedule the runs of docs/method.md §3.17 were meant to
    #: have (one run of it, docs/method.md §3.19: worse than constant)
    lr_schedule: str = "constant"
    #: multi-task training (docs/multitask.md §2): auxiliary tasks ("tvg", "rec") rendered in memory and added to every
    #: step on top of the ``batch_size`` stvg clips, ``aux_batch_size`` items of each, one forward per task, their loss
    #: weighted by ``aux_loss_weight`` (:class:`bridge_stg.training.multitask_demo.AuxTaskStream`); empty: STVG only
    aux_tasks: tuple[str, ...] = ()
    aux_batch_size: int = 4
    aux_loss_weight: float = 1.0
    #: torch threads: the shipped recipe's 1 (a run is deterministic for a given count; on a shared 2-core machine one
    #: thread trained 4-5x faster than two, benchmarks/RESULTS.md "Training throughput of the demo recipe")
    num_threads: int = 1
    command: str | None = None
    model: DemoModelArguments = field(default_factory=DemoModelArguments)


def demo_model_config(model_args: DemoModelArguments | None = None) -> tuple[BridgeSTGConfig, Any]:
    """The demo model's config (tiny Qwen2.5-VL backbone, ``config_overrides`` applied last) and its compact tokenizer.

    Raises ``ValueError`` (from the config's own checks) for an inconsistent choice of options, before any weight is
    made."""
    m = model_args or DemoModelArguments()
    tok = build_compact_tokenizer(num_bridge_queries=NUM_BRIDGE_QUERIES)
    mllm = tiny_mllm_config(
        "qwen2_5_vl", tok, hidden_size=m.hidden_size, num_hidden_layers=m.num_hidden_layers,
        num_attention_heads=m.num_attention_heads, num_key_value_heads=m.num_key_value_heads,
        intermediate_size=m.intermediate_size, vision_depth=m.vision_depth, vision_hidden_size=m.vision_hidden_size,
    )
    pixels = m.frame_side * m.frame_side
    kwargs = tiny_bridge_kwargs(
        num_bridge_queries=NUM_BRIDGE_QUERIES, decoder_layers=m.decoder_layers, decoder_hidden_size=m.decoder_hidden_size,
        decoder_ffn_dim=m.decoder_ffn_dim, max_frames=m.max_frames, max_pixels=pixels, min_pixels=pixels,
        max_video_tokens=1024, num_positive_frames=8, num_negative_frames=2,
    )
    kwargs.update(span_source="frame")
    kwargs.update(m.config_overrides)
    config = BridgeSTGConfig(mllm_config=mllm, bridge_token_ids=bridge_token_ids(tok, NUM_BRIDGE_QUERIES), **kwargs)
    return config, tok


def build_demo_model(model_args: DemoModelArguments | None = None, seed: int = 0) -> tuple[BridgeSTGForVideoGrounding, BridgeSTGProcessor]:
    """A freshly initialised demo model and its processor (compact tokenizer, tiny Qwen2.5-VL backbone)."""
    config, tok = demo_model_config(model_args)
    torch.manual_seed(seed)
    model = BridgeSTGForVideoGrounding(config)
    processor = BridgeSTGProcessor.from_model_config(config, tok)
    return model, processor


def training_batch(processor: BridgeSTGProcessor, clips: Sequence[SyntheticClip]) -> Any:
    """Processor inputs with training targets for a list of rendered clips."""
    return processor(
        videos=[c.frames for c in clips], text=[c.query for c in clips], video_fps=[c.fps for c in clips],
        target_spans=[(c.tube_start, c.tube_end) for c in clips],
        target_boxes=[{"frame_ids": list(c.frame_ids), "boxes": [list(b) for b in c.boxes]} for c in clips], training=True,
    )


def reference_rows(clips: Sequence[SyntheticClip], prefix: str) -> list[dict[str, Any]]:
    """Canonical reference rows (``docs/schema.md``) of in-memory clips; query ids ``{prefix}_{i}``."""
    return [c.row(f"{prefix}_{i}", f"{prefix}_{i}", f"{prefix}_{i}.mp4") for i, c in enumerate(clips)]


def centred_box(width: float, height: float, box_fraction: float = 0.28) -> list[float]:
    """The trivial baseline's box: a centred square, side ``box_fraction`` × the shorter side, ``[x1, y1, x2, y2]``."""
    side, cx, cy = box_fraction * min(width, height), width / 2, height / 2
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def trivial_baseline_rows(clips: Sequence[SyntheticClip], prefix: str, box_fraction: float = 0.28) -> list[dict[str, Any]]:
    """The trivial baseline: the whole clip as span and a centred square box (side = ``box_fraction`` ×
    the shorter side; 0.28 is the mean target size of ``DEMO_SPEC``) on every scored frame."""
    from ..evaluation import tubedetr_grid

    rows = []
    for i, c in enumerate(clips):
        box = centred_box(c.width, c.height, box_fraction)
        grid = tubedetr_grid(0, c.num_frames, c.fps).tolist()
        rows.append({"query_id": f"{prefix}_{i}", "span": [0, c.num_frames], "frame_ids": grid, "boxes": [box] * len(grid)})
    return rows


def twin_identity(clips: Sequence[SyntheticClip], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Identity accuracy of the twin families: over the ground-truth span frames that got a predicted box, the share
    where the box overlaps the true target more than its look-alike twin (IoU). ``coverage`` is the share of
    ground-truth span frames (on the rows' scored frames) that got a box at all."""
    from bridge_stg.box_ops_bridge_stg import box_iou

    right = boxed = total = 0
    for clip, row in zip(clips, rows):
        if clip.twin_boxes is None:
            continue
        target = dict(zip(clip.frame_ids, clip.boxes))
        twin = dict(zip(clip.frame_ids, clip.twin_boxes))
        pred = dict(zip(row["frame_ids"], row["boxes"]))
        scored = [f for f in row.get("scored_frame_ids", row["frame_ids"]) if f in target]
        total += len(scored)
        for f in scored:
            if f in pred:
                boxed += 1
                right += int(box_iou(np.asarray(pred[f]), np.asarray(target[f])) > box_iou(np.asarray(pred[f]), np.asarray(twin[f])))
    return {"identity_accuracy": right / boxed if boxed else None, "coverage": boxed / total if total else None,
            "frames": boxed}


def score_clips(clips: Sequence[SyntheticClip], rows: Sequence[dict[str, Any]], prefix: str) -> dict[str, Any]:
    """Score prediction rows of clips with the exact metric (``tubedetr`` protocol), overall and per family.

    Returns the metric's result dict for all clips, plus ``"families"``: per family present, the headline metrics
    (``m_tIoU``, ``m_vIoU``, ``vIoU@0.3``, ``vIoU@0.5``, ``num_queries``) and, for families with a twin, the identity
    accuracy (:func:`twin_identity`).
    """
    from ..evaluation import compute_stvg_metrics

    refs = reference_rows(clips, prefix)
    result = compute_stvg_metrics(refs, rows, protocol="tubedetr")
    by_family: dict[str, dict[str, Any]] = {}
    for family in dict.fromkeys(c.family for c in clips):
        idx = [i for i, c in enumerate(clips) if c.family == family]
        part = compute_stvg_metrics([refs[i] for i in idx], [rows[i] for i in idx], protocol="tubedetr")
        entry = {k: part["all"][k] for k in ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5", "num_queries")}
        if any(clips[i].twin_boxes is not None for i in idx):
            entry.update(twin_identity([clips[i] for i in idx], [rows[i] for i in idx]))
        by_family[family] = entry
    result["families"] = by_family
    return result


def evaluate_clips(
    model: BridgeSTGForVideoGrounding, processor: BridgeSTGProcessor, clips: Sequence[SyntheticClip], prefix: str,
    progress: bool = True, max_new_tokens: int | None = None,
) -> dict[str, Any]:
    """Ground and score clips (:func:`score_clips`: the metric's result dict, with per-family results)."""
    rows, _ = predict_clips(model, processor, clips, prefix, progress=progress, max_new_tokens=max_new_tokens)
    return score_clips(clips, rows, prefix)


def _lr_factor(step: int, progress: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay over the run's progress (fraction of steps or minutes) to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    p = min(max(progress, 0.0), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def demo_learning_rate(args: DemoTrainingArguments, step: int, clock_progress: float) -> float:
    """The learning rate of optimizer step ``step`` (``clock_progress``: the share of the time budget spent).

    ``lr_schedule="constant"``: ``learning_rate`` (with a curriculum, ``mix_learning_rate`` from the second phase on,
    when set). ``"cosine"``: one schedule (linear warm-up, cosine to ``min_lr_ratio``)
    over the run's progress, the larger of its share of
    ``max_steps`` and of ``minutes``; with a curriculum and ``restart_schedule``, one such schedule per phase, each over
    its own steps (the second phase peaking at ``mix_learning_rate``). A run shorter than the first phase is all first
    phase, its schedule over the run's steps.

    Raises:
        ValueError: ``restart_schedule`` with a curriculum but no ``max_steps`` (the phases are counted in steps).
    """
    if args.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule: 'constant' or 'cosine', got {args.lr_schedule!r}")
    if args.lr_schedule == "constant":
        if args.mix_learning_rate is not None and 0 < args.family_warmup_steps <= step:
            return args.mix_learning_rate
        return args.learning_rate
    if args.restart_schedule and args.family_warmup_steps > 0:
        if args.max_steps is None:
            raise ValueError("restart_schedule: the curriculum's phases are counted in steps; set max_steps (or "
                             "restart_schedule=False for a run that follows the clock)")
        first = min(args.family_warmup_steps, args.max_steps)
        if step >= first:
            rest = step - first
            return (args.mix_learning_rate or args.learning_rate) * _lr_factor(
                rest, rest / max(args.max_steps - first, 1), args.warmup_steps, args.min_lr_ratio)
        return args.learning_rate * _lr_factor(step, step / first, args.warmup_steps, args.min_lr_ratio)
    progress = max(step / args.max_steps if args.max_steps else 0.0, clock_progress)
    return args.learning_rate * _lr_factor(step, progress, args.warmup_steps, args.min_lr_ratio)


def _headline(result: dict[str, Any]) -> dict[str, float]:
    a = result["all"]
    return {k: float(a[k]) for k in ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5") if a.get(k) is not None}


def set_reference_readout_training(model: BridgeSTGForVideoGrounding, readout: str) -> None:
    """Switch the box head's train-mode readout (``config.reference_readout_training``) of ``model`` in place: the
    config (so that ``save_pretrained`` records it) and every reference-point head. Like the config field itself, it
    has no effect on a model without such a head (``box_head="mlp"``)."""
    if readout not in REFERENCE_READOUTS:
        raise ValueError(f"reference_readout_training must be one of {REFERENCE_READOUTS}, got {readout!r}")
    model.config.reference_readout_training = readout
    for head in model.modules():
        if hasattr(head, "readout_training"):
            head.readout_training = readout


def train_demo(args: DemoTrainingArguments, progress: bool = True) -> dict[str, Any]:
    """Train the demo model, save the checkpoint folder (model + processor + learning curve); return the summary."""
    torch.set_num_threads(args.num_threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, processor = build_demo_model(args.model, seed=args.seed)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    logger.warning(f"demo model: {n_params / 1e6:.2f} M parameters; training for at most {args.minutes:g} min"
                   + (f" / {args.max_steps} steps" if args.max_steps else ""))
    optim = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    families = tuple(args.families)
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown or not families:
        raise ValueError(f"families: unknown {unknown or 'none given'}; choose from {FAMILIES}")
    demo_learning_rate(args, 0, 0.0)  # a recipe the schedule cannot follow fails before any work
    if args.mix_reference_readout_training not in (None, *REFERENCE_READOUTS):
        raise ValueError(f"mix_reference_readout_training must be one of {REFERENCE_READOUTS} or None, got "
                         f"{args.mix_reference_readout_training!r}")
    val_clips = render_clips(VALIDATION_STREAM, args.seed, 0, args.num_eval_clips, families=families)
    aux = None
    if args.aux_tasks:  # multi-task: tvg / rec items on top of the stvg clips of every step
        from .multitask_demo import AuxTaskStream

        aux = AuxTaskStream(args, processor)
    budget_s = args.minutes * 60.0
    curve: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    eval_time = 0.0
    next_eval = args.eval_every_minutes * 60.0
    step = 0
    ema: dict[str, float] = {}
    bar = tqdm(total=args.max_steps, desc="demo training", disable=not progress, dynamic_ncols=True)

    def run_eval() -> None:
        nonlocal eval_time
        e0 = time.perf_counter()
        model.eval()  # scored as at inference (e.g. the box head's `reference_readout`); the demo model has no dropout
        res = evaluate_clips(model, processor, val_clips, "val", progress=False)
        model.train()
        eval_time += time.perf_counter() - e0
        point = {"step": step, "train_minutes": round((time.perf_counter() - t0 - eval_time) / 60.0, 2), **_headline(res),
                 "loss": round(ema.get("loss", float("nan")), 4),
                 # running means of the loss's parts: the STVG terms and, with auxiliary tasks, each task's own loss
                 "losses": {k: round(v, 4) for k, v in ema.items() if k != "loss"}}
        if len(res["families"]) > 1:
            point["families"] = {f: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                                 for f, r in res["families"].items()}
        curve.append(point)
        logger.warning(f"held-out ({len(val_clips)} clips) at step {step}: {json.dumps(point)}")
        (out / "learning_curve.json").write_text(json.dumps(curve, indent=1))
        # the folder always holds the latest evaluated weights, so an interrupted run still leaves a checkpoint
        model.save_pretrained(out, safe_serialization=True)
        processor.save_pretrained(out)

    while True:
        train_s = time.perf_counter() - t0 - eval_time
        if args.max_steps is not None and step >= args.max_steps:
            break
        if train_s >= budget_s:
            break
        lr = demo_learning_rate(args, step, train_s / budget_s)
        for g in optim.param_groups:
            g["lr"] = lr
        stage = tuple(args.warmup_families) if step < args.family_warmup_steps else families
        if args.mix_reference_readout_training and 0 < args.family_warmup_steps == step:  # the second phase begins
            set_reference_readout_training(model, args.mix_reference_readout_training)
        clips = render_clips(TRAIN_STREAM, args.seed, step * args.batch_size, args.batch_size, families=stage)
        batch = training_batch(processor, clips)
        tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        outputs = model(**tensors)
        loss = outputs.loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}: {loss.item()}")
        aux_parts: dict[str, float] = {}
        if aux is not None:
            stvg_loss = float(loss.detach())
            loss, aux_parts = aux.add_losses(model, step, loss)
            aux_parts["stvg"] = stvg_loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optim.step()
        step += 1
        parts = {"loss": float(loss.detach())}
        for name in COMPONENT_LOSSES:
            v = getattr(outputs, name, None)
            if isinstance(v, torch.Tensor):
                parts[name.replace("loss_", "")] = float(v.detach())
        parts.update(aux_parts)
        for k, v in parts.items():
            ema[k] = v if k not in ema else 0.95 * ema[k] + 0.05 * v
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in ema.items()} | {"lr": f"{lr:.1e}"}, refresh=False)
        if args.eval_every_steps:
            if step % args.eval_every_steps == 0:
                run_eval()
        elif time.perf_counter() - t0 - eval_time >= next_eval:
            run_eval()
            next_eval += args.eval_every_minutes * 60.0
    bar.close()
    train_minutes = (time.perf_counter() - t0 - eval_time) / 60.0
    if not curve or curve[-1]["step"] != step:  # the last periodic evaluation may already be at this step
        run_eval()
    final = curve[-1]
    summary = {
        "seed": args.seed, "steps": step, "train_minutes": round(train_minutes, 2),
        "wall_minutes": round((time.perf_counter() - t0) / 60.0, 2), "parameters": n_params, "cpu": cpu_model(),
        "validation": final, "args": asdict(args),
    }
    (out / "training_summary.json").write_text(json.dumps(summary, indent=1))
    write_demo_model_card(out, model, processor, summary, curve)
    return summary


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what :mod:`platform` knows): runs of the recipe are deterministic
    per CPU kind, so training summaries and cards record it."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _metric_row(name: str, a: dict[str, Any]) -> str:
    keys = ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5", "m_sIoU")
    return f"| {name} | " + " | ".join(f"{a[k]:.3f}" if a.get(k) is not None else "–" for k in keys) + " |"


def demo_training_procedure(
    summary: dict[str, Any], curve: Sequence[dict[str, Any]], baseline_result: dict[str, Any] | None = None,
) -> str:
    """The "Training procedure" section of a demo checkpoint's card: the command, the recipe and the held-out
    learning curve (and the trivial baseline's scores, when given, for reference)."""
    import platform

    a = summary["args"]
    constant = a.get("lr_schedule", "cosine") == "constant"  # cards of runs before the option: their cosine
    if a.get("max_steps") and summary["steps"] >= a["max_steps"]:
        schedule = (f"{a['max_steps']} steps (a step-based schedule, so the machine's speed does not change the run;"
                    " with the same seed, thread count, torch build and CPU kind it is deterministic)")
    else:
        schedule = f"the {a['minutes']:g}-minute time budget"
    if a.get("family_warmup_steps"):
        first = ", ".join(a.get("warmup_families") or ())
        mix = tuple(a.get("families") or DEMO_FAMILIES)  # a run of `--families`: those families only
        second = "every family" if mix == tuple(DEMO_FAMILIES) else ", ".join(mix) + " only"
        schedule += (f"; curriculum: the first {a['family_warmup_steps']} steps on {first} only, then {second}"
                     + (f", each phase with its own warm-up and cosine (second phase peak lr "
                        f"{a.get('mix_learning_rate') or a['learning_rate']:g})"
                        if a.get("restart_schedule") and not constant else "")
                     + (f", the second phase at a constant lr {a['mix_learning_rate']:g}"
                        if constant and a.get("mix_learning_rate") else "")
                     + (f", the box head training with the {a['mix_reference_readout_training']} readout from the"
                        " second phase on" if a.get("mix_reference_readout_training") else ""))
    command = a.get("command") or (
        f"bridge-stg demo --train --minutes {a['minutes']:g} --seed {a['seed']}"
        + (f" --max-steps {a['max_steps']}" if a.get("max_steps") else "") + f" --threads {a['num_threads']}"
    )
    cpu = f" ({summary['cpu']})" if summary.get("cpu") else ""  # summaries before it was recorded: none
    lines = [
        f"Trained from random weights by `{command}`: seed {a['seed']}; {summary['steps']} steps of batch"
        f" {a['batch_size']} ({summary['train_minutes']:.1f} min of training, {summary['wall_minutes']:.1f} min wall) on"
        f" {platform.machine()}{cpu} with {a['num_threads']} torch thread(s), {os.cpu_count()} cores shared with concurrent"
        + (f" work; AdamW at a constant lr {a['learning_rate']:g} (no warm-up, no decay) over {schedule}." if constant else
           f" work; AdamW lr {a['learning_rate']:g}, warm-up {a['warmup_steps']} steps then cosine over {schedule}.")
        + f" Training clips: stream {TRAIN_STREAM} of `default_rng([{DEMO_SEED_ROOT}, stream, seed, index])`; held-out"
        f" curve: stream {VALIDATION_STREAM}; `bridge-stg demo` tests on stream {TEST_STREAM} (never trained on).", "",
        f"Held-out learning curve (tubedetr protocol, {a['num_eval_clips']} validation clips):", "",
        "| step | train min | m_tIoU | m_vIoU | vIoU@0.3 | vIoU@0.5 | loss (EMA) |", "|---|---|---|---|---|---|---|",
    ]
    for p in curve:
        lines.append(f"| {p['step']} | {p['train_minutes']} | {p['m_tIoU']:.3f} | {p['m_vIoU']:.3f} | {p['vIoU@0.3']:.3f}"
                     f" | {p['vIoU@0.5']:.3f} | {p['loss']} |")
    if baseline_result is not None:
        lines += ["", "For reference, the trivial baseline (the whole clip as the span, a centred box) on the test clips"
                  " of the evaluation below:", "", "| | m_tIoU | m_vIoU | vIoU@0.3 | vIoU@0.5 | m_sIoU |",
                  "|---|---|---|---|---|---|", _metric_row("trivial baseline", baseline_result["all"])]
    return "\n".join(lines)


def write_demo_model_card(
    out_dir: str | os.PathLike[str], model: BridgeSTGForVideoGrounding, processor: BridgeSTGProcessor,
    summary: dict[str, Any], curve: Sequence[dict[str, Any]], test_result: dict[str, Any] | None = None,
    baseline_result: dict[str, Any] | None = None,
) -> Path:
    """Write ``README.md`` of a demo checkpoint folder without code (as shipped in the package): the
    ``demo_checkpoint`` card template filled by :func:`bridge_stg.model_cards.hub.build_model_card`, like every
    other card. ``test_result`` is the ``bridge-stg demo`` metrics JSON (``dataset`` names the clips)."""
    from bridge_stg.model_cards.hub import build_model_card

    families = list(summary.get("args", {}).get("families") or ("appearance",))
    procedure = demo_training_procedure(summary, curve, baseline_result)
    if test_result and test_result.get("families"):  # the per-family test scores (docs/benchmark.md §3)
        base = (baseline_result or {}).get("families") or {}
        rows = ["", f"Per query family on the test clips of the evaluation below ({test_result.get('dataset', 'test')}):", "",
                "| family | clips | m_tIoU | m_vIoU | vIoU@0.5 | twin identity | baseline m_tIoU | baseline m_vIoU |",
                "|---|---|---|---|---|---|---|---|"]
        for name, r in test_result["families"].items():
            b = base.get(name, {})
            ident = r.get("identity_accuracy")
            rows.append(f"| {name} | {r['num_queries']} | {r['m_tIoU']:.3f} | {r['m_vIoU']:.3f} | {r['vIoU@0.5']:.3f} | "
                        + (f"{ident:.3f}" if ident is not None else "–")
                        + (f" | {b['m_tIoU']:.3f} | {b['m_vIoU']:.3f} |" if b else " | – | – |"))
        procedure += "\n" + "\n".join(rows)  # a blank line ends the table above
    training_data = (
        "Synthetic clips rendered in memory by `bridge_stg.processing.synthetic_families` (the clips of `bridge-stg "
        "synth`): coloured geometric shapes moving over a generated background, exact boxes, templated queries of the "
        f"query families {', '.join(families)} (docs/benchmark.md of the bridge-stg repository). No real video.")
    card = build_model_card(
        model, processor, out_dir, metrics=test_result, code_files=(),
        card_kwargs={"template": "demo_checkpoint", "model_name": "bridge-stg-demo",
                     "training_procedure": procedure, "training_data": training_data},
    )
    path = Path(out_dir) / "README.md"
    path.write_text(card, encoding="utf-8")
    return path


def export_demo_checkpoint(
    model: BridgeSTGForVideoGrounding, processor: BridgeSTGProcessor, source_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str], test_result: dict[str, Any] | None = None,
    baseline_result: dict[str, Any] | None = None,
) -> str:
    """Write a self-contained copy of a demo checkpoint (code, ``auto_map``, pipeline registration, card) with
    :func:`bridge_stg.model_cards.hub.save_for_hub`; the card's training section comes from the source folder's
    ``training_summary.json`` / ``learning_curve.json`` (copied along) when it has them."""
    from bridge_stg.model_cards.hub import save_for_hub

    src = Path(source_dir)
    card: dict[str, Any] = {"template": "demo_checkpoint", "model_name": "bridge-stg-demo"}
    if (src / "training_summary.json").is_file() and (src / "learning_curve.json").is_file():
        summary = json.loads((src / "training_summary.json").read_text())
        curve = json.loads((src / "learning_curve.json").read_text())
        card["training_procedure"] = demo_training_procedure(summary, curve, baseline_result)
    out = save_for_hub(model, processor, out_dir, metrics=test_result, card_kwargs=card, overwrite=True)
    for name in ("training_summary.json", "learning_curve.json"):
        if (src / name).is_file():
            (Path(out) / name).write_bytes((src / name).read_bytes())
    return out


__all__ = [
    "demo_checkpoint_path", "demo_model_config", "centred_box", "export_demo_checkpoint", "DEMO_FAMILIES", "DEMO_METHOD_OPTIONS", "demo_learning_rate", "score_clips", "twin_identity", "DEMO_SEED_ROOT", "DEMO_RECIPE_STEPS", "DEMO_RECIPE_MINUTES_CAP", "TRAIN_STREAM", "VALIDATION_STREAM", "TEST_STREAM", "DEMO_SPEC", "clip_rng", "render_clips",
    "DemoModelArguments", "DemoTrainingArguments", "build_demo_model", "training_batch", "reference_rows",
    "trivial_baseline_rows", "evaluate_clips", "train_demo", "cpu_model", "demo_training_procedure", "write_demo_model_card",
]
