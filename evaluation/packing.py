"""Packing the rows of ``bridge-stg evaluate`` into arrays, with validation (docs/evaluation.md §2, docs/schema.md).

Reference and prediction rows (``docs/schema.md``) become packed arrays for the vectorised metric core of
:mod:`bridge_stg.evaluation.metrics`: variable-length per-query data (tubes, frame sets) is one flat array
plus an ``offsets`` array of shape ``(N + 1,)``, so query ``i`` owns items ``offsets[i]:offsets[i + 1]``.
Every error names the query and the field (:class:`AnnotationError` for references, :class:`PredictionError`
for predictions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from bridge_stg.errors_bridge_stg import AnnotationError, PredictionError

QUERY_TYPES = ("declarative", "interrogative")
#: aliases seen in the wild (STCAT caches say ``declar`` / ``inter``)
QUERY_TYPE_ALIASES = {"declarative": 0, "declar": 0, "interrogative": 1, "inter": 1}
#: frame ids must lie in ``[0, KEY_BASE - 2]`` so that composite keys stay ordered per query
KEY_BASE = np.int64(1) << np.int64(32)
_FIRST_IDS = 10


# ----------------------------------------------------------------------------------------------
# packed containers
# ----------------------------------------------------------------------------------------------
@dataclass
class Tubes:
    """Per-query boxes, packed.

    ``offsets``: (N + 1,) int64, ``offsets[0] == 0``; ``frame_ids``: (M,) int64, strictly increasing
    inside each query; ``boxes``: (M, 4) float64 ``[x1, y1, x2, y2]`` pixels.
    """

    offsets: np.ndarray
    frame_ids: np.ndarray
    boxes: np.ndarray

    @property
    def query_index(self) -> np.ndarray:
        """(M,) int64: the query each item belongs to."""
        return np.repeat(np.arange(len(self.offsets) - 1, dtype=np.int64), np.diff(self.offsets))


@dataclass
class ReferenceArrays:
    """N reference queries as arrays.

    ``query_ids``: list of N str; ``query_type``: (N,) int8, 0 declarative, 1 interrogative, -1 none;
    ``segment``/``tube``: (N, 2) int64 half-open ``[start, end)``; ``fps``: (N,) float64;
    ``gt``: the GT boxes (:class:`Tubes`).
    """

    query_ids: list[str]
    query_type: np.ndarray
    segment: np.ndarray
    tube: np.ndarray
    fps: np.ndarray
    gt: Tubes

    def __len__(self) -> int:
        return len(self.query_ids)


@dataclass
class PredictionArrays:
    """Predictions aligned with a :class:`ReferenceArrays` (row i belongs to reference i).

    ``has_pred``: (N,) bool, False where the reference query has no prediction (it scores 0);
    ``span``: (N, 2) int64 half-open ``[ps, pe)`` (meaningless where ``has_pred`` is False);
    ``boxes``: the predicted boxes (:class:`Tubes`); ``sampled``: ``(offsets (N + 1,), frames (K,))``
    of the frames the model saw, or None when no prediction carries them; ``has_sampled``: (N,) bool;
    ``span_source``: list of N str or None, carried to the per-query report.
    """

    has_pred: np.ndarray
    span: np.ndarray
    boxes: Tubes
    sampled: tuple[np.ndarray, np.ndarray] | None = None
    has_sampled: np.ndarray | None = None
    span_source: list[str | None] = field(default_factory=list)



# ----------------------------------------------------------------------------------------------
# packing rows (validation with messages naming the query and the field)
# ----------------------------------------------------------------------------------------------
def _as_int(value: Any, err: type[Exception], where: str) -> int:
    if isinstance(value, bool) or value is None:
        raise err(f"{where}: expected an integer, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    raise err(f"{where}: expected an integer, got {value!r}")


def _pack_tubes(
    frame_lists: Sequence[Any], box_lists: Sequence[Any], names: Sequence[str], err: type[Exception], what: str
) -> Tubes:
    """Pack per-query ``frame_ids`` / ``boxes`` lists, sort by frame, validate, and name offenders.

    Fast path: flatten with ``itertools.chain`` into ``np.fromiter`` (no per-query array building);
    anything unexpected (ragged boxes, non-numbers, length mismatches) falls back to the per-query path,
    which raises an error naming the query and the field.
    """
    frame_lists = [[] if fr is None else fr for fr in frame_lists]
    box_lists = [[] if bx is None else bx for bx in box_lists]
    tubes = _pack_tubes_fast(frame_lists, box_lists)
    if tubes is not None:
        _validate_tubes(tubes, names, err, what)
        return tubes
    n = len(frame_lists)
    counts = np.zeros(n, dtype=np.int64)
    f_parts: list[np.ndarray] = []
    b_parts: list[np.ndarray] = []
    for i in range(n):
        fr = frame_lists[i]
        bx = box_lists[i]
        fr = np.asarray([] if fr is None else fr)
        bx = np.asarray([] if bx is None else bx, dtype=np.float64)
        if bx.size == 0:
            bx = bx.reshape(0, 4)
        if fr.ndim != 1 or (fr.size and not (np.issubdtype(fr.dtype, np.integer) or _all_integral(fr))):
            raise err(f"{what} of query {names[i]!r}: field 'frame_ids': expected a list of integers")
        if bx.ndim != 2 or bx.shape[1] != 4:
            raise err(f"{what} of query {names[i]!r}: field 'boxes': expected a list of [x1, y1, x2, y2], got shape {bx.shape}")
        if len(fr) != len(bx):
            raise err(f"{what} of query {names[i]!r}: fields 'frame_ids'/'boxes': {len(fr)} frame ids but {len(bx)} boxes")
        counts[i] = len(fr)
        f_parts.append(fr.astype(np.int64, copy=False))
        b_parts.append(bx)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    frames = np.concatenate(f_parts) if f_parts else np.zeros(0, np.int64)
    boxes = np.concatenate(b_parts) if b_parts else np.zeros((0, 4))
    tubes = Tubes(offsets, frames.astype(np.int64, copy=False), boxes.reshape(-1, 4))
    _validate_tubes(tubes, names, err, what)
    return tubes


def _pack_tubes_fast(frame_lists: Sequence[Any], box_lists: Sequence[Any]) -> Tubes | None:
    """Flatten well-formed lists straight into arrays; None when anything looks off (use the slow path)."""
    n = len(frame_lists)
    try:
        n_f = np.fromiter(map(len, frame_lists), dtype=np.int64, count=n)
        n_b = np.fromiter(map(len, box_lists), dtype=np.int64, count=n)
        if not np.array_equal(n_f, n_b):
            return None
        m = int(n_f.sum())
        if m and set(map(len, chain.from_iterable(box_lists))) != {4}:
            return None
        frames_f = np.fromiter(chain.from_iterable(frame_lists), dtype=np.float64, count=m)
        boxes = np.fromiter(chain.from_iterable(chain.from_iterable(box_lists)), dtype=np.float64, count=4 * m)
    except (TypeError, ValueError):
        return None
    if not np.all(frames_f == np.round(frames_f)):  # also rejects NaN / inf frame ids
        return None
    offsets = np.concatenate(([0], np.cumsum(n_f))).astype(np.int64)
    return Tubes(offsets, frames_f.astype(np.int64), boxes.reshape(m, 4))


def _all_integral(a: np.ndarray) -> bool:
    try:
        f = a.astype(np.float64)
    except (TypeError, ValueError):
        return False
    return bool(np.all(np.isfinite(f)) and np.all(f == np.round(f)))


def _validate_tubes(tubes: Tubes, names: Sequence[str], err: type[Exception], what: str) -> None:
    """Sort every query's items by frame (in place) and check frames / boxes; vectorised."""
    q = tubes.query_index
    fr, bx = tubes.frame_ids, tubes.boxes

    def name_of(item: int) -> str:
        return names[int(q[item])]

    bad = np.flatnonzero((fr < 0) | (fr > KEY_BASE - 2))
    if bad.size:
        i = bad[0]
        raise err(f"{what} of query {name_of(i)!r}: field 'frame_ids': frame {int(fr[i])} is out of range (frame ids are >= 0)")
    same_q = np.diff(q) == 0
    if np.any(np.diff(fr)[same_q] < 0):  # not sorted inside some query: sort by (query, frame)
        order = np.lexsort((fr, q))
        tubes.frame_ids = fr = fr[order]
        tubes.boxes = bx = bx[order]
    dup = np.flatnonzero((np.diff(fr) == 0) & (np.diff(q) == 0))
    if dup.size:
        i = dup[0]
        raise err(f"{what} of query {name_of(i)!r}: field 'frame_ids': frame {int(fr[i])} appears twice")
    finite = np.isfinite(bx).all(axis=1)
    bad = np.flatnonzero(~finite)
    if bad.size:
        i = bad[0]
        raise err(f"{what} of query {name_of(i)!r}: field 'boxes': non-finite box {bx[i].tolist()} on frame {int(fr[i])}")
    bad = np.flatnonzero((bx[:, 2] < bx[:, 0]) | (bx[:, 3] < bx[:, 1]))
    if bad.size:
        i = bad[0]
        raise err(f"{what} of query {name_of(i)!r}: field 'boxes': inverted box {bx[i].tolist()} on frame {int(fr[i])} (need x2 >= x1 and y2 >= y1)")


