"""Write canonical rows as a ``datasets`` folder: parquet shards, dataset card, conversion report.

Layout of an output folder ``DIR``::

    DIR/
      README.md                               dataset card: YAML tags + schema, counts, report summary
      conversion_report.json                  {"runs": [{"splits": [...], "report": {...}}, ...]}
      data/<split>-00000-of-00001.parquet     one shard per split, schema = processing.schema.FEATURES
      videos/...                              (synthetic sets only) the mp4 files

``datasets.load_dataset(DIR)`` loads it with no further argument, and so does
``datasets.load_dataset("parquet", data_files={"test": "DIR/data/test-*.parquet"})``. Several
conversions may write different splits into one folder (e.g. VidSTG val then test): a new run
replaces the splits it writes and the older runs that wrote them (and says so), and keeps the others. Every
file is written under a temporary name and renamed once all are written. Whether a folder may be written at all
(someone else's non-empty folder needs ``--overwrite``) is the command's decision (``bridge_stg.commands.common``).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from transformers.utils import logging

from bridge_stg.errors_bridge_stg import AnnotationError

from .paths import atomic_output_file, resolve_video_path, write_text_atomic
from .report import ConversionReport
from .schema import COLUMNS, FEATURES, complete_row, validate_row

logger = logging.get_logger(__name__)

REPORT_NAME = "conversion_report.json"
_SPLIT_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def shard_path(out_dir: str | os.PathLike[str], split: str) -> Path:
    """Path of the single parquet shard of ``split``."""
    return Path(out_dir) / "data" / f"{split}-00000-of-00001.parquet"


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Arrow table with the canonical schema (features stored in the schema metadata for ``datasets``)."""
    schema = FEATURES.arrow_schema
    return pa.Table.from_pylist([complete_row(r) for r in rows], schema=schema)


def _check_split_name(split: str) -> None:
    if not split or not set(split) <= _SPLIT_NAME_CHARS:
        raise AnnotationError(f"--split: split name {split!r} must be non-empty and use only letters, digits and '_'")


def write_dataset(
    out_dir: str | os.PathLike[str],
    rows_by_split: Mapping[str, Sequence[dict[str, Any]]],
    report: ConversionReport,
    *,
    title: str,
    description: str = "",
    embed_videos_from: str | os.PathLike[str] | None = None,
    validate: bool = True,
) -> dict[str, Any]:
    """Validate the rows, write the parquet shards, the report and the dataset card. Returns the report dict.

    Args:
        out_dir: the dataset folder (created if needed).
        rows_by_split: canonical rows per split (the report must have been filled for these splits;
            :meth:`ConversionReport.finalize` is called here).
        report: the conversion report.
        title, description: text of the dataset card.
        embed_videos_from: when given, the ``video_bytes`` column of each row is filled with the bytes
            of ``resolve_video_path(embed_videos_from, row["video"])``.
        validate: run :func:`validate_row` on every row (default; a failure is a converter bug or bad input).
    """
    for split in rows_by_split:
        _check_split_name(split)
    if validate:
        for split, rows in rows_by_split.items():
            seen: set[str] = set()
            for i, row in enumerate(rows):
                validate_row(row, source=f"{report.source_format}:{split}", record=i)
                if row["query_id"] in seen:
                    raise AnnotationError(f"{report.source_format}:{split}: record {i}: field 'query_id': duplicate id {row['query_id']!r}")
                seen.add(row["query_id"])
    report.finalize(rows_by_split)
    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)

    # older runs that wrote one of our splits are replaced, with every split they wrote
    report_path = out / REPORT_NAME
    runs: list[dict[str, Any]] = []
    if report_path.exists():
        try:
            runs = json.loads(report_path.read_text(encoding="utf-8"))["runs"]
        except (ValueError, KeyError, TypeError) as exc:
            raise AnnotationError(f"{report_path}: existing conversion report is not readable ({exc}); remove it or use a new --out") from None
    kept: list[dict[str, Any]] = []
    stale: list[str] = []  # shards of the replaced runs' other splits
    for run in runs:
        if set(run["splits"]) & set(rows_by_split):
            source = (run.get("report") or {}).get("source_format", "?")
            for split in sorted(run["splits"]):
                logger.warning("%s: replacing split %r (written by an earlier %s conversion)", out, split, source)
            for split in set(run["splits"]) - set(rows_by_split):
                stale += glob.glob(str(out / "data" / f"{split}-*.parquet"))
        else:
            kept.append(run)
    for split in rows_by_split:
        stale += [f for f in glob.glob(str(out / "data" / f"{split}-*.parquet")) if Path(f) != shard_path(out, split)]

    # every file is written under a temporary name and renamed at the end: an interrupted run leaves the old folder
    with contextlib.ExitStack() as stack:
        for split, rows in rows_by_split.items():
            if embed_videos_from is not None:
                rows = [dict(r, video_bytes=resolve_video_path(embed_videos_from, r["video"], r["query_id"]).read_bytes()) for r in rows]
            pq.write_table(rows_to_table(rows), str(stack.enter_context(atomic_output_file(shard_path(out, split)))))
    for f in stale:
        logger.warning("removing %s: its run is replaced by this conversion", f)
        os.remove(f)

    report_dict = report.to_dict()
    kept.append({"splits": sorted(rows_by_split), "report": report_dict})
    write_text_atomic(report_path, json.dumps({"runs": kept}, indent=1, default=str) + "\n")
    write_text_atomic(out / "README.md", dataset_card(out, kept, title=title, description=description))
    print(report.summary_text())
    return report_dict


