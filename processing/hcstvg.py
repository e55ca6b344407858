"""HC-STVG v1 / v2 converter (raw JSON keyed by the video file name) → canonical rows.

Conventions (docs/datasets.md §2, written into every report):

* ``st_frame`` is **1-based**: ``tube_start = st_frame − 1`` and ``tube_end = tube_start + len(bbox)``
  (half-open, 0-based). ``bbox[i] = [x, y, w, h]`` is the box of frame ``tube_start + i`` and becomes
  ``[x, y, x + w, y + h]``.
* sentence: ``caption`` (v1) or ``English`` (v2); size: ``width``/``height`` (v1) or
  ``img_size = [height, width]`` (v2).
* ``num_frames = img_num``, ``segment = [0, img_num)``, ``fps = img_num / 20`` (20-second clips).
* boxes with NaN/inf or non-positive ``w``/``h`` are linearly interpolated when a valid box exists on
  both sides, else removed; boxes are clipped to the image; the tube is clipped to the segment.
  Every change is reported. ``ed_frame`` and ``st_time`` are cross-checked and mismatches noted.
"""

from __future__ import annotations

import math
import os
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from bridge_stg.errors_bridge_stg import AnnotationError

from .common import Track, build_tube, check_videos, clip_span, field, load_json, number, report_tube
from .paths import check_relative_path
from .report import ConversionReport

CLIP_SECONDS = 20.0

HCSTVG_CONVENTIONS = [
    "st_frame is 1-based: tube_start = st_frame - 1, tube_end = tube_start + len(bbox) (half-open, 0-based)",
    "bbox[i] = [x, y, w, h] is frame tube_start + i -> [x, y, x + w, y + h]",
    "num_frames = img_num, segment = [0, img_num), fps = img_num / 20",
    "NaN / non-positive w,h boxes interpolated between valid neighbours (else removed); boxes clipped to the image",
    "query_id = the video file name (the JSON key); video = the same name relative to --video-root",
]


