"""Exact STVG metrics, vectorised with numpy (the definitions are docs/evaluation.md §2–§4).

Conventions used everywhere in this module:

* frame numbers are **original 0-based video frame ids** (int64) and every span is **half-open**
  ``[start, end)``;
* boxes are ``[x1, y1, x2, y2]`` absolute pixels (float64), area ``(x2 - x1) * (y2 - y1)`` with no +1;
* variable-length per-query data (tubes, scored frame sets) is *packed*: one flat array holding the
  items of query 0, then query 1, ..., and an ``offsets`` array of shape ``(N + 1,)`` so that query
  ``i`` owns items ``offsets[i]:offsets[i + 1]``; frame ids are strictly increasing inside a query;
* metric values are fractions in ``[0, 1]``.

Protocols (``PROTOCOLS``):

``tubedetr``  scored frames = a 5 fps grid of the segment built with the reference's float expression
              ``int(f * (5 / fps))``, last segment frame excluded, capped at 200 frames (default).
``dense``     every integer frame (STCAT / CG-STVG family); ``stcat_compat=True`` reproduces their
              one-frame-short GT end in tIoU and in the union / intersection.
``sampled``   only the frames the model saw (``sampled_frame_ids`` of each prediction, within the
              segment).
``hcstvg``    the official HC-STVG challenge script: vIoU sums the IoU over GT frames that have a
              predicted box and divides by ``max end - min start``; its "tIoU" is the number of such
              frames over the same denominator.

The hot path (:func:`per_query_metrics`) has no per-frame Python loop: scored frame sets are built
per protocol as packed arrays, lookups use ``searchsorted`` on composite keys
``query_index * KEY_BASE + frame``, and per-query sums use ``bincount``. The straightforward loop
implementation of the same definitions lives in :mod:`bridge_stg.evaluation.reference_loop` and is
the test oracle.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from bridge_stg.box_ops_bridge_stg import box_iou as _box_iou
from bridge_stg.box_ops_bridge_stg import span_iou
from bridge_stg.errors_bridge_stg import AnnotationError, PredictionError

from .packing import (
    _FIRST_IDS,
    KEY_BASE,
    QUERY_TYPES,
    PredictionArrays,
    ReferenceArrays,
    Tubes,
    pack_predictions,
    pack_references,
)

PROTOCOLS = ("tubedetr", "dense", "sampled", "hcstvg")
THRESHOLDS = (0.3, 0.5)
METRIC_KEYS = ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5", "m_sIoU", "num_queries")


# ----------------------------------------------------------------------------------------------
# elementary quantities
# ----------------------------------------------------------------------------------------------
def box_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Element-wise IoU of two (n, 4) arrays of ``[x1, y1, x2, y2]`` pixel boxes → (n,) float64.

    Continuous areas (no +1), intersection clipped at 0; a zero union (both boxes degenerate) gives 0,
    never a division error (``box_ops_bridge_stg.box_iou``). Inputs are assumed validated (finite, ``x2 >= x1``,
    ``y2 >= y1``).
    """
    return _box_iou(np.asarray(pred, dtype=np.float64).reshape(-1, 4), np.asarray(gt, dtype=np.float64).reshape(-1, 4))


def temporal_iou(gt_start: np.ndarray, gt_end: np.ndarray, pred_start: np.ndarray, pred_end: np.ndarray) -> np.ndarray:
    """Continuous tIoU of half-open spans (arrays broadcast; float64 out): ``box_ops_bridge_stg.span_iou``,
    ``overlap / ((ge - gs) + (pe - ps) - overlap)``, 0 for touching spans and for an empty union."""
    return span_iou(gt_start, gt_end, pred_start, pred_end)


