"""Multi-task training with ``bridge-stg train``: task mixing, one forward per task, per-task losses and evaluation
(docs/multitask.md §2, §3).

The recipe option ``task_mix`` (``DataArguments``, e.g. ``"stvg=2,tvg=1,rec=1"``) names how many rows of each task
every per-device batch holds; the counts sum to ``per_device_train_batch_size``. With it:

* :class:`TaskBlockSampler` orders the training rows in blocks of one batch each, every block with exactly that
  composition (tasks in the order of ``task_mix``). An epoch is one pass over the rows of the first task of the mix;
  the rows of the others are drawn without replacement and cycled when a task has too few (a fresh permutation per
  pass), or subsampled when it has more. The order depends on ``(seed, epoch)`` only.
* :class:`MultiTaskCollator` collates each task's rows of a batch on their own (``{task: batch}``), and
  :class:`MultiTaskTrainer` runs one forward per task, in the mix's order, and trains on
  ``sum(task_loss_weights[task] * loss_task)`` with one backward. Each task's losses are therefore averaged over its
  own rows, and every process runs the same forwards in the same order (as DDP / FSDP need). Under DDP,
  ``ddp_find_unused_parameters`` must be false (the default here): DDP would search only the last forward's graph.
* the logs carry, besides ``loss`` and the components of the weighted sum (``loss_l1`` ...), each task's loss
  ``loss/<task>`` and the components that apply to it, ``<component>/<task>`` (:func:`task_components`: tvg has no
  decoder and box losses, rec no LM / relevance / contrastive / span losses; a component with weight 0, and
  ``loss_lm`` without answer text (``span_source="frame"``), is not logged).
* each evaluation adds, besides the STVG metrics of the split's stvg rows, the metrics of its tvg rows
  (``eval_tvg/m_tIoU``, ``eval_tvg/R@0.3`` / ``0.5`` / ``0.7``) and rec rows (``eval_rec/accuracy@0.5``,
  ``eval_rec/m_IoU``), grounded with the real inference path (:func:`bridge_stg.training.predict.predict_grounding`)
  and scored by :mod:`bridge_stg.evaluation.task_metrics`. Every process grounds every row (the rows are few).
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from bridge_stg.configuration_bridge_stg import COMPONENT_LOSSES, TASK_IDS, TASKS

from .recipe import RecipeError
from .trainer import BridgeSTGTrainer

#: the components of the model's loss that apply to each task (``BridgeSTGForVideoGrounding.forward``)
TASK_COMPONENTS: dict[str, tuple[str, ...]] = {
    "stvg": COMPONENT_LOSSES,
    "tvg": ("loss_lm", "loss_relevance", "loss_contrastive", "loss_span", "loss_query"),
    "rec": ("loss_l1", "loss_giou", "loss_presence", "loss_reference", "loss_query"),
}


class TaskMixError(RecipeError):
    """A ``task_mix`` / ``task_loss_weights`` option, or the data it is applied to, is invalid."""


def _parse_mapping(text: Any, option: str) -> dict[str, float]:
    """``"a=1,b=2"`` or a JSON object (or a mapping) -> ``{task: number}``, tasks checked, order kept."""
    if isinstance(text, Mapping):
        items = list(text.items())
    else:
        s = str(text).strip()
        if s.startswith("{"):
            try:
                data = json.loads(s)
            except json.JSONDecodeError as err:
                raise TaskMixError(f"{option}: not a JSON object ({err})") from None
            if not isinstance(data, dict):
                raise TaskMixError(f"{option}: expected a JSON object")
            items = list(data.items())
        else:
            items = []
            for part in (p.strip() for p in s.split(",") if p.strip()):
                name, sep, value = part.partition("=")
                if not sep:
                    raise TaskMixError(f"{option}: expected task=value pairs like 'stvg=2,tvg=1', got {part!r}")
                items.append((name.strip(), value.strip()))
    out: dict[str, float] = {}
    for name, value in items:
        if name not in TASKS:
            raise TaskMixError(f"{option}: unknown task {name!r}; choose from {', '.join(TASKS)}")
        if name in out:
            raise TaskMixError(f"{option}: task {name!r} given twice")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TaskMixError(f"{option}: the value of {name!r} must be a number, got {value!r}") from None
        if not math.isfinite(number) or number < 0:
            raise TaskMixError(f"{option}: the value of {name!r} must be a finite number >= 0, got {value!r}")
        out[name] = number
    if not out:
        raise TaskMixError(f"{option}: name at least one task")
    return out


def parse_task_mix(text: Any, batch_size: int | None = None) -> dict[str, int]:
    """``task_mix`` -> rows per task in every per-device batch (integers >= 1, summing to ``batch_size`` when given)."""
    mix = _parse_mapping(text, "task_mix")
    counts: dict[str, int] = {}
    for name, value in mix.items():
        if value != int(value) or value < 1:
            raise TaskMixError(f"task_mix: rows of {name!r} per batch must be an integer >= 1, got {value:g}")
        counts[name] = int(value)
    if batch_size is not None and sum(counts.values()) != int(batch_size):
        raise TaskMixError(f"task_mix: the rows per batch ({' + '.join(map(str, counts.values()))} = "
                           f"{sum(counts.values())}) must equal per_device_train_batch_size ({batch_size})")
    return counts


def parse_task_loss_weights(text: Any, mix: Mapping[str, int]) -> dict[str, float]:
    """``task_loss_weights`` -> a weight per task of the mix (1.0 where not given)."""
    weights = {task: 1.0 for task in mix}
    if text:
        given = _parse_mapping(text, "task_loss_weights")
        extra = sorted(set(given) - set(mix))
        if extra:
            raise TaskMixError(f"task_loss_weights: {extra} not in task_mix {list(mix)}")
        weights.update(given)
    return weights


def check_task_options(data_args: Any, training_args: Any) -> None:
    """Raise :class:`TaskMixError` on bad ``task_mix`` / ``task_loss_weights`` options (before anything is built)."""
    if getattr(data_args, "task_loss_weights", None) and not data_args.task_mix:
        raise TaskMixError("task_loss_weights: needs task_mix")
    if data_args.task_mix:
        mix = parse_task_mix(data_args.task_mix, training_args.per_device_train_batch_size)
        parse_task_loss_weights(data_args.task_loss_weights, mix)
        if training_args.world_size > 1 and training_args.ddp_find_unused_parameters:
            raise TaskMixError("task_mix with ddp_find_unused_parameters true: the tasks' forwards run before one backward, "
                               "and DDP would search only the last forward's graph for unused parameters (a parameter "
                               "another task uses would be reduced twice); set ddp_find_unused_parameters false")


def task_components(config: Any, task: str, has_answer: bool) -> tuple[str, ...]:
    """The components logged for ``task``: those of :data:`TASK_COMPONENTS` with a positive weight in ``config``,
    ``loss_lm`` only when the rows carry answer text (``has_answer``)."""
    return tuple(c for c in TASK_COMPONENTS[task] if float(getattr(config, f"{c}_weight", 0.0)) > 0
                 and (c != "loss_lm" or has_answer))


# ------------------------------------------------------------------------------------------------ sampling
class TaskBlockSampler(torch.utils.data.Sampler[int]):
    """Indices of a mixed dataset in blocks of ``sum(mix.values())`` rows, ``mix[task]`` rows of each task per block.

    Args:
        tasks: the ``task`` of every dataset row.
        mix: rows per block of each task (its first task sets the epoch: ``ceil(n_first / mix[first])`` blocks).
        seed: the draw of an epoch comes from ``default_rng([seed, epoch, task id])``.
    """

    def __init__(self, tasks: Sequence[str], mix: Mapping[str, int], seed: int = 0) -> None:
        self.mix = dict(mix)
        self.seed = int(seed)
        self.epoch = 0
        self.rows = {t: np.flatnonzero(np.asarray(tasks) == t) for t in self.mix}
        empty = [t for t, idx in self.rows.items() if idx.size == 0]
        if empty:
            raise TaskMixError(f"task_mix: the training split has no rows of task(s) {empty}")
        first = next(iter(self.mix))
        self.num_blocks = math.ceil(self.rows[first].size / self.mix[first])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_blocks * sum(self.mix.values())

    def _draw(self, task: str, n: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch, TASK_IDS[task]])
        rows = self.rows[task]
        parts = [rows[rng.permutation(rows.size)] for _ in range(math.ceil(n / rows.size))]
        return np.concatenate(parts)[:n]

    def __iter__(self) -> Iterator[int]:
        drawn = {t: self._draw(t, self.num_blocks * c).reshape(self.num_blocks, c) for t, c in self.mix.items()}
        for b in range(self.num_blocks):
            for t in self.mix:
                yield from (int(i) for i in drawn[t][b])


def tasks_of(dataset: Any) -> list[str]:
    """The ``task`` of every row of a ``datasets.Dataset`` (one column read) or a list of row dicts."""
    if hasattr(dataset, "column_names"):
        return [str(t) for t in dataset["task"]]
    return [str(r.get("task", "stvg")) for r in dataset]


class MultiTaskBatch(dict):
    """``{task: batch}`` of one training step (the tasks in the mix's order)."""


class MultiTaskCollator:
    """Collates the rows of each task of a batch on their own with ``collator``; returns a :class:`MultiTaskBatch`.

    Raises :class:`TaskMixError` when a batch does not hold every task of ``tasks`` (or holds another)."""

    def __init__(self, collator: Any, tasks: Sequence[str]) -> None:
        self.collator = collator
        self.tasks = tuple(tasks)

    def __getattr__(self, name: str) -> Any:  # set_epoch, processor, training ...
        return getattr(self.collator, name)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> MultiTaskBatch:
        found = [str(r.get("task", "stvg")) for r in rows]
        if set(found) != set(self.tasks):
            raise TaskMixError(f"multi-task batch: expected rows of {list(self.tasks)}, got {sorted(set(found))} "
                               "(the batches of task_mix come from TaskBlockSampler)")
        return MultiTaskBatch((t, self.collator([r for r, f in zip(rows, found) if f == t])) for t in self.tasks)


# ------------------------------------------------------------------------------------------------ trainer
class MultiTaskTrainer(BridgeSTGTrainer):
    """:class:`BridgeSTGTrainer` for ``task_mix`` runs: the block sampler, one forward per task, per-task logs and
    per-task evaluation (see the module docstring).

    Args:
        task_mix: rows per task of every per-device batch (:func:`parse_task_mix`).
        task_loss_weights: weight of each task's loss (default 1).
        task_eval_rows: ``{task: reference rows}`` of the evaluation split's ``tvg`` / ``rec`` rows, scored at every
            evaluation with ``task_eval_collator`` (an inference ``BridgeSTGDataCollator``).
    """

    def __init__(self, *args: Any, task_mix: Mapping[str, int], task_loss_weights: Mapping[str, float] | None = None,
                 task_eval_rows: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                 task_eval_collator: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task_mix = dict(task_mix)
        self.task_loss_weights = {t: 1.0 for t in self.task_mix} | dict(task_loss_weights or {})
        self.task_eval_rows = {t: list(r) for t, r in (task_eval_rows or {}).items() if r}
        if self.task_eval_rows and task_eval_collator is None:
            raise ValueError("task_eval_rows: needs task_eval_collator (an inference BridgeSTGDataCollator)")
        self.task_eval_collator = task_eval_collator
        self._task_sums: dict[str, torch.Tensor] = {}
        self._task_counts: dict[str, int] = {}

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler:
        dataset = self.train_dataset if train_dataset is None else train_dataset
        return TaskBlockSampler(tasks_of(dataset), self.task_mix, seed=self.args.seed)

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if not isinstance(inputs, MultiTaskBatch):
            # evaluation batches of the plain collator (teacher-forced eval loss): one forward, as BridgeSTGTrainer
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        from .trainer import unwrap_bridge_model

        config = unwrap_bridge_model(model).config
        phase = "train" if model.training else "eval"
        loss, outputs = None, {}
        sums = self._component_sums[phase]
        for task in self.task_mix:
            if task not in inputs:
                raise TaskMixError(f"multi-task batch without {task!r} rows (task_mix {self.task_mix})")
            batch = inputs[task]
            out = model(**{k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})
            weight = self.task_loss_weights[task]
            loss = weight * out.loss if loss is None else loss + weight * out.loss
            outputs[task] = out
            with torch.no_grad():
                labels = batch.get("labels")
                has_answer = labels is not None and bool((labels != -100).any())
                logged = {"loss": out.loss} | {c: getattr(out, c) for c in task_components(config, task, has_answer)}
                for name, value in logged.items():
                    key = f"{name}/{task}"
                    v = value.detach().float()
                    self._task_sums[key] = self._task_sums[key] + v if key in self._task_sums else v
                    self._task_counts[key] = self._task_counts.get(key, 0) + 1
                for key in COMPONENT_LOSSES:
                    value = getattr(out, key, None)
                    if value is not None:
                        v = weight * value.detach().float()
                        sums[key] = sums[key] + v if key in sums else v
        self._component_counts[phase] += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._task_counts:
            for key, total in self._task_sums.items():
                mean = self.accelerator.gather_for_metrics((total / self._task_counts[key]).reshape(1)).mean()
                logs[key] = round(float(mean), 6)
            self._task_sums, self._task_counts = {}, {}
        super().log(logs, start_time)

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        metrics = super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        if self.task_eval_rows:
            with self.accelerator.autocast():  # as BridgeSTGTrainer.prediction_step: fp32 trainables beside 16-bit weights
                extra = evaluate_task_rows(self.model, self.task_eval_collator, self.task_eval_rows,
                                           batch_size=self.args.per_device_eval_batch_size, prefix=metric_key_prefix)
            self.log(extra)
            metrics.update(extra)
        return metrics


def evaluate_task_rows(model: nn.Module, collator: Any, rows_by_task: Mapping[str, Sequence[Mapping[str, Any]]],
                       batch_size: int = 8, prefix: str = "eval") -> dict[str, float]:
    """Ground the ``tvg`` / ``rec`` rows with ``model.ground`` through an inference collator and score each task with
    :mod:`bridge_stg.evaluation.task_metrics`; returns ``{prefix}_{task}/{metric}`` scalars (``{prefix}_tvg/m_tIoU``,
    ``{prefix}_tvg/R@0.5``, ``{prefix}_rec/accuracy@0.5`` ...). rec rows are grounded on their one frame (the
    ``dense`` protocol's frames), tvg rows on the sampled frames (only the span is scored)."""
    from bridge_stg.evaluation.task_metrics import compute_task_metrics, headline_task_metrics

    from .predict import predict_grounding

    out: dict[str, float] = {}
    for task, rows in rows_by_task.items():
        if task not in ("tvg", "rec"):
            raise ValueError(f"evaluate_task_rows: tasks are 'tvg' and 'rec', got {task!r}")
        preds = predict_grounding(model, collator, rows, batch_size=batch_size,
                                  protocol="dense" if task == "rec" else "sampled")
        result = compute_task_metrics(task, rows, preds)
        for key, value in headline_task_metrics(task, result).items():
            out[f"{prefix}_{task}/{key}"] = round(value, 6)
    return out


def multitask_trainer_setup(data_args: Any, training_args: Any, train_ds: Any, collator: Any, eval_collator: Any,
                            processor: Any, load_split: Callable[..., Any], video_root: str | None,
                            sampling: Mapping[str, Any]) -> tuple[Any, Any, type, dict[str, Any]]:
    """What :func:`bridge_stg.training.recipe.run` changes for a ``task_mix`` run: ``(collator, eval_collator,
    trainer class, extra trainer arguments)``. The evaluation loss (no ``eval_metrics``) keeps the plain collator
    (one forward per mixed batch); with ``eval_metrics`` the split's tvg / rec rows are scored per task."""
    from bridge_stg.processing.collator import BridgeSTGDataCollator

    mix = parse_task_mix(data_args.task_mix, training_args.per_device_train_batch_size)
    weights = parse_task_loss_weights(data_args.task_loss_weights, mix)
    if training_args.ddp_find_unused_parameters is None:  # Trainer's default would be True (check_task_options)
        training_args.ddp_find_unused_parameters = False
    TaskBlockSampler(tasks_of(train_ds), mix, seed=training_args.seed)  # the split holds every task: fail now
    kwargs: dict[str, Any] = {"task_mix": mix, "task_loss_weights": weights}
    if data_args.eval_split and data_args.eval_metrics:
        rows = list(load_split(data_args, data_args.eval_split, data_args.max_eval_samples))
        kwargs["task_eval_rows"] = {t: [r for r in rows if r.get("task") == t] for t in ("tvg", "rec")}
        kwargs["task_eval_collator"] = BridgeSTGDataCollator(processor, video_root, training=False, **sampling)
    return MultiTaskCollator(collator, tuple(mix)), (collator if eval_collator is None else eval_collator), \
        MultiTaskTrainer, kwargs


__all__ = [
    "TASK_COMPONENTS", "TaskMixError", "parse_task_mix", "parse_task_loss_weights", "check_task_options",
    "task_components", "TaskBlockSampler", "tasks_of", "MultiTaskBatch", "MultiTaskCollator", "MultiTaskTrainer",
    "evaluate_task_rows", "multitask_trainer_setup",
]
