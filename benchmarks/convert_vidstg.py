"""Benchmark: convert the real VidSTG test sentences (+ stand-in VidOR trajectories) to a datasets folder.

    python benchmarks/convert_vidstg.py [--quick] [--sentences FILE]

Stand-in VidOR files (boxes for every target tid on every tube frame, see ``tests/helpers_vidor.py``)
are generated first and timed separately. Then ``convert_vidstg`` (JSON parsing, tube boxes, report)
and ``write_dataset`` (validation, parquet, card) are timed, and the folder is loaded back with
``datasets.load_dataset``. The last line printed is one JSON object with the numbers.
``--quick`` converts only the first 500 entries.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import helpers_vidor as H  # noqa: E402

from bridge_stg.processing.vidstg import convert_vidstg  # noqa: E402
from bridge_stg.processing.writer import write_dataset  # noqa: E402

from _common import run_record  # noqa: E402  (benchmarks/ is on sys.path when a script runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the first 500 entries")
    ap.add_argument("--sentences", default=os.path.join(os.environ.get("BRIDGE_STG_VIDSTG_DIR", "."), "test_annotations.json"),
                    help="VidSTG test_annotations.json (default: in the folder named by BRIDGE_STG_VIDSTG_DIR)")
    args = ap.parse_args()
    started, load_start = time.perf_counter(), list(os.getloadavg())
    if not os.path.isfile(args.sentences):
        ap.error(f"--sentences {args.sentences}: no such file (pass the VidSTG test_annotations.json, or set "
                 "BRIDGE_STG_VIDSTG_DIR to its folder)")
    entries = H.load_entries(args.sentences)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sentences = Path(args.sentences)
        if args.quick:
            entries = entries[:500]
            sentences = tmp / "test_annotations.json"
            sentences.write_text(json.dumps(entries))
        t0 = time.perf_counter()
        vidor = H.write_standin_vidor(entries, tmp / "vidor")
        t1 = time.perf_counter()
        vidor_mb = sum(f.stat().st_size for f in vidor.rglob("*.json")) / 2**20
        rows, report = convert_vidstg(sentences, vidor, "test", progress=False)
        t2 = time.perf_counter()
        write_dataset(tmp / "out", {"test": rows}, report, title="VidSTG test (benchmark)")
        t3 = time.perf_counter()
        import datasets

        ds = datasets.load_dataset(str(tmp / "out"), cache_dir=str(tmp / "cache"))
        t4 = time.perf_counter()
        n_boxes = sum(len(r["frame_ids"]) for r in rows)
        parquet_mb = sum(f.stat().st_size for f in (tmp / "out" / "data").glob("*.parquet")) / 2**20
        result = {
            **run_record("convert_vidstg", args.quick, started, load_start), "entries": len(entries), "videos": len({e["vid"] for e in entries}),
            "rows": len(rows), "rows_loaded": ds["test"].num_rows, "tube_boxes": n_boxes,
            "by_query_type": report.to_dict()["splits"]["test"]["by_query_type"],
            "standin_vidor_s": round(t1 - t0, 2), "standin_vidor_mb": round(vidor_mb, 1),
            "convert_s": round(t2 - t1, 2), "write_s": round(t3 - t2, 2), "convert_and_write_s": round(t3 - t1, 2),
            "load_dataset_s": round(t4 - t3, 2), "parquet_mb": round(parquet_mb, 1), "cpu_count": os.cpu_count(),
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
