"""Reading references and predictions for the evaluator.

References (:func:`read_references`) may be

* canonical rows (``docs/schema.md``): a ``.jsonl`` file, a ``.json`` list, a ``.parquet`` file, or a
  dataset folder written by ``bridge-stg convert`` (``DIR/data/<split>-*.parquet``, pick ``split``);
* TubeDETR's preprocessed VidSTG / HC-STVG file ``{"videos": [...], "trajectories": {...}}``:
  ``query_id = str(video_id)``, ``segment = [start_frame, end_frame + 1)``, ``tube =
  [tube_start_frame, tube_end_frame)``, GT boxes ``[x, y, x + w, y + h]`` read verbatim (the
  reference evaluator does not clip them either) on the tube frames that have one;
* raw HC-STVG v1 / v2 JSON ``{video_name: {"st_frame", "img_num", "bbox", ...}}``: ``query_id`` = the
  key, 1-based ``st_frame`` → ``tube = [st_frame - 1, st_frame - 1 + len(bbox))``, ``segment =
  [0, img_num)``, ``fps = img_num / 20``; GT boxes with NaN / inf or negative width / height are left
  out (that frame then has no GT box) and counted in the returned notes.

Predictions (:func:`read_predictions`) are JSONL (one canonical prediction row per line) or a JSON list.
Errors are :class:`AnnotationError` / :class:`PredictionError` naming the file, the record and the field.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from bridge_stg.errors_bridge_stg import AnnotationError, PredictionError

HCSTVG_CLIP_SECONDS = 20.0
#: reference columns the evaluator reads (others are ignored)
REFERENCE_COLUMNS = ("query_id", "query_type", "fps", "segment_start", "segment_end", "tube_start", "tube_end", "frame_ids", "boxes")


def _load_json(path: Path, err: type[Exception]) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise err(f"{path}: not valid JSON: {exc}") from None


def _read_jsonl(path: Path, err: type[Exception]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise err(f"{path}: line {n}: not valid JSON: {exc}") from None
            if not isinstance(row, dict):
                raise err(f"{path}: line {n}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def _read_parquet(paths: list[Path], columns: tuple[str, ...] | None = REFERENCE_COLUMNS) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for p in paths:
        schema = pq.read_schema(p)
        cols = None if columns is None else [c for c in columns if c in schema.names]
        rows.extend(pq.read_table(p, columns=cols).to_pylist())
    return rows


def dataset_split_files(path: str | os.PathLike[str], split: str | None) -> tuple[str, list[Path]]:
    """``(split, parquet files)`` of one split of a dataset folder (``DIR/data/<split>-*.parquet``, or parquet files
    directly in ``DIR``); ``split=None`` picks the only split and refuses a folder that holds several."""
    path = Path(path)
    files = sorted((path / "data").glob("*.parquet")) if (path / "data").is_dir() else sorted(path.glob("*.parquet"))
    if not files:
        raise AnnotationError(f"{path}: no parquet files found (expected {path}/data/<split>-*.parquet)")
    splits = sorted({f.name.split("-")[0] for f in files})
    if split is None:
        if len(splits) != 1:
            raise AnnotationError(f"{path}: holds splits {splits}; choose one with --split")
        split = splits[0]
    chosen = [f for f in files if f.name.split("-")[0] == split]
    if not chosen:
        raise AnnotationError(f"{path}: no split {split!r} (found {splits})")
    return split, chosen


def read_dataset_split(path: str | os.PathLike[str], split: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """``(split, rows)``: every column of every row of one split of a dataset folder (:func:`dataset_split_files`),
    in file order: what ``bridge-stg predict`` grounds, the same rows ``read_references`` scores."""
    if not Path(path).is_dir():
        raise AnnotationError(f"{path}: no such dataset folder")
    split, files = dataset_split_files(path, split)
    return split, _read_parquet(files, columns=None)


def _num(rec: dict[str, Any], key: str, src: Path, where: str) -> Any:
    if key not in rec:
        raise AnnotationError(f"{src}: record {where}: field {key!r}: missing")
    v = rec[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise AnnotationError(f"{src}: record {where}: field {key!r}: expected a number, got {v!r}")
    return v


def tubedetr_to_rows(data: dict[str, Any], src: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Canonical reference rows from TubeDETR's ``{"videos", "trajectories"}`` (see the module docstring)."""
    videos, trajs = data.get("videos"), data.get("trajectories")
    if not isinstance(videos, list) or not isinstance(trajs, dict):
        raise AnnotationError(f"{src}: TubeDETR format needs a 'videos' list and a 'trajectories' object")
    rows: list[dict[str, Any]] = []
    missing_boxes = 0
    for i, v in enumerate(videos):
        where = f"videos[{i}]"
        if not isinstance(v, dict):
            raise AnnotationError(f"{src}: record {where}: expected an object, got {type(v).__name__}")
        vid = _num(v, "video_id", src, where)
        ts, te = int(_num(v, "tube_start_frame", src, where)), int(_num(v, "tube_end_frame", src, where))
        ovid = str(v.get("original_video_id", v.get("video_path", vid)))
        if "target_id" in v:
            track = trajs.get(ovid, {}).get(str(v["target_id"]), {})
        else:  # HC-STVG in TubeDETR's format: one trajectory per video
            track = trajs.get(ovid, trajs.get(str(vid), {}))
        if not isinstance(track, dict):
            raise AnnotationError(f"{src}: record trajectories[{ovid!r}]: expected an object of frames")
        frames, boxes = [], []
        for f in range(ts, te):
            item = track.get(str(f))
            if item is None:
                missing_boxes += 1
                continue
            bb = item.get("bbox") if isinstance(item, dict) else item
            if not isinstance(bb, list) or len(bb) != 4:
                raise AnnotationError(f"{src}: record trajectories[{ovid!r}][{str(f)!r}]: field 'bbox': expected [x, y, w, h], got {bb!r}")
            x, y, w, h = (float(c) for c in bb)
            frames.append(f)
            boxes.append([x, y, x + w, y + h])
        qtype = v.get("qtype")
        rows.append({
            "query_id": str(vid), "query_type": qtype if qtype in ("declarative", "interrogative") else None,
            "fps": _num(v, "fps", src, where),
            "segment_start": int(_num(v, "start_frame", src, where)), "segment_end": int(_num(v, "end_frame", src, where)) + 1,
            "tube_start": ts, "tube_end": te, "frame_ids": frames, "boxes": boxes,
        })
    notes = [f"{missing_boxes} tube frames have no GT box in 'trajectories'"] if missing_boxes else []
    return rows, notes