_SCHEMA_DOC = """| column | type | meaning |
|---|---|---|
| `query_id` | string | unique per split |
| `video_id` | string | source video id |
| `video` | string | video path **relative to a video root** (never absolute, never outside the root) |
| `query` | string | the sentence |
| `query_type` | string / null | `declarative`, `interrogative` or null |
| `task` | string | `stvg`, `tvg` or `rec` |
| `fps` | float64 | frames per second of the original video |
| `num_frames` | int64 | frames in the whole video |
| `width`, `height` | int64 | pixels |
| `segment_start`, `segment_end` | int64 | the clip the model may see, half-open, original 0-based frame ids |
| `tube_start`, `tube_end` | int64 | the ground-truth span, half-open |
| `frame_ids` | list<int64> | tube frames that carry a box |
| `boxes` | list<[4] float64> | `[x1, y1, x2, y2]` pixels, one per `frame_ids` entry |
| `target_id` | int64 / null | target trajectory id (VidSTG) |
| `target_type` | string / null | target kind (`person` / `object`) |
| `video_bytes` | binary / null | mp4 bytes when written with `--embed-videos`, else null |
"""


def dataset_card(out: Path, runs: list[dict[str, Any]], *, title: str, description: str) -> str:
    """Markdown dataset card (YAML tags, schema, counts, report summary) of the folder's runs."""
    # No ``configs:`` block on purpose: with one, datasets 5.2 keys its cache on the *relative* data_files
    # pattern, so two folders with the same name load each other's cached rows. The standard
    # ``data/<split>-*.parquet`` layout is inferred without it, and its cache key uses the real files.
    yaml = ["---", "task_categories:", "- video-text-to-text", "tags:", "- spatio-temporal-video-grounding", "- bridge-stg", "---", ""]
    body = [f"# {title}", "", description.strip(), "", "Written by `bridge-stg` (`bridge_stg.processing`). "
            "Load it with `datasets.load_dataset(\"<this folder>\")`; videos are resolved against a video root with "
            "`bridge_stg.processing.paths.resolve_video_path`.", "", "## Schema", "", _SCHEMA_DOC, "## Counts", "",
            "| split | source | inputs | rows | dropped | repaired rows | query types | videos |", "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        rep = run["report"]
        for s in run["splits"]:
            c = rep["splits"][s]
            qt = ", ".join(f"{k}: {v}" for k, v in c["by_query_type"].items())
            body.append(f"| {s} | {rep['source_format']} | {c['inputs']} | {c['rows']} | {c['dropped']} | {c['repaired_rows']} | {qt} | {c['videos']} |")
    body += ["", "## Conversion report", "", f"The full report (every dropped and repaired row with its reason) is `{REPORT_NAME}`.", ""]
    for run in runs:
        rep = run["report"]
        body.append(f"### {rep['source_format']} ({', '.join(run['splits'])})")
        body.append("")
        body.append(f"- inputs: `{json.dumps(rep['inputs'], default=str)}`")
        for c in rep["conventions"]:
            body.append(f"- convention: {c}")
        body.append(f"- dropped by reason: `{json.dumps(rep['dropped_by_reason'])}`")
        body.append(f"- repaired by reason: `{json.dumps(rep['repaired_by_reason'])}`")
        body.append(f"- notes by kind: `{json.dumps(rep['notes_by_kind'])}`")
        body.append("")
    return "\n".join(yaml + body) + "\n"


__all__ = ["write_dataset", "rows_to_table", "shard_path", "dataset_card", "REPORT_NAME", "COLUMNS"]
