"""Inputs for multi-task training: temporal grounding (Charades-STA lines) and REC (RefCOCO-style JSON).

* ``tvg``: text lines ``VIDEO_ID START_SEC END_SEC##sentence``. ``fps``, frame count and size come
  from each video's header (``--video-root`` is required), ``tube = [round(start·fps), round(end·fps))``
  clipped to ``[0, num_frames)``, no boxes, ``query_type`` null.
* ``rec``: a JSON list of ``{"image", "width", "height", "sentence", "bbox": [x, y, w, h]}``; one
  "frame": ``num_frames = 1``, ``segment = tube = [0, 1)``, ``frame_ids = [0]``, ``fps = 1.0``.

RefCOCO's own ``refs(*).p`` pickles are not read here (never unpickle): convert them elsewhere.
"""

from __future__ import annotations

import math
import os
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm.auto import tqdm

from bridge_stg.errors_bridge_stg import AnnotationError, VideoDecodeError

from .common import VideoInfo, check_videos, clip_span, field, load_json, probe_video, relpath_field
from .paths import resolve_video_path
from .report import ConversionReport


def convert_tvg(
    annotations: str | os.PathLike[str],
    split: str,
    *,
    video_root: str | os.PathLike[str],
    video_template: str = "{vid}.mp4",
    progress: bool = True,
) -> tuple[list[dict[str, Any]], ConversionReport]:
    """Convert Charades-STA style lines to ``task="tvg"`` rows; videos are opened for their headers.

    A missing or unreadable video drops its rows (reported). A malformed line raises
    :class:`AnnotationError` naming the file, the line and the field.
    """
    src = str(annotations)
    p = Path(annotations)
    if not p.is_file():
        raise AnnotationError(f"{src}: annotation file not found")
    report = ConversionReport(
        "tvg",
        {"annotations": src, "split": split, "video_root": str(video_root), "video_template": video_template},
        ["line = 'VIDEO_ID START_SEC END_SEC##sentence'", "tube = [round(start * fps), round(end * fps)) with fps from the video header",
         "segment = [0, num_frames) from the header; no boxes"],
    )
    infos: dict[str, VideoInfo | str] = {}
    rows: list[tuple[str, dict[str, Any]]] = []
    n = 0
    lines = p.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(tqdm(lines, desc=f"tvg {split}", unit="line", disable=not progress), start=1):
        if not line.strip():
            continue
        rec = f"line {lineno}"
        head, sep, sentence = line.partition("##")
        if not sep:
            raise AnnotationError(f"{src}: record {rec}: field 'sentence': no '##' separator in {line[:80]!r}")
        parts = head.split()
        if len(parts) != 3:
            raise AnnotationError(f"{src}: record {rec}: field 'VIDEO_ID START END': expected 3 values before '##', got {len(parts)}")
        vid = parts[0]
        try:
            start, end = float(parts[1]), float(parts[2])
        except ValueError:
            raise AnnotationError(f"{src}: record {rec}: field 'START/END': not numbers: {parts[1]!r} {parts[2]!r}") from None
        if not (math.isfinite(start) and math.isfinite(end)) or end <= start or start < 0:
            raise AnnotationError(f"{src}: record {rec}: field 'START/END': need 0 <= start < end, got {start} {end}")
        if not sentence.strip():
            raise AnnotationError(f"{src}: record {rec}: field 'sentence': empty")
        qid = str(n)
        n += 1
        report.add_inputs(split)
        video = video_template.format(vid=vid)
        path = resolve_video_path(video_root, video, f"{src}: {rec}")
        if video not in infos:
            if not path.is_file():
                infos[video] = "missing"
            else:
                try:
                    infos[video] = probe_video(path)
                except VideoDecodeError as exc:
                    infos[video] = str(exc)
        info = infos[video]
        if info == "missing":
            report.drop(split, rec, "missing_video_file", f"{video} not found under the video root", qid)
            continue
        if isinstance(info, str):
            report.drop(split, rec, "unreadable_video", info, qid)
            continue
        span = clip_span(report, split, rec, qid, round(start * info.fps), round(end * info.fps), 0, info.num_frames)
        if span is None:
            report.drop(split, rec, "tube_outside_segment", f"[{start}s, {end}s) is outside the {info.num_frames}-frame video", qid)
            continue
        rows.append((rec, {
            "query_id": qid, "video_id": vid, "video": video, "query": sentence.strip(), "query_type": None, "task": "tvg",
            "fps": info.fps, "num_frames": info.num_frames, "width": info.width, "height": info.height,
            "segment_start": 0, "segment_end": info.num_frames, "tube_start": span[0], "tube_end": span[1],
            "frame_ids": [], "boxes": [],
        }))
    return [r for _, r in rows], report


