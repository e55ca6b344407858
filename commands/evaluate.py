"""``bridge-stg evaluate``: score predictions against references with the exact STVG metrics.

Examples::

    bridge-stg evaluate --references data/vidstg/data/test-00000-of-00001.parquet --predictions preds.jsonl
    bridge-stg evaluate --references tubedetr/test.json --predictions preds.jsonl --protocol dense --json
    bridge-stg evaluate --references hcstvg_v1/test.json --predictions preds.jsonl --protocol hcstvg \\
        --per-query per_query.csv --plot hist.png

``--per-query`` / ``--plot`` never replace an existing file without ``--overwrite``, nor an input; they are written
under a temporary name and renamed at the end. Exit codes: 0 success, 2 bad input (one line naming the file / query /
field on stderr; ``--debug`` for the traceback).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Any

from bridge_stg.errors_bridge_stg import BridgeSTGError

from bridge_stg.commands.common import atomic_output_file, check_output_file, run_command

from bridge_stg.evaluation.io import read_predictions, read_references
from bridge_stg.evaluation.metrics import PROTOCOLS, QUERY_TYPES, compute_stvg_metrics


PROG = "bridge-stg evaluate"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bridge-stg evaluate``."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Score STVG predictions (JSONL) against references (canonical JSONL/JSON/parquet/dataset folder, "
        "TubeDETR {'videos','trajectories'} JSON, or raw HC-STVG JSON). Values are fractions in [0, 1].",
    )
    p.add_argument("--references", required=True, help="reference file or dataset folder")
    p.add_argument("--predictions", required=True, help="prediction rows, JSONL (query_id, span, frame_ids, boxes)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="tubedetr", help="which frames are scored (default: tubedetr)")
    p.add_argument("--split", default=None, help="split to read when --references is a dataset folder")
    p.add_argument("--interpolate", action="store_true", help="fill missing predicted boxes by linear interpolation between predicted frames")
    p.add_argument("--stcat-compat", "--stcat_compat", dest="stcat_compat", action="store_true",
                   help="dense only: reproduce STCAT's one-frame-short GT end in tIoU / union / intersection")
    p.add_argument("--fps", type=float, default=5.0, help="tubedetr grid rate (default 5)")
    p.add_argument("--max-frames", "--max_frames", dest="max_frames", type=int, default=200, help="tubedetr grid cap (default 200)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")
    p.add_argument("--per-query", "--per_query", dest="per_query", default=None, help="write per-query numbers to this CSV")
    p.add_argument("--plot", default=None, help="write a histogram of per-query vIoU and tIoU to this PNG")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --per-query / --plot file")
    return p


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{100 * v:6.2f}"


def format_table(result: dict[str, Any]) -> str:
    """A readable table of a result dict (values ×100, as papers print them)."""
    cols = ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5", "m_sIoU")
    lines = [f"protocol: {result['protocol']}  {json.dumps(result['protocol_params'])}"]
    lines.append(f"{'group':<14}" + "".join(f"{c:>10}" for c in cols) + f"{'queries':>10}")
    for g in ("all",) + QUERY_TYPES:
        r = result[g]
        if g != "all" and r["num_queries"] == 0:
            continue
        lines.append(f"{g:<14}" + "".join(f"{_fmt(r[c]):>10}" for c in cols) + f"{r['num_queries']:>10}")
    if result.get("avg_m_vIoU") is not None:
        lines.append(f"average m_vIoU (declarative + interrogative) / 2: {_fmt(result['avg_m_vIoU']).strip()}")
    mp = result["missing_predictions"]
    if mp["count"]:
        lines.append(f"missing predictions (scored 0): {mp['count']} (first: {', '.join(mp['first_ids'])})")
    mb = result["missing_boxes"]
    if mb["count"]:
        lines.append(f"missing predicted boxes on scored GT frames (IoU 0): {mb['count']} in {mb['queries']} queries "
                     f"({mb['in_span_count']} inside the span intersection; first: {', '.join(mb['first_ids'])})")
    lines.append("values are percentages (x100); vIoU@R uses a strict '>'")
    return "\n".join(lines)


def write_per_query_csv(path: str, table: dict[str, list[Any]]) -> None:
    """One CSV row per reference query with every per-query number."""
    keys = list(table)
    with atomic_output_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(keys)
        for row in zip(*(table[k] for k in keys)):
            w.writerow(["" if v is None else v for v in row])


def write_plot(path: str, table: dict[str, list[Any]], title: str) -> None:
    """Histograms of per-query vIoU and tIoU (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    bins = [i / 20 for i in range(21)]
    for ax, key, color in ((axes[0], "vIoU", "tab:blue"), (axes[1], "tIoU", "tab:orange")):
        vals = table[key]
        ax.hist(vals, bins=bins, color=color, edgecolor="black")
        ax.set_xlabel(key)
        ax.set_ylabel("queries")
        ax.set_xlim(0, 1)
        mean = sum(vals) / len(vals) if vals else 0.0
        ax.axvline(mean, color="black", linestyle="--", label=f"mean {mean:.3f}")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_output_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run ``bridge-stg evaluate``; returns the exit code."""
    return run_command(PROG, _run, argv, errors=(BridgeSTGError, ValueError, OSError))


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    inputs = [args.references, args.predictions]
    for option, path in (("--per-query", args.per_query), ("--plot", args.plot)):
        if path is not None:
            check_output_file(path, args.overwrite, option, inputs=inputs)
    if args.per_query is not None and args.plot is not None and os.path.abspath(args.per_query) == os.path.abspath(args.plot):
        raise BridgeSTGError(f"--per-query and --plot: both name {args.plot}")
    refs, info = read_references(args.references, args.split)
    preds = read_predictions(args.predictions)
    result = compute_stvg_metrics(
        refs, preds, args.protocol, interpolate=args.interpolate, stcat_compat=args.stcat_compat,
        target_fps=args.fps, max_frames=args.max_frames, return_per_query=bool(args.per_query or args.plot),
    )
    per_query = result.pop("per_query", None)
    result["references"] = info
    if args.per_query:
        write_per_query_csv(args.per_query, per_query)
    if args.plot:
        write_plot(args.plot, per_query, f"{info['source']} ({args.protocol}, {len(per_query['query_id'])} queries)")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
        for note in info["notes"]:
            print(f"note: {note}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
