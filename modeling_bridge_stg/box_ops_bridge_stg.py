"""Box and span arithmetic of Bridge-STG: one implementation for the model (torch), the processor and the metric (numpy).

Self-contained remote code: imports only numpy and torch.

Conventions (docs/method.md §3.12):

* ``cxcywh``: ``(cx, cy, w, h)``, the model's normalised boxes (fractions of the full frame);
* ``xyxy``: ``(x1, y1, x2, y2)``, continuous coordinates, area ``(x2 - x1) * (y2 - y1)`` with no +1 (pixels in
  outputs, datasets and the metric; fractions inside the losses);
* spans are half-open ``[start, end)`` (frame ids or seconds).

Every function is element-wise over the leading dimensions and takes either numpy arrays or torch tensors
(the result has the input's type). Divisions by an empty union give 0: exactly in numpy (the metric), through
a tiny clamp in torch (keeps the loss differentiable).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch


def _is_torch(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _stack(parts: Sequence[Any], like: Any) -> Any:
    return torch.stack(list(parts), dim=-1) if _is_torch(like) else np.stack(parts, axis=-1)


def _at_least_zero(x: Any) -> Any:
    return x.clamp(min=0) if _is_torch(x) else np.clip(x, 0.0, None)


def _maximum(a: Any, b: Any) -> Any:
    return torch.maximum(a, b) if _is_torch(a) else np.maximum(a, b)


def _minimum(a: Any, b: Any) -> Any:
    return torch.minimum(a, b) if _is_torch(a) else np.minimum(a, b)


def _ratio(num: Any, den: Any) -> Any:
    """``num / den``, 0 where ``den <= 0``."""
    if _is_torch(num):
        return num / den.clamp(min=1e-7)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _as_float(x: Any) -> Any:
    return x if _is_torch(x) else np.asarray(x, dtype=np.float64)


def box_cxcywh_to_xyxy(boxes: Any) -> Any:
    """``(..., 4)`` ``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``."""
    b = _as_float(boxes)
    cx, cy, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return _stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], b)


def box_xyxy_to_cxcywh(boxes: Any) -> Any:
    """``(..., 4)`` ``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)``."""
    b = _as_float(boxes)
    x1, y1, x2, y2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return _stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], b)


def clip_boxes_xyxy(boxes: Any, width: float, height: float) -> Any:
    """``(..., 4)`` xyxy boxes clamped to the image ``[0, width] x [0, height]``."""
    b = _as_float(boxes)
    if _is_torch(b):
        x = b[..., 0::2].clamp(0.0, float(width))
        y = b[..., 1::2].clamp(0.0, float(height))
    else:
        x, y = np.clip(b[..., 0::2], 0.0, width), np.clip(b[..., 1::2], 0.0, height)
    return _stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], b)


def box_area(boxes: Any) -> Any:
    """``(..., 4)`` xyxy -> ``(...)`` area (negative extents count as 0)."""
    b = _as_float(boxes)
    return _at_least_zero(b[..., 2] - b[..., 0]) * _at_least_zero(b[..., 3] - b[..., 1])


def _intersection_union(a: Any, b: Any) -> tuple[Any, Any]:
    iw = _at_least_zero(_minimum(a[..., 2], b[..., 2]) - _maximum(a[..., 0], b[..., 0]))
    ih = _at_least_zero(_minimum(a[..., 3], b[..., 3]) - _maximum(a[..., 1], b[..., 1]))
    inter = iw * ih
    return inter, box_area(a) + box_area(b) - inter


def box_iou(a: Any, b: Any) -> Any:
    """Element-wise IoU of xyxy boxes ``(..., 4)`` -> ``(...)``; an empty union gives 0."""
    a, b = _as_float(a), _as_float(b)
    inter, union = _intersection_union(a, b)
    return _ratio(inter, union)


def generalized_box_iou(a: Any, b: Any) -> Any:
    """Element-wise GIoU of xyxy boxes ``(..., 4)`` -> ``(...)`` in ``[-1, 1]``; degenerate boxes give finite values."""
    a, b = _as_float(a), _as_float(b)
    inter, union = _intersection_union(a, b)
    iou = _ratio(inter, union)
    hull_w = _at_least_zero(_maximum(a[..., 2], b[..., 2]) - _minimum(a[..., 0], b[..., 0]))
    hull_h = _at_least_zero(_maximum(a[..., 3], b[..., 3]) - _minimum(a[..., 1], b[..., 1]))
    hull = hull_w * hull_h
    return iou - _ratio(hull - union, hull)


def span_iou(start_a: Any, end_a: Any, start_b: Any, end_b: Any) -> Any:
    """Continuous IoU of half-open spans ``[start_a, end_a)`` and ``[start_b, end_b)`` (broadcast).

    ``overlap / (len_a + len_b - overlap)``; touching spans give 0, an empty union gives 0.
    """
    sa, ea, sb, eb = (_as_float(v) for v in (start_a, end_a, start_b, end_b))
    overlap = _at_least_zero(_minimum(ea, eb) - _maximum(sa, sb))
    return _ratio(overlap, (ea - sa) + (eb - sb) - overlap)


def round_half_up(x: float) -> int:
    """Round to the nearest integer, halves up (seconds x fps -> frame numbers)."""
    return int(math.floor(x + 0.5))


# ----------------------------------------------------------------------------- ground-truth boxes on sampled frames
def box_table(boxes: Any) -> dict[int, list[float]]:
    """Annotated boxes ``{frame_id: [x1, y1, x2, y2]}`` from a dict ``{frame_id: box}`` or
    ``{"frame_ids": [...], "boxes": [...]}`` (``None``: no boxes). Raises ``ValueError`` naming the bad entry."""
    if boxes is None:
        return {}
    if isinstance(boxes, Mapping) and "frame_ids" in boxes and "boxes" in boxes:
        fids, bxs = list(boxes["frame_ids"]), list(boxes["boxes"])
        if len(fids) != len(bxs):
            raise ValueError(f"{len(fids)} frame_ids for {len(bxs)} boxes")
        pairs = zip(fids, bxs)
    elif isinstance(boxes, Mapping):
        pairs = boxes.items()
    else:
        raise ValueError(f"boxes must be a dict frame_id -> box or {{'frame_ids', 'boxes'}}, got {type(boxes).__name__}")
    table = {}
    for f, b in pairs:
        arr = np.asarray(b, dtype=np.float64)
        if arr.shape != (4,) or not np.all(np.isfinite(arr)) or arr[2] < arr[0] or arr[3] < arr[1]:
            raise ValueError(f"frame {f}: invalid box {b!r} (need finite x1<=x2, y1<=y2)")
        table[int(f)] = arr.tolist()
    return table


def boxes_on_frames(
    frame_ids: Sequence[int], span: tuple[int, int], table: Mapping[int, Sequence[float]], width: float, height: float,
) -> tuple[list[list[float]], list[bool]]:
    """The ground-truth box of every sampled frame inside the half-open ``span``, normalised cxcywh.

    A frame gets its annotated pixel box, or the linear interpolation between the nearest annotated frames
    before and after it; frames outside the span or outside the annotated range get no box (mask False).
    Pixel boxes are clamped to the ``width`` x ``height`` image first.
    """
    known = np.array(sorted(table), dtype=np.int64)
    size = np.array([width, height, width, height], dtype=np.float64)
    out_boxes, mask = [], []
    for f in frame_ids:
        box = None
        if span[0] <= f < span[1] and known.size:
            if f in table:
                box = np.asarray(table[f], dtype=np.float64)
            else:
                j = int(np.searchsorted(known, f))
                if 0 < j < known.size:
                    f0, f1 = int(known[j - 1]), int(known[j])
                    w = (f - f0) / (f1 - f0)
                    box = (1 - w) * np.asarray(table[f0], dtype=np.float64) + w * np.asarray(table[f1], dtype=np.float64)
        if box is None:
            out_boxes.append([0.0, 0.0, 0.0, 0.0])
            mask.append(False)
            continue
        out_boxes.append([float(v) for v in box_xyxy_to_cxcywh(clip_boxes_xyxy(box, width, height) / size)])
        mask.append(True)
    return out_boxes, mask


__all__ = [
    "box_cxcywh_to_xyxy", "box_xyxy_to_cxcywh", "clip_boxes_xyxy", "box_area", "box_iou", "generalized_box_iou",
    "span_iou", "round_half_up", "box_table", "boxes_on_frames",
]
