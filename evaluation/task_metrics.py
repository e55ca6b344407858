"""Metrics of the auxiliary tasks of multi-task training (docs/multitask.md §3): temporal grounding and REC.

Both read canonical reference rows (docs/schema.md) and prediction rows (``query_id, span, frame_ids, boxes``), as
``bridge-stg predict`` / :func:`bridge_stg.training.predict.predict_grounding` write them, and follow the rules of the
STVG metric for the rows themselves: an unknown or repeated prediction id is a :class:`PredictionError`, a
reference without a prediction scores 0 and is counted (``missing_predictions``).

* ``tvg`` (:func:`compute_tvg_metrics`): the IoU of the predicted span with the ground-truth span, both half-open
  ``[start, end)`` in original frame ids (continuous, as the STVG metric's tIoU on the dense grid); ``m_tIoU`` is its
  mean and ``R@m`` the share of queries with IoU >= m (the "R@1, IoU=m" of Charades-STA; inclusive, as there).
* ``rec`` (:func:`compute_rec_metrics`): the IoU of the predicted box on the image's frame (``frame_ids[0]`` of the
  reference) with the ground-truth box; ``accuracy@0.5`` is the share with IoU >= 0.5 (the REC convention,
  inclusive), ``m_IoU`` the mean IoU. A prediction without a box on that frame scores 0.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from bridge_stg.box_ops_bridge_stg import box_iou, span_iou
from bridge_stg.errors_bridge_stg import PredictionError

#: IoU thresholds of the temporal-grounding recall (Charades-STA)
TVG_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)
#: IoU threshold of REC accuracy
REC_THRESHOLD = 0.5


def _index_predictions(references: Sequence[Mapping[str, Any]], predictions: Iterable[Mapping[str, Any]],
                       task: str) -> dict[str, Mapping[str, Any]]:
    known = {str(r["query_id"]) for r in references}
    if len(known) != len(references):
        raise PredictionError(f"{task} references: query ids are not unique")
    by_id: dict[str, Mapping[str, Any]] = {}
    for i, p in enumerate(predictions):
        qid = str(p.get("query_id"))
        if qid not in known:
            raise PredictionError(f"{task} predictions: record {i}: query_id {qid!r} is not a reference")
        if qid in by_id:
            raise PredictionError(f"{task} predictions: record {i}: query_id {qid!r} is repeated")
        by_id[qid] = p
    return by_id


def _missing(references: Sequence[Mapping[str, Any]], by_id: Mapping[str, Any]) -> dict[str, Any]:
    ids = [str(r["query_id"]) for r in references if str(r["query_id"]) not in by_id]
    return {"count": len(ids), "first_ids": ids[:5]}


def _check_task(references: Sequence[Mapping[str, Any]], task: str) -> None:
    if not references:
        raise ValueError(f"{task}: no reference rows to score")
    other = [str(r["query_id"]) for r in references if r.get("task", task) != task]
    if other:
        raise ValueError(f"{task}: {len(other)} reference rows are of another task (first {other[0]!r})")


def compute_tvg_metrics(references: Sequence[Mapping[str, Any]], predictions: Iterable[Mapping[str, Any]],
                        thresholds: Sequence[float] = TVG_THRESHOLDS) -> dict[str, Any]:
    """Temporal grounding: ``m_tIoU``, ``R@m`` for every threshold, ``num_queries``, ``missing_predictions``."""
    refs = list(references)
    _check_task(refs, "tvg")
    by_id = _index_predictions(refs, predictions, "tvg")
    ious = []
    for r in refs:
        p = by_id.get(str(r["query_id"]))
        if p is None:
            ious.append(0.0)
            continue
        span = p.get("span")
        if not isinstance(span, (list, tuple)) or len(span) != 2 or not all(math.isfinite(float(v)) for v in span):
            raise PredictionError(f"tvg predictions: query_id {r['query_id']!r}: span must be [start, end), got {span!r}")
        ious.append(float(span_iou(float(span[0]), float(span[1]), float(r["tube_start"]), float(r["tube_end"]))))
    arr = np.asarray(ious, dtype=np.float64)
    out: dict[str, Any] = {"m_tIoU": float(arr.mean())}
    for m in thresholds:
        out[f"R@{m:g}"] = float((arr >= m).mean())
    out.update(num_queries=len(refs), missing_predictions=_missing(refs, by_id))
    return out


def compute_rec_metrics(references: Sequence[Mapping[str, Any]], predictions: Iterable[Mapping[str, Any]],
                        threshold: float = REC_THRESHOLD) -> dict[str, Any]:
    """REC: ``accuracy@{threshold}``, ``m_IoU``, ``num_queries``, ``missing_predictions``, ``missing_boxes``."""
    refs = list(references)
    _check_task(refs, "rec")
    by_id = _index_predictions(refs, predictions, "rec")
    ious, no_box = [], []
    for r in refs:
        qid = str(r["query_id"])
        if len(r["frame_ids"]) != 1 or len(r["boxes"]) != 1:
            raise ValueError(f"rec: reference {qid!r} must have exactly one frame and one box")
        p = by_id.get(qid)
        if p is None:
            ious.append(0.0)
            continue
        boxes = dict(zip((int(f) for f in p.get("frame_ids", [])), p.get("boxes", [])))
        box = boxes.get(int(r["frame_ids"][0]))
        if box is None:
            no_box.append(qid)
            ious.append(0.0)
            continue
        if len(box) != 4 or not all(math.isfinite(float(v)) for v in box):
            raise PredictionError(f"rec predictions: query_id {qid!r}: box must be 4 finite numbers, got {box!r}")
        ious.append(float(box_iou(np.asarray(box, dtype=np.float64), np.asarray(r["boxes"][0], dtype=np.float64))))
    arr = np.asarray(ious, dtype=np.float64)
    return {f"accuracy@{threshold:g}": float((arr >= threshold).mean()), "m_IoU": float(arr.mean()),
            "num_queries": len(refs), "missing_predictions": _missing(refs, by_id),
            "missing_boxes": {"count": len(no_box), "first_ids": no_box[:5]}}


def compute_task_metrics(task: str, references: Sequence[Mapping[str, Any]],
                         predictions: Iterable[Mapping[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """The metric of ``task``: :func:`compute_tvg_metrics` or :func:`compute_rec_metrics` (``stvg``: use
    :func:`bridge_stg.evaluation.compute_stvg_metrics`)."""
    if task == "tvg":
        return compute_tvg_metrics(references, predictions, **kwargs)
    if task == "rec":
        return compute_rec_metrics(references, predictions, **kwargs)
    raise ValueError(f"compute_task_metrics: task must be 'tvg' or 'rec', got {task!r}")


def headline_task_metrics(task: str, result: Mapping[str, Any]) -> dict[str, float]:
    """The scalar entries of a task result (what a log or a table shows)."""
    return {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and k != "num_queries"}


__all__ = ["TVG_THRESHOLDS", "REC_THRESHOLD", "compute_tvg_metrics", "compute_rec_metrics", "compute_task_metrics",
           "headline_task_metrics"]
