"""Speed of the vectorised STVG metric core vs the straightforward per-query / per-frame loop.

    python benchmarks/eval_speed.py [--quick] [--protocol tubedetr|dense|sampled|hcstvg] [--seed 0]

Builds a synthetic VidSTG-test-sized input (10,303 queries; segments of ~28 s, mostly 30 fps; GT boxes on
every tube frame; predictions with boxes on the 5 fps grid of the segment, as TubeDETR emits them, ~3 %
of them dropped, jittered spans and boxes), then scores the same rows in the same run with

* ``core``: :func:`bridge_stg.evaluation.metrics.per_query_metrics` + aggregation on packed arrays;
* ``end_to_end``: :func:`bridge_stg.evaluation.compute_stvg_metrics` from the row dicts (validation and
  packing included);
* ``loop``: :func:`bridge_stg.evaluation.reference_loop.loop_metrics` from the same row dicts.

It asserts identical numbers (max |Δ| ≤ 1e-9 per query and per aggregate) and prints one JSON object as
the last line of stdout. ``--quick`` uses 1,000 queries.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import numpy as np

from bridge_stg.evaluation.metrics import (
    compute_stvg_metrics,
    pack_predictions,
    pack_references,
    per_query_metrics,
    protocol_params,
    summarize,
    tubedetr_grids,
)
from bridge_stg.evaluation.reference_loop import loop_metrics
from _common import run_record  # benchmarks/ is on sys.path when a script runs

VIDSTG_TEST_QUERIES = 10_303


def make_data(n: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Synthetic canonical reference and prediction rows (see the module docstring)."""
    rng = np.random.default_rng(seed)
    fps = rng.choice([30.0, 30.0, 30.0, 30000 / 1001, 25.0, 24.0], size=n)
    seconds = np.clip(rng.normal(28.0, 9.0, size=n), 5.0, 60.0)
    seg_len = np.maximum((seconds * fps).astype(np.int64), 30)
    seg_start = rng.integers(0, 3000, size=n)
    seg_end = seg_start + seg_len
    tube_len = np.maximum((seg_len * rng.uniform(0.15, 0.6, size=n)).astype(np.int64), 2)
    tube_start = seg_start + (rng.uniform(0, 1, size=n) * (seg_len - tube_len)).astype(np.int64)
    tube_end = tube_start + tube_len
    g_off, g_fr = tubedetr_grids(seg_start, seg_end, fps)
    refs: list[dict[str, Any]] = []
    preds: list[dict[str, Any]] = []
    for i in range(n):
        x, y = rng.uniform(0, 500, size=2)
        w, h = rng.uniform(20, 200, size=2)
        frames = np.arange(tube_start[i], tube_end[i])
        drift = np.cumsum(rng.normal(0, 0.5, size=(len(frames), 2)), axis=0)
        gt = np.column_stack([x + drift[:, 0], y + drift[:, 1], x + w + drift[:, 0], y + h + drift[:, 1]])
        refs.append({
            "query_id": str(i), "query_type": "declarative" if i % 9 < 4 else "interrogative", "fps": float(fps[i]),
            "segment_start": int(seg_start[i]), "segment_end": int(seg_end[i]),
            "tube_start": int(tube_start[i]), "tube_end": int(tube_end[i]),
            "frame_ids": frames.tolist(), "boxes": gt.tolist(),
        })
        shift = rng.integers(-tube_len[i] // 2, tube_len[i] // 2 + 1, size=2)
        ps = int(np.clip(tube_start[i] + shift[0], seg_start[i], seg_end[i] - 2))
        pe = int(np.clip(tube_end[i] + shift[1], ps + 1, seg_end[i]))
        pf = g_fr[g_off[i]:g_off[i + 1]]
        pf = pf[rng.uniform(size=len(pf)) > 0.03]
        base = np.array([x, y, x + w, y + h])
        pb = base + rng.normal(0, 0.08 * max(w, h), size=(len(pf), 4))
        pb[:, 2:] = np.maximum(pb[:, 2:], pb[:, :2])
        preds.append({"query_id": str(i), "span": [ps, pe], "frame_ids": pf.tolist(), "boxes": pb.tolist(),
                      "sampled_frame_ids": pf.tolist()})
    return refs, preds


def best_of(fn, repeat: int) -> tuple[float, Any]:
    """Smallest wall time of ``repeat`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 queries instead of 10,303")
    ap.add_argument("--protocol", default="tubedetr", choices=["tubedetr", "dense", "sampled", "hcstvg"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="vectorised timings: best of this many runs")
    args = ap.parse_args()
    started, load_start = time.perf_counter(), list(os.getloadavg())
    n = 1000 if args.quick else VIDSTG_TEST_QUERIES

    t = time.perf_counter()
    refs, preds = make_data(n, args.seed)
    t_gen = time.perf_counter() - t
    gt_boxes = sum(len(r["frame_ids"]) for r in refs)
    pred_boxes = sum(len(p["frame_ids"]) for p in preds)
    print(f"queries {n}, GT boxes {gt_boxes:,}, predicted boxes {pred_boxes:,}, generated in {t_gen:.2f} s", flush=True)

    ra = pack_references(refs)
    pa, missing = pack_predictions(preds, ra)
    params = protocol_params(args.protocol, interpolate=False, stcat_compat=False, target_fps=5.0, max_frames=200)

    def core():
        pq = per_query_metrics(ra, pa, args.protocol)
        return pq, summarize(ra, pq, args.protocol, params, missing)

    t_core, (pq, res_core) = best_of(core, args.repeat)
    print(f"core (packed arrays): {t_core:.3f} s", flush=True)
    t_e2e, res_e2e = best_of(lambda: compute_stvg_metrics(refs, preds, args.protocol), args.repeat)
    print(f"end to end (rows -> result): {t_e2e:.3f} s", flush=True)
    t = time.perf_counter()
    res_loop = loop_metrics(refs, preds, args.protocol)
    t_loop = time.perf_counter() - t
    print(f"loop (rows -> result): {t_loop:.3f} s", flush=True)

    # identical numbers
    max_dq = 0.0
    for k in ("tIoU", "vIoU", "sIoU"):
        loop_vals = np.array([res_loop["per_query"][q][k] for q in ra.query_ids])
        max_dq = max(max_dq, float(np.max(np.abs(pq[k] - loop_vals))))
    max_da = 0.0
    for g in ("all", "declarative", "interrogative"):
        for k in ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5", "m_sIoU"):
            max_da = max(max_da, abs(res_core[g][k] - res_loop[g][k]), abs(res_e2e[g][k] - res_core[g][k]))
    max_da = max(max_da, abs(res_core["avg_m_vIoU"] - res_loop["avg_m_vIoU"]))
    assert max_dq <= 1e-9 and max_da <= 1e-9, (max_dq, max_da)

    out = {
        **run_record("eval_speed", args.quick, started, load_start),
        "protocol": args.protocol, "queries": n, "seed": args.seed,
        "gt_boxes": gt_boxes, "pred_boxes": pred_boxes,
        "core_s": round(t_core, 4), "end_to_end_s": round(t_e2e, 4), "loop_s": round(t_loop, 4),
        "speedup_core": round(t_loop / t_core, 1), "speedup_end_to_end": round(t_loop / t_e2e, 1),
        "max_abs_diff_per_query": max_dq, "max_abs_diff_aggregate": max_da,
        "avg_m_vIoU": res_core["avg_m_vIoU"], "m_vIoU": res_core["all"]["m_vIoU"],
        "python": platform.python_version(), "numpy": np.__version__,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
