"""The canonical STVG row schema shared by every converter and the synthetic generator.

One row per query. All frame numbers are original 0-based video frame ids and every span is
half-open ``[start, end)``. Boxes are ``[x1, y1, x2, y2]`` absolute pixels (continuous, no +1).

=================  ==========================  =====================================================
field              type                        meaning
=================  ==========================  =====================================================
``query_id``       string                      unique per split
``video_id``       string                      id of the source video
``video``          string                      path of the video relative to a video root
``query``          string                      the sentence
``query_type``     string or null              ``declarative`` / ``interrogative`` / null
``task``           string                      ``stvg`` / ``tvg`` / ``rec``
``fps``            float64                     frames per second of the original video
``num_frames``     int64                       frames in the whole video
``width``          int64                       pixels
``height``         int64                       pixels
``segment_start``  int64                       first frame of the clip the model may see
``segment_end``    int64                       one past its last frame
``tube_start``     int64                       first frame of the ground-truth span
``tube_end``       int64                       one past its last frame
``frame_ids``      list<int64>                 tube frames that carry a box (strictly increasing)
``boxes``          list<fixed_size_list[4]>    one ``[x1, y1, x2, y2]`` per ``frame_ids`` entry
``target_id``      int64 or null               VidOR trajectory id of the target (VidSTG)
``target_type``    string or null              ``person`` / ``object`` (VidSTG), ``person`` (HC-STVG)
``video_bytes``    binary or null              the mp4 bytes when written with ``--embed-videos``,
                                               null otherwise
=================  ==========================  =====================================================
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from datasets import Features, List, Value

from bridge_stg.configuration_bridge_stg import TASKS
from bridge_stg.errors_bridge_stg import AnnotationError

QUERY_TYPES = ("declarative", "interrogative")

#: The one ``datasets.Features`` every writer of this package uses.
FEATURES = Features(
    {
        "query_id": Value("string"),
        "video_id": Value("string"),
        "video": Value("string"),
        "query": Value("string"),
        "query_type": Value("string"),
        "task": Value("string"),
        "fps": Value("float64"),
        "num_frames": Value("int64"),
        "width": Value("int64"),
        "height": Value("int64"),
        "segment_start": Value("int64"),
        "segment_end": Value("int64"),
        "tube_start": Value("int64"),
        "tube_end": Value("int64"),
        "frame_ids": List(Value("int64")),
        "boxes": List(List(Value("float64"), length=4)),
        "target_id": Value("int64"),
        "target_type": Value("string"),
        "video_bytes": Value("binary"),
    }
)

COLUMNS = tuple(FEATURES.keys())
REQUIRED = (
    "query_id", "video_id", "video", "query", "task", "fps", "num_frames", "width", "height",
    "segment_start", "segment_end", "tube_start", "tube_end", "frame_ids", "boxes",
)
OPTIONAL = ("query_type", "target_id", "target_type", "video_bytes")
_INT_FIELDS = ("num_frames", "width", "height", "segment_start", "segment_end", "tube_start", "tube_end")


def _fail(source: str, record: Any, field: str, msg: str) -> AnnotationError:
    return AnnotationError(f"{source}: record {record}: field {field!r}: {msg}")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def validate_row(row: Mapping[str, Any], source: str = "<rows>", record: Any = None) -> None:
    """Check one canonical row; raise :class:`AnnotationError` naming ``source``, ``record`` and the field.

    Checks types, that the spans are non-empty and nested (``0 <= segment_start <= tube_start <
    tube_end <= segment_end <= num_frames``), that ``frame_ids`` are strictly increasing and inside
    the tube, that there is one finite, non-inverted box per frame id, and the task-specific shape
    (``tvg`` rows carry no boxes, ``rec`` rows are one frame).
    """
    rec = record if record is not None else row.get("query_id", "?")
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise _fail(source, rec, sorted(unknown)[0], "unknown field (not in the canonical schema)")
    for f in REQUIRED:
        if f not in row or row[f] is None:
            raise _fail(source, rec, f, "missing")
    for f in ("query_id", "video_id", "video", "query", "task"):
        if not isinstance(row[f], str):
            raise _fail(source, rec, f, f"expected a string, got {type(row[f]).__name__}")
    if not row["query_id"]:
        raise _fail(source, rec, "query_id", "empty")
    if not row["query"].strip():
        raise _fail(source, rec, "query", "empty or whitespace-only sentence")
    if row["task"] not in TASKS:
        raise _fail(source, rec, "task", f"{row['task']!r} is not one of {TASKS}")
    qt = row.get("query_type")
    if qt is not None and qt not in QUERY_TYPES:
        raise _fail(source, rec, "query_type", f"{qt!r} is not one of {QUERY_TYPES} or null")
    fps = row["fps"]
    if not isinstance(fps, (int, float, np.floating, np.integer)) or isinstance(fps, bool) or not math.isfinite(fps) or fps <= 0:
        raise _fail(source, rec, "fps", f"expected a positive finite number, got {fps!r}")
    for f in _INT_FIELDS:
        if not _is_int(row[f]):
            raise _fail(source, rec, f, f"expected an int, got {type(row[f]).__name__}")
    if row["width"] <= 0 or row["height"] <= 0 or row["num_frames"] <= 0:
        raise _fail(source, rec, "width/height/num_frames", "must be positive")
    ss, se, ts, te = row["segment_start"], row["segment_end"], row["tube_start"], row["tube_end"]
    if not 0 <= ss < se <= row["num_frames"]:
        raise _fail(source, rec, "segment_start/segment_end", f"[{ss}, {se}) is not a non-empty span inside [0, {row['num_frames']})")
    if not ss <= ts < te <= se:
        raise _fail(source, rec, "tube_start/tube_end", f"[{ts}, {te}) is not a non-empty span inside the segment [{ss}, {se})")
    tid = row.get("target_id")
    if tid is not None and not _is_int(tid):
        raise _fail(source, rec, "target_id", f"expected an int or null, got {type(tid).__name__}")
    tt = row.get("target_type")
    if tt is not None and not isinstance(tt, str):
        raise _fail(source, rec, "target_type", f"expected a string or null, got {type(tt).__name__}")
    vb = row.get("video_bytes")
    if vb is not None and not isinstance(vb, (bytes, bytearray)):
        raise _fail(source, rec, "video_bytes", f"expected bytes or null, got {type(vb).__name__}")
    fids, boxes = row["frame_ids"], row["boxes"]
    if not isinstance(fids, (list, tuple)) or not isinstance(boxes, (list, tuple)):
        raise _fail(source, rec, "frame_ids/boxes", "expected lists")
    if len(fids) != len(boxes):
        raise _fail(source, rec, "boxes", f"{len(boxes)} boxes for {len(fids)} frame ids")
    if row["task"] == "tvg" and fids:
        raise _fail(source, rec, "frame_ids", "tvg rows carry no boxes")
    if row["task"] == "rec" and (row["num_frames"] != 1 or list(fids) != [0]):
        raise _fail(source, rec, "frame_ids", "rec rows are a single frame: num_frames 1, frame_ids [0]")
    if not fids:
        return
    if not all(_is_int(f) for f in fids):
        raise _fail(source, rec, "frame_ids", "expected ints")
    f = np.asarray(fids, dtype=np.int64)
    if np.any(np.diff(f) <= 0):
        raise _fail(source, rec, "frame_ids", "not strictly increasing")
    if f[0] < ts or f[-1] >= te:
        raise _fail(source, rec, "frame_ids", f"frame ids {int(f[0])}..{int(f[-1])} leave the tube [{ts}, {te})")
    try:
        b = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise _fail(source, rec, "boxes", f"not a list of 4 numbers per frame ({exc})") from None
    if b.ndim != 2 or b.shape[1] != 4:
        raise _fail(source, rec, "boxes", f"expected shape (n, 4), got {b.shape}")
    if not np.all(np.isfinite(b)):
        i = int(np.argwhere(~np.isfinite(b))[0, 0])
        raise _fail(source, rec, "boxes", f"non-finite box at frame {int(f[i])}")
    bad = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if np.any(bad):
        i = int(np.argmax(bad))
        raise _fail(source, rec, "boxes", f"inverted box {b[i].tolist()} at frame {int(f[i])}")


def complete_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``row`` with every optional column present (null when absent), in schema order."""
    return {c: row.get(c) for c in COLUMNS}


__all__ = ["FEATURES", "COLUMNS", "REQUIRED", "OPTIONAL", "TASKS", "QUERY_TYPES", "validate_row", "complete_row"]
