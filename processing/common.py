"""Shared helpers of the converters: strict JSON access, box sanitising, tube building, video checks.

Every malformed input raises :class:`AnnotationError` naming the file, the record and the field.
JSON is read with the standard ``json`` module only (never pickle).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import av
import numpy as np

from bridge_stg.errors_bridge_stg import AnnotationError, VideoDecodeError

from .paths import check_relative_path, resolve_video_path
from .report import ConversionReport

_NUM = (int, float)


def load_json(path: str | os.PathLike[str], duplicate_keys: list[str] | None = None) -> Any:
    """Read a JSON file; malformed JSON raises :class:`AnnotationError` naming the file and position.

    When ``duplicate_keys`` is a list, keys repeated inside one JSON object are appended to it
    (``json`` would silently keep only the last value).
    """
    p = Path(path)
    if not p.is_file():
        raise AnnotationError(f"{p}: annotation file not found")

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out and duplicate_keys is not None:
                duplicate_keys.append(k)
            out[k] = v
        return out

    try:
        with open(p, "rb") as fh:
            if duplicate_keys is None:
                return json.load(fh)
            return json.load(fh, object_pairs_hook=hook)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{p}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{p}: not UTF-8 JSON ({exc})") from None


def _type_name(types: type | tuple[type, ...]) -> str:
    ts = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in ts)


def field(rec: Any, key: str, types: type | tuple[type, ...], src: Any, record: Any) -> Any:
    """``rec[key]``, checked to exist and to have one of ``types`` (bool never counts as a number)."""
    if not isinstance(rec, dict):
        raise AnnotationError(f"{src}: record {record}: expected a JSON object, got {type(rec).__name__}")
    if key not in rec:
        raise AnnotationError(f"{src}: record {record}: field {key!r}: missing")
    v = rec[key]
    ts = types if isinstance(types, tuple) else (types,)
    if isinstance(v, bool) and bool not in ts or not isinstance(v, ts):
        raise AnnotationError(f"{src}: record {record}: field {key!r}: expected {_type_name(types)}, got {type(v).__name__} ({str(v)[:60]!r})")
    return v


def number(rec: Any, key: str, src: Any, record: Any, positive: bool = False) -> float:
    """A finite number field (optionally > 0)."""
    v = field(rec, key, _NUM, src, record)
    if not math.isfinite(v) or (positive and v <= 0):
        raise AnnotationError(f"{src}: record {record}: field {key!r}: expected a {'positive ' if positive else ''}finite number, got {v!r}")
    return float(v)


def relpath_field(rec: Any, key: str, src: Any, record: Any) -> str:
    """A relative video path field, lexically checked (no absolute path, no ``..`` escape)."""
    return check_relative_path(field(rec, key, str, src, record), f"{src}: record {record}: field {key!r}")


@dataclass
class TubeResult:
    """Boxes of one tube after sanitising, with what was missing or changed."""

    frame_ids: list[int]
    boxes: list[list[float]]
    missing: list[int]
    invalid: list[int]
    clipped: list[int]


class Track:
    """Raw boxes of one trajectory: sorted unique ``frames`` (int64) and ``boxes`` (n, 4) float64 xyxy."""

    __slots__ = ("frames", "boxes")

    def __init__(self, frames: np.ndarray, boxes: np.ndarray) -> None:
        self.frames = np.asarray(frames, dtype=np.int64)
        self.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)

    @classmethod
    def from_dict(cls, by_frame: Mapping[int, Sequence[float]]) -> "Track":
        """Build from ``{frame: [x1, y1, x2, y2]}``."""
        if not by_frame:
            return cls(np.zeros(0, np.int64), np.zeros((0, 4)))
        fr = np.fromiter(by_frame.keys(), dtype=np.int64, count=len(by_frame))
        order = np.argsort(fr, kind="stable")
        bx = np.asarray(list(by_frame.values()), dtype=np.float64)
        return cls(fr[order], bx[order])


def build_tube(track: Track, tube_start: int, tube_end: int, width: int, height: int) -> TubeResult:
    """Collect ``[x1, y1, x2, y2]`` boxes of ``track`` on the frames of ``[tube_start, tube_end)``.

    Non-finite boxes and boxes that are empty after clipping to the image are dropped (``invalid``);
    boxes reaching outside the image are clipped (``clipped``); frames without a box are ``missing``.
    """
    lo, hi = np.searchsorted(track.frames, [tube_start, tube_end])
    f = track.frames[lo:hi]
    b = track.boxes[lo:hi]
    finite = np.isfinite(b).all(axis=1)
    c = b.copy()
    c[:, 0::2] = np.clip(c[:, 0::2], 0.0, float(width))
    c[:, 1::2] = np.clip(c[:, 1::2], 0.0, float(height))
    valid = finite & (c[:, 2] > c[:, 0]) & (c[:, 3] > c[:, 1])
    with np.errstate(invalid="ignore"):
        clipped = valid & np.any(c != b, axis=1)
    n = tube_end - tube_start
    missing = [] if len(f) == n else np.setdiff1d(np.arange(tube_start, tube_end, dtype=np.int64), f, assume_unique=True).tolist()
    return TubeResult(f[valid].tolist(), c[valid].tolist(), missing, f[~valid].tolist(), f[clipped].tolist())


def _first(frames: list[int], n: int = 5) -> str:
    return ", ".join(map(str, frames[:n])) + (", ..." if len(frames) > n else "")


def report_tube(report: ConversionReport, split: str, record: Any, qid: str, tube: TubeResult, n_tube: int, what: str = "") -> None:
    """Record the missing / invalid / clipped boxes of one row as repairs."""
    if tube.missing:
        reason = "no_tube_boxes" if not tube.frame_ids and not tube.invalid else "missing_tube_boxes"
        report.repair(split, record, reason, f"{len(tube.missing)} of {n_tube} tube frames have no box{what} (first: {_first(tube.missing)})", qid)
    if tube.invalid:
        report.repair(split, record, "invalid_boxes_dropped", f"{len(tube.invalid)} NaN/inf/empty boxes removed (first: {_first(tube.invalid)})", qid)
    if tube.clipped:
        report.repair(split, record, "boxes_clipped_to_image", f"{len(tube.clipped)} boxes clipped to the image (first: {_first(tube.clipped)})", qid)


def clip_span(
    report: ConversionReport, split: str, record: Any, qid: str, start: int, end: int, lo: int, hi: int, what: str = "tube"
) -> tuple[int, int] | None:
    """Clip ``[start, end)`` to ``[lo, hi)``; report a clipping; return None (caller drops) when empty."""
    s, e = max(start, lo), min(end, hi)
    if e <= s:
        return None
    if (s, e) != (start, end):
        report.repair(split, record, f"{what}_clipped_to_segment", f"{what} [{start}, {end}) clipped to [{s}, {e}) by [{lo}, {hi})", qid)
    return s, e


@dataclass(frozen=True)
class VideoInfo:
    """What a video header says."""

    fps: float
    num_frames: int
    width: int
    height: int


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Open a video header with PyAV (no decoding). Raises :class:`VideoDecodeError` when unreadable.

    ``num_frames`` is the container's count, or the number of demuxed video packets when the
    container does not store it.
    """
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise VideoDecodeError(f"{path}: no video stream")
            s = c.streams.video[0]
            rate = s.average_rate or s.base_rate or s.guessed_rate
            if not rate or float(rate) <= 0:
                raise VideoDecodeError(f"{path}: no frame rate in the header")
            n = int(s.frames or 0)
            if n <= 0:
                n = sum(1 for p in c.demux(s) if p.size > 0)
            w, h = int(s.codec_context.width), int(s.codec_context.height)
            if n <= 0 or w <= 0 or h <= 0:
                raise VideoDecodeError(f"{path}: empty video (frames={n}, size={w}x{h})")
            return VideoInfo(float(rate), n, w, h)
    except VideoDecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoDecodeError(f"{path}: cannot open the video ({type(exc).__name__}: {exc})") from None


