"""Multi-task training in the demo recipe: temporal grounding and REC items rendered in memory, added to every step on
top of the STVG clips, and their per-task evaluation (docs/multitask.md §2, §4).

``DemoTrainingArguments.aux_tasks`` (``"tvg"``, ``"rec"``) turns it on: each optimizer step of
:func:`bridge_stg.training.demo.train_demo` still trains on its ``batch_size`` STVG clips exactly as the STVG-only
recipe does (one forward over them), and :class:`AuxTaskStream` adds, for every auxiliary task, one more forward over
``aux_batch_size`` items of that task; the step's loss is ``loss_stvg + aux_loss_weight * sum(loss_task)``. So the
budget of STVG steps and STVG clips is the same with or without auxiliary tasks, and the STVG term of the gradient is
the one the STVG-only recipe computes (one forward per task also means each task's losses are averaged over its own
items, and its loss can be read on its own).

Seeds. Item ``i`` of an auxiliary stream comes from :func:`bridge_stg.training.demo.clip_rng` with the task's own
stream (:data:`AUX_STREAMS`: train / validation / test per task, none equal to the demo's STVG streams 1 / 2 / 3), so
no test item is ever a training item, and an auxiliary item is never an STVG training clip. Item ``i`` of a step ``s``
is item ``s * aux_batch_size + i`` of its stream, of family ``families[i % len(families)]``, where ``families`` are
the run's STVG families that have an exact form of the task (:func:`aux_families`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from bridge_stg.configuration_bridge_stg import TASK_IDS
from bridge_stg.processing.synthetic import SyntheticSpec
from bridge_stg.processing.synthetic_tasks import TASK_FAMILIES, SyntheticTaskItem, render_task_item

from .demo import DEMO_SPEC, clip_rng, score_clips
from .predict import _EvalMode, ground_batch

AUX_TASKS: tuple[str, ...] = ("tvg", "rec")
#: the auxiliary tasks' streams of :func:`~bridge_stg.training.demo.clip_rng` (the STVG streams are 1, 2, 3)
AUX_STREAMS: dict[str, dict[str, int]] = {
    "tvg": {"train": 11, "validation": 12, "test": 13},
    "rec": {"train": 21, "validation": 22, "test": 23},
}


def aux_families(task: str, families: Sequence[str]) -> tuple[str, ...]:
    """The families of ``families`` that have an exact form of ``task`` (in :data:`TASK_FAMILIES` order)."""
    if task not in TASK_FAMILIES:
        raise ValueError(f"unknown task {task!r}; choose from {tuple(TASK_FAMILIES)}")
    chosen = tuple(f for f in TASK_FAMILIES[task] if f in set(families))
    if not chosen:
        raise ValueError(f"{task}: none of the families {tuple(families)} has an exact {task} form "
                         f"(those that do: {TASK_FAMILIES[task]})")
    return chosen


def render_task_items(task: str, stream: int, seed: int, start: int, count: int, families: Sequence[str],
                      spec: SyntheticSpec = DEMO_SPEC) -> list[SyntheticTaskItem]:
    """Items ``start .. start + count - 1`` of a stream of ``task``; item ``i`` is of family
    ``families[i % len(families)]`` and comes from ``clip_rng(stream, seed, i)``."""
    families = tuple(families)
    return [render_task_item(task, clip_rng(stream, seed, i), families[i % len(families)], spec)
            for i in range(start, start + count)]


def task_batch(processor: Any, items: Sequence[SyntheticTaskItem], training: bool = True) -> Any:
    """Processor inputs for items of one task, as the collator builds them for the same rows: ``task_ids``; when
    ``training``, the span, the boxes (none for ``tvg``) and no answer text for ``rec``. A ``rec`` image is a
    one-frame clip at 1 fps (the processor repeats it into one temporal group)."""
    tasks = {it.task for it in items}
    if len(tasks) != 1:
        raise ValueError(f"task_batch: items of one task expected, got {sorted(tasks)}")
    task = tasks.pop()
    kwargs: dict[str, Any] = dict(videos=[it.frames for it in items], text=[it.query for it in items],
                                  video_fps=[it.fps for it in items], task_ids=[TASK_IDS[task]] * len(items))
    if training:
        kwargs.update(
            target_spans=[(it.tube_start, it.tube_end) for it in items],
            target_boxes=[None if task == "tvg" else {"frame_ids": list(it.frame_ids), "boxes": [list(b) for b in it.boxes]}
                          for it in items],
            with_answer=[task != "rec"] * len(items), training=True,
        )
    return processor(**kwargs)


class AuxTaskStream:
    """The auxiliary tasks of one demo run (``DemoTrainingArguments.aux_tasks``): renders each step's items and adds
    their losses to the STVG loss.

    Args:
        args: the run's ``DemoTrainingArguments`` (``aux_tasks``, ``aux_batch_size``, ``aux_loss_weight``, ``seed``,
            ``families``).
        processor: the run's processor.

    Raises:
        ValueError: an unknown or repeated task, ``aux_batch_size < 1``, a negative or non-finite weight, or STVG
            families none of which has a form of a task.
    """

    def __init__(self, args: Any, processor: Any) -> None:
        tasks = tuple(args.aux_tasks)
        unknown = sorted(set(tasks) - set(AUX_TASKS))
        if unknown or len(set(tasks)) != len(tasks):
            raise ValueError(f"aux_tasks: {'unknown ' + str(unknown) if unknown else 'a task is repeated'}; "
                             f"choose from {AUX_TASKS}")
        if int(args.aux_batch_size) < 1:
            raise ValueError(f"aux_batch_size: must be >= 1, got {args.aux_batch_size}")
        weight = float(args.aux_loss_weight)
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"aux_loss_weight: must be a finite number >= 0, got {args.aux_loss_weight}")
        self.tasks, self.batch_size, self.weight, self.seed = tasks, int(args.aux_batch_size), weight, int(args.seed)
        self.families = {t: aux_families(t, args.families) for t in tasks}
        self.processor = processor

    def items(self, task: str, step: int) -> list[SyntheticTaskItem]:
        """The training items of ``task`` at optimizer step ``step``."""
        return render_task_items(task, AUX_STREAMS[task]["train"], self.seed, step * self.batch_size, self.batch_size,
                                 self.families[task])

    def add_losses(self, model: torch.nn.Module, step: int, loss: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``loss + aux_loss_weight * sum(loss_task)`` with one forward per auxiliary task, and each task's loss.

        Raises:
            FloatingPointError: a task's loss is not finite (names the task and the step).
        """
        parts: dict[str, float] = {}
        for task in self.tasks:
            batch = task_batch(self.processor, self.items(task, step))
            out = model(**{k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})
            if not torch.isfinite(out.loss):
                raise FloatingPointError(f"non-finite {task} loss at step {step}: {out.loss.item()}")
            loss = loss + self.weight * out.loss
            parts[task] = float(out.loss.detach())
        return loss, parts