def _or_empty(value: Any) -> Any:
    """``value``, or an empty list for None (works for lists and numpy arrays alike)."""
    return [] if value is None else value


def _query_type_code(value: Any, qid: str) -> int:
    if value is None:
        return -1
    if isinstance(value, str) and value.lower() in QUERY_TYPE_ALIASES:
        return QUERY_TYPE_ALIASES[value.lower()]
    raise AnnotationError(f"reference query {qid!r}: field 'query_type': {value!r} is not declarative / interrogative / null")


def pack_references(rows: Iterable[Mapping[str, Any]], source: str = "references") -> ReferenceArrays:
    """Validate canonical reference rows and pack them (see :class:`ReferenceArrays`).

    Required fields: ``query_id``, ``fps``, ``segment_start``, ``segment_end``, ``tube_start``,
    ``tube_end``, ``frame_ids``, ``boxes``; ``query_type`` is optional (null = no group). Raises
    :class:`AnnotationError` naming ``source``, the query and the field.
    """
    rows = list(rows)
    n = len(rows)
    ids: list[str] = []
    seen: set[str] = set()
    qtype = np.full(n, -1, dtype=np.int8)
    seg = np.zeros((n, 2), dtype=np.int64)
    tube = np.zeros((n, 2), dtype=np.int64)
    fps = np.zeros(n, dtype=np.float64)
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise AnnotationError(f"{source}: row {i}: expected an object, got {type(r).__name__}")
        if "query_id" not in r or r["query_id"] is None:
            raise AnnotationError(f"{source}: row {i}: field 'query_id': missing")
        qid = str(r["query_id"])
        if qid in seen:
            raise AnnotationError(f"{source}: reference query {qid!r}: field 'query_id': duplicate id")
        seen.add(qid)
        ids.append(qid)
        for key in ("segment_start", "segment_end", "tube_start", "tube_end", "fps", "frame_ids", "boxes"):
            if key not in r:
                raise AnnotationError(f"{source}: reference query {qid!r}: field {key!r}: missing")
        where = f"{source}: reference query {qid!r}: field"
        seg[i] = (_as_int(r["segment_start"], AnnotationError, f"{where} 'segment_start'"), _as_int(r["segment_end"], AnnotationError, f"{where} 'segment_end'"))
        tube[i] = (_as_int(r["tube_start"], AnnotationError, f"{where} 'tube_start'"), _as_int(r["tube_end"], AnnotationError, f"{where} 'tube_end'"))
        f = r["fps"]
        if isinstance(f, bool) or not isinstance(f, (int, float, np.integer, np.floating)) or not math.isfinite(f) or f <= 0:
            raise AnnotationError(f"{where} 'fps': expected a positive number, got {f!r}")
        fps[i] = float(f)
        qtype[i] = _query_type_code(r.get("query_type"), qid)
    bad = np.flatnonzero((seg[:, 1] <= seg[:, 0]) | (seg[:, 0] < 0))
    if bad.size:
        i = bad[0]
        raise AnnotationError(f"{source}: reference query {ids[i]!r}: fields 'segment_start'/'segment_end': invalid segment [{seg[i, 0]}, {seg[i, 1]})")
    bad = np.flatnonzero((tube[:, 1] <= tube[:, 0]) | (tube[:, 0] < 0))
    if bad.size:
        i = bad[0]
        raise AnnotationError(f"{source}: reference query {ids[i]!r}: fields 'tube_start'/'tube_end': empty or inverted tube [{tube[i, 0]}, {tube[i, 1]})")
    gt = _pack_tubes([r["frame_ids"] for r in rows], [r["boxes"] for r in rows], ids, AnnotationError, f"{source}: reference")
    return ReferenceArrays(ids, qtype, seg, tube, fps, gt)