def _interpolate(xyxy: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Fill invalid rows lying between two valid rows by linear interpolation; return (boxes, keep mask, filled idx)."""
    out = xyxy.copy()
    keep = valid.copy()
    idx = np.flatnonzero(valid)
    filled: list[int] = []
    if len(idx) >= 2:
        for i in np.flatnonzero(~valid):
            k = np.searchsorted(idx, i)
            if 0 < k < len(idx):
                a, b = idx[k - 1], idx[k]
                t = (i - a) / (b - a)
                out[i] = (1 - t) * xyxy[a] + t * xyxy[b]
                keep[i] = True
                filled.append(int(i))
    return out, keep, filled


def convert_hcstvg(
    annotations: str | os.PathLike[str],
    version: int,
    split: str,
    *,
    video_root: str | os.PathLike[str] | None = None,
    check_video_headers: bool = False,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], ConversionReport]:
    """Convert an HC-STVG ``version`` 1 or 2 annotation file to canonical rows (see the module docstring)."""
    if version not in (1, 2):
        raise AnnotationError(f"--version: HC-STVG version must be 1 or 2, got {version!r}")
    src = str(annotations)
    dups: list[str] = []
    data = load_json(annotations, duplicate_keys=dups)
    if not isinstance(data, dict):
        raise AnnotationError(f"{src}: expected a JSON object keyed by video file name, got {type(data).__name__}")
    report = ConversionReport(
        f"hcstvg-v{version}",
        {"annotations": src, "version": version, "split": split, "video_root": None if video_root is None else str(video_root),
         "check_videos": check_video_headers},
        HCSTVG_CONVENTIONS,
    )
    report.add_inputs(split, len(data) + len(dups))
    for k in dups:
        report.drop(split, k, "duplicate_id", f"key {k!r} appears more than once in the file; JSON keeps the last occurrence", k)
    text_key, other_key = ("caption", "English") if version == 1 else ("English", "caption")
    out: list[tuple[str, dict[str, Any]]] = []
    for key, r in tqdm(data.items(), desc=f"hcstvg-v{version} {split}", unit="clip", disable=not progress):
        rec = repr(key)
        check_relative_path(key, f"{src}: record {rec}")
        if not isinstance(r, dict):
            raise AnnotationError(f"{src}: record {rec}: expected a JSON object, got {type(r).__name__}")
        if text_key not in r and other_key in r:
            raise AnnotationError(f"{src}: record {rec}: field {text_key!r}: missing (found {other_key!r}: is this HC-STVG v{3 - version}? use --version {3 - version})")
        query = field(r, text_key, str, src, rec)
        if version == 1:
            width, height = field(r, "width", int, src, rec), field(r, "height", int, src, rec)
        else:
            if "img_size" not in r and "width" in r:
                raise AnnotationError(f"{src}: record {rec}: field 'img_size': missing (found 'width': is this HC-STVG v1? use --version 1)")
            size = field(r, "img_size", list, src, rec)
            if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in size):
                raise AnnotationError(f"{src}: record {rec}: field 'img_size': expected [height, width] ints, got {size!r}")
            height, width = size
        if width <= 0 or height <= 0:
            raise AnnotationError(f"{src}: record {rec}: field 'width/height': must be positive, got {width}x{height}")
        img_num = field(r, "img_num", int, src, rec)
        if img_num <= 0:
            raise AnnotationError(f"{src}: record {rec}: field 'img_num': must be positive, got {img_num}")
        st = field(r, "st_frame", int, src, rec)
        bbox = field(r, "bbox", list, src, rec)
        for i, b in enumerate(bbox):
            if not isinstance(b, list) or len(b) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in b):
                raise AnnotationError(f"{src}: record {rec}: field 'bbox[{i}]': expected [x, y, w, h] numbers, got {b!r}")
        fps = img_num / CLIP_SECONDS
        if not bbox:
            report.drop(split, rec, "empty_tube", "bbox is an empty list", key)
            continue
        n = len(bbox)
        tube_start = st - 1
        if "ed_frame" in r:
            ed = field(r, "ed_frame", int, src, rec)
            if ed != st + n - 1:
                report.note("ed_frame_mismatch", f"{key}: ed_frame {ed} != st_frame + len(bbox) - 1 = {st + n - 1}; the tube follows bbox", record=key)
        if "st_time" in r:
            st_time = number(r, "st_time", src, rec)
            if abs(st_time - tube_start / fps) > 1.0 / fps + 1e-6:
                report.note("st_time_mismatch", f"{key}: st_time {st_time} vs (st_frame - 1) / fps = {tube_start / fps:.3f}", record=key)
        arr = np.asarray(bbox, dtype=np.float64)
        xyxy = np.concatenate([arr[:, :2], arr[:, :2] + arr[:, 2:]], axis=1)
        valid = np.isfinite(arr).all(axis=1) & (arr[:, 2] > 0) & (arr[:, 3] > 0)
        xyxy, keep, filled = _interpolate(xyxy, valid)
        frames = tube_start + np.arange(n)
        if filled:
            report.repair(split, rec, "boxes_interpolated", f"{len(filled)} NaN/non-positive boxes interpolated (frames {frames[filled][:5].tolist()})", key)
        span = clip_span(report, split, rec, key, tube_start, tube_start + n, 0, img_num)
        if span is None:
            report.drop(split, rec, "tube_outside_segment", f"tube [{tube_start}, {tube_start + n}) vs segment [0, {img_num})", key)
            continue
        xyxy[~keep] = math.nan  # removed by the tube builder and reported as invalid
        tube = build_tube(Track(frames, xyxy), span[0], span[1], width, height)
        if not tube.frame_ids:
            report.drop(split, rec, "no_valid_boxes", f"none of the {n} boxes is valid", key)
            continue
        report_tube(report, split, rec, key, tube, span[1] - span[0])
        out.append((rec, {
            "query_id": key, "video_id": PurePosixPath(key).stem, "video": key, "query": query, "query_type": None, "task": "stvg",
            "fps": fps, "num_frames": img_num, "width": width, "height": height, "segment_start": 0, "segment_end": img_num,
            "tube_start": span[0], "tube_end": span[1], "frame_ids": tube.frame_ids, "boxes": tube.boxes,
            "target_id": None, "target_type": "person",
        }))
    rows = check_videos(out, video_root, check_video_headers, report, split)
    return rows, report


__all__ = ["convert_hcstvg", "HCSTVG_CONVENTIONS", "CLIP_SECONDS"]