def _int_rate(frames: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """``int(f * rate)`` exactly as Python computes it (float product, truncation toward zero)."""
    return np.trunc(frames.astype(np.float64) * rate).astype(np.int64)


def tubedetr_grids(
    segment_start: np.ndarray,
    segment_end: np.ndarray,
    fps: np.ndarray,
    target_fps: float = 5.0,
    max_frames: int = 200,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``tubedetr`` scored frames of N segments, packed: ``(offsets (N + 1,), frames (M,))``.

    ``segment_start``/``segment_end``: (N,) int64 half-open segments in original frame ids; ``fps``: (N,)
    float64 video fps (must be ``>= target_fps``, as the reference asserts).

    Reference rule (docs/evaluation.md §4.1): with ``rate = target_fps / fps`` start the list with
    ``segment_start``; for ``f`` in ``segment_start .. segment_end - 2`` append ``f`` when
    ``int(f * rate) > int(last * rate)``; if more than ``max_frames`` remain keep
    ``ids[(j * n) // max_frames]`` for ``j < max_frames``. Since ``int(f * rate)`` never decreases in
    ``f``, the kept frames are the start plus the first frame of every later value ``k`` of
    ``int(f * rate)``; that first frame is found from ``ceil(k / rate)`` and corrected against the
    float expression itself, so the result equals the reference's loop bit for bit.
    """
    s = np.asarray(segment_start, dtype=np.int64)
    e = np.asarray(segment_end, dtype=np.int64)
    rate = float(target_fps) / np.asarray(fps, dtype=np.float64)
    n_q = len(s)
    last = e - 2  # last frame the reference may append
    v0 = _int_rate(s, rate)
    v1 = np.where(last > s, _int_rate(np.maximum(last, s), rate), v0)
    n_new = np.maximum(v1 - v0, 0)
    counts = 1 + n_new
    # values k = v0 + 1 .. v1 for each query, packed
    qk = np.repeat(np.arange(n_q, dtype=np.int64), n_new)
    starts_new = np.concatenate(([0], np.cumsum(n_new)[:-1])) if n_q else np.zeros(0, np.int64)
    k = v0[qk] + 1 + (np.arange(len(qk), dtype=np.int64) - np.repeat(starts_new, n_new))
    r = rate[qk]
    cand = np.ceil(k / r).astype(np.int64)
    cand = np.maximum(cand, s[qk] + 1)
    for _ in range(8):  # first f with int(f * rate) >= k; converges in 1 step in practice
        too_late = (cand - 1 > s[qk]) & (_int_rate(cand - 1, r) >= k)
        too_early = _int_rate(cand, r) < k
        if not (too_late.any() or too_early.any()):
            break
        cand = cand - too_late + too_early
    else:  # pragma: no cover - numerically impossible for fps >= target_fps
        raise AnnotationError("tubedetr grid: could not locate grid frames exactly")
    # interleave the start frame of each query before its new frames
    full_off = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    frames = np.empty(int(full_off[-1]), dtype=np.int64)
    frames[full_off[:-1]] = s
    pos_new = np.repeat(full_off[:-1] + 1, n_new) + (np.arange(len(qk), dtype=np.int64) - np.repeat(starts_new, n_new))
    frames[pos_new] = cand
    over = counts > max_frames
    if not over.any():
        return full_off, frames
    # cap: keep ids[(j * n) // max_frames]
    new_counts = np.minimum(counts, max_frames)
    new_off = np.concatenate(([0], np.cumsum(new_counts))).astype(np.int64)
    qn = np.repeat(np.arange(n_q, dtype=np.int64), new_counts)
    j = np.arange(int(new_off[-1]), dtype=np.int64) - new_off[qn]
    local = np.where(over[qn], (j * counts[qn]) // max_frames, j)
    return new_off, frames[full_off[qn] + local]


def tubedetr_grid(segment_start: int, segment_end: int, fps: float, target_fps: float = 5.0, max_frames: int = 200) -> np.ndarray:
    """The ``tubedetr`` scored frames (int64 array) of one segment ``[segment_start, segment_end)``."""
    _, frames = tubedetr_grids(np.array([segment_start]), np.array([segment_end]), np.array([fps], dtype=np.float64), target_fps, max_frames)
    return frames


# ----------------------------------------------------------------------------------------------
# per-query metrics (the hot path)
# ----------------------------------------------------------------------------------------------
def _counts_in(keys: np.ndarray, q: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per query i, how many sorted composite ``keys`` of query ``q[i]`` lie in frames ``[lo, hi)``."""
    lo_c = np.clip(lo, 0, KEY_BASE - 1)
    hi_c = np.clip(hi, 0, KEY_BASE - 1)
    base = q * KEY_BASE
    return (np.searchsorted(keys, base + hi_c) - np.searchsorted(keys, base + lo_c)).astype(np.int64)


def _lookup_pred_boxes(
    pred: Tubes, q: np.ndarray, f: np.ndarray, interpolate: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted boxes of query ``q[j]`` on frame ``f[j]`` → ``(boxes (m, 4), found (m,) bool)``.

    With ``interpolate`` a missing frame lying strictly between two predicted frames of the same query
    is filled by linear interpolation between those nearest neighbours; nothing is filled outside them.
    """
    keys = pred.query_index * KEY_BASE + pred.frame_ids
    want = q * KEY_BASE + f
    m = len(want)
    out = np.zeros((m, 4), dtype=np.float64)
    if len(keys) == 0:
        return out, np.zeros(m, dtype=bool)
    pos = np.searchsorted(keys, want)
    pos_c = np.minimum(pos, len(keys) - 1)
    found = keys[pos_c] == want
    out[found] = pred.boxes[pos_c[found]]
    if interpolate:
        left = pos - 1
        right = pos
        pq = pred.query_index
        ok = (~found) & (left >= 0) & (right < len(keys))
        idx = np.flatnonzero(ok)
        lft, rgt = left[idx], right[idx]
        same = (pq[lft] == q[idx]) & (pq[rgt] == q[idx])
        idx, lft, rgt = idx[same], lft[same], rgt[same]
        fl = pred.frame_ids[lft].astype(np.float64)
        fr = pred.frame_ids[rgt].astype(np.float64)
        t = ((f[idx] - fl) / (fr - fl))[:, None]
        out[idx] = (1.0 - t) * pred.boxes[lft] + t * pred.boxes[rgt]
        found = found.copy()
        found[idx] = True
    return out, found


def per_query_metrics(
    refs: ReferenceArrays,
    preds: PredictionArrays,
    protocol: str = "tubedetr",
    *,
    interpolate: bool = False,
    stcat_compat: bool = False,
    target_fps: float = 5.0,
    max_frames: int = 200,
) -> dict[str, np.ndarray]:
    """Per-query numbers for N aligned queries; every array has shape (N,).

    Keys: ``tIoU``, ``vIoU``, ``sIoU`` (float64 in [0, 1]); ``n_union`` (#E_U), ``n_inter`` (#E_I: scored
    frames of the span intersection), ``n_gt`` (#E_G: scored GT frames with a GT box),
    ``gt_frames_without_box`` (scored frames of the GT span that have no GT box: they are not scorable
    and are left out of E_U and E_I, except by ``hcstvg`` which keeps its script's denominator), ``missing_boxes``
    (E_G frames without a predicted box, after interpolation), ``missing_boxes_in_span`` (those inside
    the span intersection, i.e. the ones that lower vIoU), ``has_prediction`` (bool). Queries without a
    prediction score 0 everywhere. See the module docstring for the protocols.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
    n = len(refs)
    has = preds.has_pred
    gs, ge = refs.tube[:, 0], refs.tube[:, 1]
    ps = np.where(has, preds.span[:, 0], gs)
    pe = np.where(has, preds.span[:, 1], ge)
    ge_i = ge - 1 if (protocol == "dense" and stcat_compat) else ge  # GT end used in tIoU / E_U / E_I
    lo_u, hi_u = np.minimum(gs, ps), np.maximum(ge_i, pe)
    lo_i, hi_i = np.maximum(gs, ps), np.minimum(ge_i, pe)

    # ---- the scored GT frames E_G: query index gq, frame gf, GT box index gidx
    gt = refs.gt
    gt_q = gt.query_index
    gt_keys = gt_q * KEY_BASE + gt.frame_ids
    if protocol in ("tubedetr", "sampled"):
        if protocol == "tubedetr":
            if np.any(refs.fps < target_fps):
                i = int(np.flatnonzero(refs.fps < target_fps)[0])
                raise AnnotationError(f"reference query {refs.query_ids[i]!r}: field 'fps': {refs.fps[i]} < {target_fps} (the tubedetr grid needs fps >= {target_fps})")
            e_off, e_fr = tubedetr_grids(refs.segment[:, 0], refs.segment[:, 1], refs.fps, target_fps, max_frames)
        else:
            given = preds.has_sampled if preds.has_sampled is not None else np.zeros(n, dtype=bool)
            bad = np.flatnonzero(has & ~given)
            if bad.size:
                raise PredictionError(f"query {refs.query_ids[int(bad[0])]!r}: field 'sampled_frame_ids': required by the 'sampled' protocol")
            if preds.sampled is None:
                s_off, s_fr = np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
            else:
                s_off, s_fr = preds.sampled
            s_q = np.repeat(np.arange(n, dtype=np.int64), np.diff(s_off))
            keep = (s_fr >= refs.segment[s_q, 0]) & (s_fr < refs.segment[s_q, 1])
            e_fr = s_fr[keep]
            e_off = np.concatenate(([0], np.cumsum(np.bincount(s_q[keep], minlength=n)))).astype(np.int64)
        e_q = np.repeat(np.arange(n, dtype=np.int64), np.diff(e_off))
        e_keys = e_q * KEY_BASE + e_fr
        n_union = _counts_in(e_keys, np.arange(n, dtype=np.int64), lo_u, hi_u)
        n_inter = _counts_in(e_keys, np.arange(n, dtype=np.int64), lo_i, np.maximum(hi_i, lo_i))
        cand = np.flatnonzero((e_fr >= gs[e_q]) & (e_fr < ge[e_q]))
        pos = np.searchsorted(gt_keys, e_keys[cand])
        pos_c = np.minimum(pos, max(len(gt_keys) - 1, 0))
        hit = (pos < len(gt_keys)) & (gt_keys[pos_c] == e_keys[cand]) if len(gt_keys) else np.zeros(len(cand), bool)
        gq, gf, gidx = e_q[cand[hit]], e_fr[cand[hit]], pos_c[hit]
        # scored frames of the GT span without a GT box are not scorable: out of E_U and E_I
        nq, nf = e_q[cand[~hit]], e_fr[cand[~hit]]
        no_gt = np.bincount(nq, minlength=n).astype(np.int64)
        no_gt_inter = np.bincount(nq, weights=(nf >= lo_i[nq]) & (nf < hi_i[nq]), minlength=n).astype(np.int64)
    else:  # dense, hcstvg: every integer frame; E_G = the GT frames inside the tube
        inside = (gt.frame_ids >= gs[gt_q]) & (gt.frame_ids < ge[gt_q])
        gidx = np.flatnonzero(inside)
        gq, gf = gt_q[gidx], gt.frame_ids[gidx]
        n_union = hi_u - lo_u
        n_inter = np.maximum(hi_i - lo_i, 0)
        if protocol == "dense":  # tube frames without a GT box are not scorable: out of E_U and E_I
            with_box_u = np.bincount(gq, weights=gf < ge_i[gq], minlength=n).astype(np.int64)
            with_box_i = np.bincount(gq, weights=(gf >= lo_i[gq]) & (gf < hi_i[gq]), minlength=n).astype(np.int64)
            no_gt = np.maximum(ge_i - gs, 0) - with_box_u
            no_gt_inter = n_inter - with_box_i
        else:  # hcstvg: the script's denominator, literally
            no_gt = np.zeros(n, dtype=np.int64)
            no_gt_inter = np.zeros(n, dtype=np.int64)

    pbox, found = _lookup_pred_boxes(preds.boxes, gq, gf, interpolate)
    iou = np.where(found, box_iou(pbox, gt.boxes[gidx]), 0.0)
    in_span = (gf >= lo_i[gq]) & (gf < hi_i[gq])
    if protocol == "hcstvg":
        in_num = found  # GT frames with a predicted box; the predicted span is not consulted
        n_inter = np.bincount(gq, weights=found, minlength=n).astype(np.int64)
    else:
        in_num = in_span
    n_gt = np.bincount(gq, minlength=n).astype(np.int64)
    n_union = n_union - no_gt
    if protocol != "hcstvg":
        n_inter = n_inter - no_gt_inter
    v_sum = np.bincount(gq, weights=np.where(in_num, iou, 0.0), minlength=n)
    s_sum = np.bincount(gq, weights=iou, minlength=n)
    missing = np.bincount(gq, weights=~found, minlength=n).astype(np.int64)
    missing_span = np.bincount(gq, weights=(~found) & in_span, minlength=n).astype(np.int64)

    viou = v_sum / np.maximum(n_union, 1)
    siou = s_sum / np.maximum(n_gt, 1)
    if protocol == "hcstvg":
        tiou = n_inter / np.maximum(n_union, 1)
    else:
        tiou = temporal_iou(gs, ge_i, ps, pe)
    zero = ~has
    return {
        "tIoU": np.where(zero, 0.0, tiou),
        "vIoU": np.where(zero, 0.0, viou),
        "sIoU": np.where(zero, 0.0, siou),
        "n_union": np.where(zero, 0, n_union),
        "n_inter": np.where(zero, 0, n_inter),
        "n_gt": n_gt,
        "gt_frames_without_box": no_gt,
        "missing_boxes": np.where(zero, n_gt, missing),
        "missing_boxes_in_span": np.where(zero, 0, missing_span),
        "has_prediction": has.copy(),
    }


# ----------------------------------------------------------------------------------------------
# aggregation
# ----------------------------------------------------------------------------------------------
def aggregate(per_query: Mapping[str, np.ndarray], mask: np.ndarray | None = None) -> dict[str, float | int | None]:
    """Means over the queries selected by ``mask`` ((N,) bool; all when None).

    Returns ``m_tIoU``, ``m_vIoU``, ``vIoU@0.3``, ``vIoU@0.5`` (strict ``>``), ``m_sIoU`` as fractions and
    ``num_queries``; the metric values are None for an empty group.
    """
    t = per_query["tIoU"] if mask is None else per_query["tIoU"][mask]
    v = per_query["vIoU"] if mask is None else per_query["vIoU"][mask]
    s = per_query["sIoU"] if mask is None else per_query["sIoU"][mask]
    n = int(len(t))
    if n == 0:
        return {"m_tIoU": None, "m_vIoU": None, "vIoU@0.3": None, "vIoU@0.5": None, "m_sIoU": None, "num_queries": 0}
    return {
        "m_tIoU": float(np.mean(t)),
        "m_vIoU": float(np.mean(v)),
        "vIoU@0.3": float(np.mean(v > 0.3)),
        "vIoU@0.5": float(np.mean(v > 0.5)),
        "m_sIoU": float(np.mean(s)),
        "num_queries": n,
    }


def summarize(
    refs: ReferenceArrays,
    per_query: Mapping[str, np.ndarray],
    protocol: str,
    params: Mapping[str, Any],
    missing_ids: Sequence[str] = (),
) -> dict[str, Any]:
    """The result dict printed by ``bridge-stg evaluate --json``.

    ``{"protocol", "protocol_params", "all", "declarative", "interrogative", "avg_m_vIoU",
    "missing_predictions": {"count", "first_ids"}, "missing_boxes": {...}}``. ``avg_m_vIoU`` is
    ``(m_vIoU_declarative + m_vIoU_interrogative) / 2`` (VidSTG's "average m_vIoU"), None unless both
    groups are non-empty.
    """
    out: dict[str, Any] = {"protocol": protocol, "protocol_params": dict(params), "all": aggregate(per_query)}
    for code, name in enumerate(QUERY_TYPES):
        out[name] = aggregate(per_query, refs.query_type == code)
    d, i = out["declarative"]["m_vIoU"], out["interrogative"]["m_vIoU"]
    out["avg_m_vIoU"] = None if d is None or i is None else (d + i) / 2.0
    has = per_query["has_prediction"]
    mb = per_query["missing_boxes"][has]
    out["missing_predictions"] = {"count": len(missing_ids), "first_ids": list(missing_ids[:_FIRST_IDS])}
    with_missing = np.flatnonzero(has & (per_query["missing_boxes"] > 0))
    out["missing_boxes"] = {
        "count": int(mb.sum()),
        "in_span_count": int(per_query["missing_boxes_in_span"][has].sum()),
        "queries": int(len(with_missing)),
        "first_ids": [refs.query_ids[k] for k in with_missing[:_FIRST_IDS]],
    }
    return out


def protocol_params(protocol: str, *, interpolate: bool, stcat_compat: bool, target_fps: float, max_frames: int) -> dict[str, Any]:
    """The parameters that define a run, recorded next to every number."""
    p: dict[str, Any] = {"interpolate": bool(interpolate)}
    if protocol == "tubedetr":
        p.update(fps=float(target_fps), max_frames=int(max_frames), last_segment_frame_scored=False)
    elif protocol == "dense":
        p.update(stcat_compat=bool(stcat_compat))
    elif protocol == "sampled":
        p.update(frames="prediction sampled_frame_ids within the segment")
    else:
        p.update(frames="GT frames with a predicted box; denominator max end - min start")
    return p


def compute_stvg_metrics(
    references: Iterable[Mapping[str, Any]],
    predictions: Iterable[Mapping[str, Any]],
    protocol: str = "tubedetr",
    *,
    interpolate: bool = False,
    stcat_compat: bool = False,
    target_fps: float = 5.0,
    max_frames: int = 200,
    return_per_query: bool = False,
) -> dict[str, Any]:
    """Score canonical prediction rows against canonical reference rows.

    ``references``: dicts with ``query_id, fps, segment_start, segment_end, tube_start, tube_end,
    frame_ids, boxes`` (+ optional ``query_type``); ``predictions``: dicts with ``query_id, span,
    frame_ids, boxes`` (+ optional ``scores``, ``sampled_frame_ids``, ``span_source``). Returns the dict
    of :func:`summarize` (the CLI's ``--json`` output); with ``return_per_query`` it also holds
    ``"per_query"``: a dict of lists (``query_id``, ``query_type`` and the keys of
    :func:`per_query_metrics`).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
    if stcat_compat and protocol != "dense":
        raise ValueError("stcat_compat applies to the 'dense' protocol only")
    refs = pack_references(references)
    preds, missing = pack_predictions(predictions, refs)
    pq = per_query_metrics(refs, preds, protocol, interpolate=interpolate, stcat_compat=stcat_compat,
                           target_fps=target_fps, max_frames=max_frames)
    params = protocol_params(protocol, interpolate=interpolate, stcat_compat=stcat_compat, target_fps=target_fps, max_frames=max_frames)
    out = summarize(refs, pq, protocol, params, missing)
    if return_per_query:
        out["per_query"] = per_query_table(refs, preds, pq)
    return out


def per_query_table(refs: ReferenceArrays, preds: PredictionArrays, per_query: Mapping[str, np.ndarray]) -> dict[str, list[Any]]:
    """Column-wise per-query report (for the CSV): ids, query type, span source and every metric."""
    names = {0: "declarative", 1: "interrogative", -1: None}
    table: dict[str, list[Any]] = {
        "query_id": list(refs.query_ids),
        "query_type": [names[int(c)] for c in refs.query_type],
        "span_source": list(preds.span_source) if preds.span_source else [None] * len(refs),
    }
    for k, v in per_query.items():
        table[k] = v.tolist()
    return table


def flatten_results(result: Mapping[str, Any]) -> dict[str, float]:
    """Flatten a result dict for ``Trainer.compute_metrics``: ``{"m_vIoU": ..., "declarative/m_vIoU": ...}``.

    Keys of the ``all`` group have no prefix; empty groups and None values are left out.
    """
    flat: dict[str, float] = {}
    for group in ("all",) + QUERY_TYPES:
        for k, v in result.get(group, {}).items():
            if v is not None:
                flat[k if group == "all" else f"{group}/{k}"] = float(v)
    if result.get("avg_m_vIoU") is not None:
        flat["avg_m_vIoU"] = float(result["avg_m_vIoU"])
    return flat


__all__ = [
    "PROTOCOLS", "QUERY_TYPES", "METRIC_KEYS", "Tubes", "ReferenceArrays", "PredictionArrays",
    "box_iou", "temporal_iou", "tubedetr_grid", "tubedetr_grids", "pack_references", "pack_predictions",
    "per_query_metrics", "aggregate", "summarize", "protocol_params", "compute_stvg_metrics",
    "per_query_table", "flatten_results",
]