def convert_rec(
    annotations: str | os.PathLike[str],
    split: str,
    *,
    video_root: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], ConversionReport]:
    """Convert a RefCOCO-style JSON list to single-frame ``task="rec"`` rows.

    Boxes are clipped to the image (reported); an empty or non-finite box drops the record (reported).
    With ``video_root`` a missing image drops its row (reported).
    """
    src = str(annotations)
    data = load_json(annotations)
    if not isinstance(data, list):
        raise AnnotationError(f"{src}: expected a JSON list of records, got {type(data).__name__}")
    report = ConversionReport(
        "rec",
        {"annotations": src, "split": split, "video_root": None if video_root is None else str(video_root)},
        ["one frame: num_frames = 1, segment = tube = [0, 1), frame_ids = [0], fps = 1.0", "bbox [x, y, w, h] -> [x, y, x + w, y + h]"],
    )
    report.add_inputs(split, len(data))
    rows: list[tuple[str, dict[str, Any]]] = []
    for i, r in enumerate(tqdm(data, desc=f"rec {split}", unit="ref", disable=not progress)):
        rec = f"[{i}]"
        qid = str(i)
        image = relpath_field(r, "image", src, rec)
        w, h = field(r, "width", int, src, rec), field(r, "height", int, src, rec)
        if w <= 0 or h <= 0:
            raise AnnotationError(f"{src}: record {rec}: field 'width/height': must be positive, got {w}x{h}")
        sentence = field(r, "sentence", str, src, rec)
        if not sentence.strip():
            raise AnnotationError(f"{src}: record {rec}: field 'sentence': empty")
        bb = field(r, "bbox", list, src, rec)
        if len(bb) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in bb):
            raise AnnotationError(f"{src}: record {rec}: field 'bbox': expected [x, y, w, h] numbers, got {bb!r}")
        x, y, bw, bh = (float(v) for v in bb)
        box = [x, y, x + bw, y + bh]
        if not all(math.isfinite(v) for v in box):
            report.drop(split, rec, "invalid_box", f"non-finite bbox {bb}", qid)
            continue
        c = [min(max(box[0], 0.0), w), min(max(box[1], 0.0), h), min(max(box[2], 0.0), w), min(max(box[3], 0.0), h)]
        if c[2] <= c[0] or c[3] <= c[1]:
            report.drop(split, rec, "invalid_box", f"empty bbox {bb} inside the {w}x{h} image", qid)
            continue
        if c != box:
            report.repair(split, rec, "boxes_clipped_to_image", f"bbox {bb} clipped to {c}", qid)
        rows.append((rec, {
            "query_id": qid, "video_id": PurePosixPath(image).stem, "video": image, "query": sentence.strip(), "query_type": None,
            "task": "rec", "fps": 1.0, "num_frames": 1, "width": w, "height": h, "segment_start": 0, "segment_end": 1,
            "tube_start": 0, "tube_end": 1, "frame_ids": [0], "boxes": [c],
        }))
    return check_videos(rows, video_root, False, report, split), report


__all__ = ["convert_tvg", "convert_rec"]