def check_videos(
    rows: Iterable[tuple[Any, dict[str, Any]]],
    video_root: str | os.PathLike[str] | None,
    check_headers: bool,
    report: ConversionReport,
    split: str,
) -> list[dict[str, Any]]:
    """Resolve every row's video under ``video_root`` and keep the rows whose video is usable.

    An unsafe path raises :class:`UnsafePathError` naming the row. Without a root only the lexical
    check runs. With a root, a missing file drops the row (``missing_video_file``); with
    ``check_headers`` an unreadable file drops it (``unreadable_video``), and a header that disagrees
    with the row's fps / frame count / size is noted (``video_header_mismatch``, once per video).
    """
    kept: list[dict[str, Any]] = []
    cache: dict[Path, VideoInfo | str] = {}
    noted: set[Path] = set()
    for record, row in rows:
        if video_root is None:
            check_relative_path(row["video"], row["query_id"])
            kept.append(row)
            continue
        path = resolve_video_path(video_root, row["video"], row["query_id"])
        if not path.is_file():
            report.drop(split, record, "missing_video_file", f"{row['video']} not found under the video root", row["query_id"])
            continue
        if check_headers:
            if path not in cache:
                try:
                    cache[path] = probe_video(path)
                except VideoDecodeError as exc:
                    cache[path] = str(exc)
            info = cache[path]
            if isinstance(info, str):
                report.drop(split, record, "unreadable_video", info, row["query_id"])
                continue
            diffs = []
            if abs(info.fps - row["fps"]) > 0.01:
                diffs.append(f"fps {info.fps:.4f} vs {row['fps']:.4f}")
            if info.num_frames != row["num_frames"]:
                diffs.append(f"frames {info.num_frames} vs {row['num_frames']}")
            if (info.width, info.height) != (row["width"], row["height"]):
                diffs.append(f"size {info.width}x{info.height} vs {row['width']}x{row['height']}")
            if diffs and path not in noted:
                noted.add(path)
                report.note("video_header_mismatch", f"{row['video']}: header vs annotation: {'; '.join(diffs)}", video=row["video"])
        kept.append(row)
    return kept


__all__ = [
    "load_json", "field", "number", "relpath_field", "TubeResult", "Track", "build_tube", "report_tube", "clip_span",
    "VideoInfo", "probe_video", "check_videos",
]
