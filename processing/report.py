"""The validation / conversion report every converter fills, prints and saves as JSON.

Nothing is dropped without being counted: each converter declares how many input queries it read
per split (:meth:`ConversionReport.add_inputs`), records every dropped row with a reason
(:meth:`ConversionReport.drop`), every repaired row (:meth:`ConversionReport.repair`) and
noteworthy facts that changed nothing (:meth:`ConversionReport.note`), and
:meth:`ConversionReport.finalize` checks ``inputs == rows + dropped`` for every split.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any, Iterable, Mapping


class ConversionReport:
    """Counts, drops, repairs and notes of one conversion run.

    Args:
        source_format: name of the input format (``vidstg``, ``tubedetr``, ``hcstvg-v1``, ``synthetic``...).
        inputs: the input files and options, recorded verbatim in the report.
        conventions: human-readable statements of the frame / box conventions applied.
    """

    def __init__(self, source_format: str, inputs: Mapping[str, Any] | None = None, conventions: Iterable[str] = ()) -> None:
        self.source_format = source_format
        self.inputs = dict(inputs or {})
        self.conventions = list(conventions)
        self.input_counts: Counter[str] = Counter()
        self.dropped: list[dict[str, Any]] = []
        self.repaired: list[dict[str, Any]] = []
        self.notes: list[dict[str, Any]] = []
        self.splits: dict[str, dict[str, Any]] = {}
        self._final = False

    # -- recording ----------------------------------------------------------------------------
    def add_inputs(self, split: str, n: int = 1) -> None:
        """Count ``n`` input queries (sentences, lines, records) read for ``split``."""
        self.input_counts[split] += n

    def drop(self, split: str, record: Any, reason: str, detail: str = "", query_id: str | None = None) -> None:
        """Record that the input query ``record`` of ``split`` produced no row, and why."""
        self.dropped.append({"split": split, "record": record, "query_id": query_id, "reason": reason, "detail": detail})

    def repair(self, split: str, record: Any, reason: str, detail: str = "", query_id: str | None = None) -> None:
        """Record that the row of ``record`` was kept but changed (clipped, interpolated, boxes missing...)."""
        self.repaired.append({"split": split, "record": record, "query_id": query_id, "reason": reason, "detail": detail})

    def note(self, kind: str, detail: str, **extra: Any) -> None:
        """Record a fact about the input that changed no row (duplicates, header mismatches...)."""
        self.notes.append({"kind": kind, "detail": detail, **extra})

    # -- summary ------------------------------------------------------------------------------
    def finalize(self, rows_by_split: Mapping[str, list[Mapping[str, Any]]]) -> None:
        """Count rows per split, query type and task, and check that every input is accounted for.

        Raises ``RuntimeError`` (a bug in the converter, not bad input) when
        ``inputs != rows + dropped`` for a split.
        """
        drops = Counter(d["split"] for d in self.dropped)
        for split in sorted(set(rows_by_split) | set(self.input_counts) | set(drops)):
            rows = rows_by_split.get(split, [])
            n_in, n_drop = self.input_counts.get(split, 0), drops.get(split, 0)
            if n_in != len(rows) + n_drop:
                raise RuntimeError(
                    f"conversion report does not balance for split {split!r}: {n_in} inputs != {len(rows)} rows + {n_drop} dropped"
                )
            self.splits[split] = {
                "inputs": n_in,
                "rows": len(rows),
                "dropped": n_drop,
                "repaired_rows": len({r["record"] for r in self.repaired if r["split"] == split and r["record"] is not None}),
                "by_query_type": dict(sorted(Counter(str(r.get("query_type")) for r in rows).items())),
                "by_task": dict(sorted(Counter(r["task"] for r in rows).items())),
                "videos": len({r["video_id"] for r in rows}),
                "tube_frames_with_boxes": int(sum(len(r["frame_ids"]) for r in rows)),
            }
        self._final = True

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-serialisable dict."""
        return {
            "source_format": self.source_format,
            "inputs": self.inputs,
            "conventions": self.conventions,
            "splits": self.splits,
            "dropped_by_reason": dict(sorted(Counter(d["reason"] for d in self.dropped).items())),
            "repaired_by_reason": dict(sorted(Counter(d["reason"] for d in self.repaired).items())),
            "notes_by_kind": dict(sorted(Counter(n["kind"] for n in self.notes).items())),
            "dropped": self.dropped,
            "repaired": self.repaired,
            "notes": self.notes,
        }

    def summary_text(self, max_items: int = 5) -> str:
        """A short human-readable summary (what the CLI prints)."""
        d = self.to_dict()
        lines = [f"conversion report ({self.source_format})"]
        for split, s in d["splits"].items():
            lines.append(
                f"  {split}: {s['inputs']} inputs -> {s['rows']} rows, {s['dropped']} dropped, "
                f"{s['repaired_rows']} repaired; query types {s['by_query_type']}; tasks {s['by_task']}; {s['videos']} videos"
            )
        for key, items in (("dropped", self.dropped), ("repaired", self.repaired), ("notes", self.notes)):
            counts = d[f"{key}_by_reason" if key != "notes" else "notes_by_kind"]
            if counts:
                lines.append(f"  {key}: {counts}")
                for it in items[:max_items]:
                    lines.append(f"    - {json.dumps(it, default=str)[:300]}")
                if len(items) > max_items:
                    lines.append(f"    ... {len(items) - max_items} more in the JSON report")
        return "\n".join(lines)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the report as JSON."""
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=1, default=str)
            fh.write("\n")


__all__ = ["ConversionReport"]