def pack_predictions(
    rows: Iterable[Mapping[str, Any]], refs: ReferenceArrays, source: str = "predictions"
) -> tuple[PredictionArrays, list[str]]:
    """Validate prediction rows, align them with ``refs`` and pack them.

    Returns ``(PredictionArrays, missing_ids)`` where ``missing_ids`` lists (in reference order) the
    reference queries without a prediction. A row whose ``span`` is None counts as no prediction (the
    ``evaluate`` module needs one row per reference). Raises :class:`PredictionError` naming the query
    for unknown or duplicate ids, a span that is not two integers or is empty / inverted (``pe <= ps``),
    frame ids / boxes of different lengths, negative or repeated frame ids, NaN / inf or inverted boxes.
    """
    index = {q: i for i, q in enumerate(refs.query_ids)}
    n = len(refs)
    row_of = np.full(n, -1, dtype=np.int64)
    rows = list(rows)
    span = np.zeros((n, 2), dtype=np.int64)
    frames: list[Any] = [None] * n
    boxes: list[Any] = [None] * n
    sampled: list[Any] = [None] * n
    span_source: list[str | None] = [None] * n
    for k, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise PredictionError(f"{source}: row {k}: expected an object, got {type(r).__name__}")
        if r.get("query_id") is None:
            raise PredictionError(f"{source}: row {k}: field 'query_id': missing")
        qid = str(r["query_id"])
        if qid not in index:
            raise PredictionError(f"{source}: prediction for unknown query {qid!r} (row {k}): no reference has this query_id")
        i = index[qid]
        if row_of[i] >= 0:
            raise PredictionError(f"{source}: query {qid!r}: duplicate prediction (rows {row_of[i]} and {k})")
        row_of[i] = k
        sp = r.get("span")
        if sp is None:
            row_of[i] = -2  # explicitly empty: counted as missing
            continue
        if not isinstance(sp, (list, tuple, np.ndarray)) or len(sp) != 2:
            raise PredictionError(f"{source}: query {qid!r}: field 'span': expected [start, end), got {sp!r}")
        a = _as_int(sp[0], PredictionError, f"{source}: query {qid!r}: field 'span'")
        b = _as_int(sp[1], PredictionError, f"{source}: query {qid!r}: field 'span'")
        if b <= a:
            raise PredictionError(f"{source}: query {qid!r}: field 'span': empty or inverted span [{a}, {b}) (need end > start)")
        span[i] = (a, b)
        frames[i] = _or_empty(r.get("frame_ids"))
        boxes[i] = _or_empty(r.get("boxes"))
        if r.get("sampled_frame_ids") is not None:
            sampled[i] = r["sampled_frame_ids"]
        src = r.get("span_source")
        span_source[i] = None if src is None else str(src)
    has = row_of >= 0
    tubes = _pack_tubes(frames, boxes, refs.query_ids, PredictionError, f"{source}: prediction")
    has_sampled = np.array([s is not None for s in sampled], dtype=bool)
    packed_sampled = None
    if has_sampled.any():
        lists = [[] if s is None else s for s in sampled]
        counts = np.fromiter(map(len, lists), dtype=np.int64, count=n)
        try:
            flat = np.fromiter(chain.from_iterable(lists), dtype=np.float64, count=int(counts.sum()))
        except (TypeError, ValueError):
            flat = None
        if flat is None or not np.all(flat == np.round(flat)):
            bad = next(i for i, x in enumerate(lists) if not _all_integral(np.asarray(x)))
            raise PredictionError(f"{source}: query {refs.query_ids[bad]!r}: field 'sampled_frame_ids': expected a list of integers")
        st = Tubes(np.concatenate(([0], np.cumsum(counts))).astype(np.int64), flat.astype(np.int64), np.zeros((len(flat), 4)))
        _validate_tubes(st, refs.query_ids, PredictionError, f"{source}: prediction (sampled_frame_ids)")
        packed_sampled = (st.offsets, st.frame_ids)
    missing = [refs.query_ids[i] for i in np.flatnonzero(~has)]
    return PredictionArrays(has, span, tubes, packed_sampled, has_sampled, span_source), missing


__all__ = ["Tubes", "ReferenceArrays", "PredictionArrays", "pack_references", "pack_predictions", "QUERY_TYPES",
           "KEY_BASE"]