# ------------------------------------------------------------------------------------------------ evaluation
def reference_rows(items: Sequence[SyntheticTaskItem], prefix: str) -> list[dict[str, Any]]:
    """Canonical rows of in-memory items; query ids ``{prefix}_{i}``."""
    ext = {"rec": "png"}
    return [it.row(f"{prefix}_{i}", f"{prefix}_{i}", f"{prefix}_{i}.{ext.get(it.task, 'mp4')}") for i, it in enumerate(items)]


def predict_task_items(model: torch.nn.Module, processor: Any, items: Sequence[SyntheticTaskItem], prefix: str,
                       batch_size: int = 16) -> list[dict[str, Any]]:
    """Ground items of one task with the real inference path (``model.ground`` + ``post_process_grounding``) and
    return prediction rows (query ids ``{prefix}_{i}``): ``rec`` rows carry the box on frame 0 (the image), ``tvg``
    rows the span (and the boxes of the decoded frames, which the tvg metric ignores). STVG clips go through
    :func:`bridge_stg.training.predict.predict_clips`."""
    rows: list[dict[str, Any]] = []
    with _EvalMode(model):
        for s in range(0, len(items), batch_size):
            chunk = items[s: s + batch_size]
            grids = [[0] for _ in chunk] if chunk[0].task == "rec" else None
            found, _ = ground_batch(model, processor, task_batch(processor, chunk, training=False), grids,
                                    query_ids=[f"{prefix}_{s + j}" for j in range(len(chunk))])
            rows.extend(found)
    return rows


def score_task_items(items: Sequence[SyntheticTaskItem], rows: Sequence[dict[str, Any]], prefix: str) -> dict[str, Any]:
    """Score prediction rows of items of one task, overall and per family: ``stvg`` with
    :func:`~bridge_stg.training.demo.score_clips` (the exact STVG metric, ``tubedetr`` protocol), ``tvg`` / ``rec`` with
    :func:`bridge_stg.evaluation.task_metrics.compute_task_metrics` (``"families"``: the same per family)."""
    from bridge_stg.evaluation.task_metrics import compute_task_metrics

    task = items[0].task
    if task == "stvg":
        return score_clips([it.clip for it in items], rows, prefix)
    refs = reference_rows(items, prefix)
    result = compute_task_metrics(task, refs, rows)
    by_id = {r["query_id"]: r for r in rows}
    result["families"] = {}
    for family in dict.fromkeys(it.family for it in items):
        part = [r for r, it in zip(refs, items) if it.family == family]
        result["families"][family] = compute_task_metrics(task, part, [by_id[r["query_id"]] for r in part
                                                                      if r["query_id"] in by_id])
    return result


def evaluate_task_items(model: torch.nn.Module, processor: Any, items: Sequence[SyntheticTaskItem], prefix: str,
                        batch_size: int = 16) -> dict[str, Any]:
    """Ground and score items of one task (:func:`predict_task_items` + :func:`score_task_items`)."""
    if not items:
        raise ValueError("evaluate_task_items: no items")
    if items[0].task == "stvg":
        from .predict import predict_clips

        rows, _ = predict_clips(model, processor, [it.clip for it in items], prefix, batch_size=batch_size, progress=False)
    else:
        rows = predict_task_items(model, processor, items, prefix, batch_size=batch_size)
    return score_task_items(items, rows, prefix)


__all__ = [
    "AUX_TASKS", "AUX_STREAMS", "aux_families", "render_task_items", "task_batch", "AuxTaskStream", "reference_rows",
    "predict_task_items", "score_task_items", "evaluate_task_items",
]
