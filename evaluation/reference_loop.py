"""Straightforward per-query / per-frame Python implementation of the STVG metrics (test oracle).

It follows the wording of docs/evaluation.md §2–§4 literally, frame by frame, with dicts and sets and no
numpy, so that it can check :mod:`bridge_stg.evaluation.metrics` (the vectorised core) and serve as
the baseline of ``benchmarks/eval_speed.py``. It assumes valid input (no error reporting): validate
with the core first. Inputs and outputs are the same as
:func:`bridge_stg.evaluation.metrics.compute_stvg_metrics`, restricted to the metric numbers.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

_TYPES = {"declarative": "declarative", "declar": "declarative", "interrogative": "interrogative", "inter": "interrogative"}


def loop_box_iou(p: list[float], g: list[float]) -> float:
    """IoU of two ``[x1, y1, x2, y2]`` pixel boxes; 0 when the union is 0."""
    iw = max(0.0, min(p[2], g[2]) - max(p[0], g[0]))
    ih = max(0.0, min(p[3], g[3]) - max(p[1], g[1]))
    inter = iw * ih
    union = (p[2] - p[0]) * (p[3] - p[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
    return inter / union if union > 0 else 0.0


def loop_tubedetr_grid(start: int, end: int, fps: float, target_fps: float = 5.0, max_frames: int = 200) -> list[int]:
    """The reference's own loop over the canonical half-open segment (its ``end_frame`` = ``end - 1``)."""
    rate = target_fps / fps
    ids = [start]
    for f in range(start, end - 1):
        if int(ids[-1] * rate) < int(f * rate):
            ids.append(f)
    if len(ids) > max_frames:
        ids = [ids[(j * len(ids)) // max_frames] for j in range(max_frames)]
    return ids


def _interp(frames: dict[int, list[float]], f: int) -> list[float] | None:
    left = max((k for k in frames if k < f), default=None)
    right = min((k for k in frames if k > f), default=None)
    if left is None or right is None:
        return None
    t = (f - left) / (right - left)
    return [(1 - t) * a + t * b for a, b in zip(frames[left], frames[right])]


def loop_query(
    ref: Mapping[str, Any],
    pred: Mapping[str, Any] | None,
    protocol: str = "tubedetr",
    interpolate: bool = False,
    stcat_compat: bool = False,
    target_fps: float = 5.0,
    max_frames: int = 200,
) -> dict[str, float]:
    """tIoU, vIoU and sIoU of one query, frame by frame."""
    if pred is None or pred.get("span") is None:
        return {"tIoU": 0.0, "vIoU": 0.0, "sIoU": 0.0}
    gs, ge = int(ref["tube_start"]), int(ref["tube_end"])
    ps, pe = int(pred["span"][0]), int(pred["span"][1])
    gt = {int(f): list(b) for f, b in zip(ref["frame_ids"], ref["boxes"])}
    pb = {int(f): list(b) for f, b in zip(pred.get("frame_ids") or [], pred.get("boxes") or [])}

    def pred_box(f: int) -> list[float] | None:
        if f in pb:
            return pb[f]
        return _interp(pb, f) if interpolate else None

    if protocol == "hcstvg":
        union = max(ge, pe) - min(gs, ps)
        v, count, s, n_gt = 0.0, 0, 0.0, 0
        for f in range(gs, ge):
            if f not in gt:
                continue
            n_gt += 1
            b = pred_box(f)
            if b is not None:
                iou = loop_box_iou(b, gt[f])
                v += iou
                s += iou
                count += 1
        return {"tIoU": count / max(union, 1), "vIoU": v / max(union, 1), "sIoU": s / max(n_gt, 1)}

    gte = ge - 1 if (protocol == "dense" and stcat_compat) else ge
    inter = max(0, min(gte, pe) - max(gs, ps))
    tu = (gte - gs) + (pe - ps) - inter
    tiou = inter / tu if (min(gte, pe) > max(gs, ps) and tu > 0) else 0.0

    if protocol == "tubedetr":
        scored = loop_tubedetr_grid(int(ref["segment_start"]), int(ref["segment_end"]), float(ref["fps"]), target_fps, max_frames)
    elif protocol == "sampled":
        seg = range(int(ref["segment_start"]), int(ref["segment_end"]))
        scored = sorted({int(f) for f in pred["sampled_frame_ids"] if int(f) in seg})
    else:  # dense: every integer frame of the union
        scored = list(range(min(gs, ps), max(gte, pe)))
    # frames of the GT span without a GT box are not scorable
    scored = [f for f in scored if not (gs <= f < gte and f not in gt)]
    union_frames = [f for f in scored if min(gs, ps) <= f < max(gte, pe)]
    inter_frames = {f for f in scored if max(gs, ps) <= f < min(gte, pe)}
    if protocol == "dense":  # every annotated GT frame, whatever the compat end
        gt_frames = [f for f in range(gs, ge) if f in gt]
    else:
        gt_frames = [f for f in scored if gs <= f < ge and f in gt]
    v_sum, s_sum = 0.0, 0.0
    for f in gt_frames:
        b = pred_box(f)
        iou = 0.0 if b is None else loop_box_iou(b, gt[f])
        s_sum += iou
        if f in inter_frames:
            v_sum += iou
    return {"tIoU": tiou, "vIoU": v_sum / max(len(union_frames), 1), "sIoU": s_sum / max(len(gt_frames), 1)}


def loop_metrics(
    references: Iterable[Mapping[str, Any]],
    predictions: Iterable[Mapping[str, Any]],
    protocol: str = "tubedetr",
    *,
    interpolate: bool = False,
    stcat_compat: bool = False,
    target_fps: float = 5.0,
    max_frames: int = 200,
) -> dict[str, Any]:
    """Overall and per-type means with plain loops: ``{"all", "declarative", "interrogative", "avg_m_vIoU", "per_query"}``."""
    by_id = {str(p["query_id"]): p for p in predictions}
    groups: dict[str, list[dict[str, float]]] = {"all": [], "declarative": [], "interrogative": []}
    per_query: dict[str, dict[str, float]] = {}
    for ref in references:
        r = loop_query(ref, by_id.get(str(ref["query_id"])), protocol, interpolate, stcat_compat, target_fps, max_frames)
        per_query[str(ref["query_id"])] = r
        groups["all"].append(r)
        qt = ref.get("query_type")
        if qt is not None and qt.lower() in _TYPES:
            groups[_TYPES[qt.lower()]].append(r)
    out: dict[str, Any] = {}
    for name, rs in groups.items():
        n = len(rs)
        if n == 0:
            out[name] = {"m_tIoU": None, "m_vIoU": None, "vIoU@0.3": None, "vIoU@0.5": None, "m_sIoU": None, "num_queries": 0}
            continue
        out[name] = {
            "m_tIoU": sum(r["tIoU"] for r in rs) / n,
            "m_vIoU": sum(r["vIoU"] for r in rs) / n,
            "vIoU@0.3": sum(1 for r in rs if r["vIoU"] > 0.3) / n,
            "vIoU@0.5": sum(1 for r in rs if r["vIoU"] > 0.5) / n,
            "m_sIoU": sum(r["sIoU"] for r in rs) / n,
            "num_queries": n,
        }
    d, i = out["declarative"]["m_vIoU"], out["interrogative"]["m_vIoU"]
    out["avg_m_vIoU"] = None if d is None or i is None else (d + i) / 2
    out["per_query"] = per_query
    return out


__all__ = ["loop_box_iou", "loop_tubedetr_grid", "loop_query", "loop_metrics"]