def hcstvg_to_rows(data: dict[str, Any], src: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Canonical reference rows from raw HC-STVG v1 / v2 JSON (see the module docstring)."""
    rows: list[dict[str, Any]] = []
    dropped = 0
    for key, r in data.items():
        where = repr(key)
        if not isinstance(r, dict):
            raise AnnotationError(f"{src}: record {where}: expected an object, got {type(r).__name__}")
        st = int(_num(r, "st_frame", src, where))
        img_num = int(_num(r, "img_num", src, where))
        bbox = r.get("bbox")
        if not isinstance(bbox, list) or not bbox:
            raise AnnotationError(f"{src}: record {where}: field 'bbox': expected a non-empty list of [x, y, w, h]")
        if img_num <= 0:
            raise AnnotationError(f"{src}: record {where}: field 'img_num': must be positive, got {img_num}")
        ts = st - 1
        frames, boxes = [], []
        for j, b in enumerate(bbox):
            if not isinstance(b, list) or len(b) != 4 or any(isinstance(c, bool) or not isinstance(c, (int, float)) for c in b):
                raise AnnotationError(f"{src}: record {where}: field 'bbox[{j}]': expected [x, y, w, h] numbers, got {b!r}")
            x, y, w, h = (float(c) for c in b)
            if not all(math.isfinite(c) for c in (x, y, w, h)) or w < 0 or h < 0:
                dropped += 1
                continue
            frames.append(ts + j)
            boxes.append([x, y, x + w, y + h])
        rows.append({
            "query_id": str(key), "query_type": None, "fps": img_num / HCSTVG_CLIP_SECONDS,
            "segment_start": 0, "segment_end": img_num, "tube_start": ts, "tube_end": ts + len(bbox),
            "frame_ids": frames, "boxes": boxes,
        })
    notes = [f"{dropped} GT boxes with NaN/inf or negative size left out"] if dropped else []
    return rows, notes


def read_references(path: str | os.PathLike[str], split: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read reference rows from any supported file (see the module docstring).

    Returns ``(rows, info)`` with ``info = {"source", "format", "notes"}``; ``format`` is one of
    ``canonical-jsonl``, ``canonical-json``, ``canonical-parquet``, ``dataset-folder``, ``tubedetr``,
    ``hcstvg``.
    """
    p = Path(path)
    if not p.exists():
        raise AnnotationError(f"{p}: references file not found")
    notes: list[str] = []
    if p.is_dir():
        rows, fmt = _read_parquet(dataset_split_files(p, split)[1]), "dataset-folder"
    elif p.suffix == ".parquet":
        rows, fmt = _read_parquet([p]), "canonical-parquet"
    elif p.suffix == ".jsonl":
        rows, fmt = _read_jsonl(p, AnnotationError), "canonical-jsonl"
    else:
        data = _load_json(p, AnnotationError)
        if isinstance(data, list):
            rows, fmt = data, "canonical-json"
        elif isinstance(data, dict) and "videos" in data and "trajectories" in data:
            (rows, notes), fmt = tubedetr_to_rows(data, p), "tubedetr"
        elif isinstance(data, dict) and data and all(isinstance(v, dict) and "st_frame" in v and "bbox" in v for v in data.values()):
            (rows, notes), fmt = hcstvg_to_rows(data, p), "hcstvg"
        else:
            raise AnnotationError(
                f"{p}: unrecognised references: expected canonical rows (JSONL / JSON list / parquet), "
                "TubeDETR {'videos', 'trajectories'} or raw HC-STVG {video: {'st_frame', 'bbox', ...}}"
            )
    return rows, {"source": str(p), "format": fmt, "notes": notes}


def read_predictions(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read prediction rows from JSONL (or a JSON list); raises :class:`PredictionError` naming the line."""
    p = Path(path)
    if not p.exists():
        raise PredictionError(f"{p}: predictions file not found")
    if p.suffix == ".json":
        data = _load_json(p, PredictionError)
        if not isinstance(data, list):
            raise PredictionError(f"{p}: expected a JSON list of prediction rows (or use JSONL)")
        return data
    return _read_jsonl(p, PredictionError)


__all__ = ["read_references", "read_predictions", "read_dataset_split", "dataset_split_files", "tubedetr_to_rows",
           "hcstvg_to_rows", "REFERENCE_COLUMNS"]
