"""Where the look-alikes of the twin and relational families lie on the decoder's memory grid.

    python benchmarks/twin_geometry.py [--quick] [--clips 60] [--cell-px 28]

The box head of the demo model (docs/method.md §3.6) scores one memory token per cell of the merged grid: 14-px
patches merged 2x2, so 28-px cells, 4x4 of them on the 112-px demo frames. If the target and its look-alike twin often
fell into the same cell, no readout of that head could tell them apart, whatever the model knew. This script renders
the first ``--clips`` clips of each family with a twin (the demo's test stream, seed 0) and measures, on every
annotated frame where both the target and the twin are present, whether their box centres fall into the same cell,
into cells at most one apart (the peak readout's 3x3 neighbourhood), and how far apart they are. It renders clips
only; no model is involved.

``--quick``: 5 clips per family (a smoke test, not a measurement). The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from _common import run_record

TWIN_FAMILIES = ("twins_motion", "twins_event", "relational")


def twin_geometry(clips: list[Any], cell_px: float) -> dict[str, float]:
    """Share of frames (both objects present) whose box centres share a cell / lie within 3x3 cells, and the median
    centre distance and target box width in pixels."""
    same = near = frames = 0
    distances: list[float] = []
    widths: list[float] = []
    for clip in clips:
        if clip.twin_boxes is None:
            raise ValueError(f"a {clip.family} clip has no twin boxes")
        for target, twin in zip(clip.boxes, clip.twin_boxes):
            a, b = np.asarray(target, dtype=float), np.asarray(twin, dtype=float)
            if a[2] <= a[0] or b[2] <= b[0]:  # one of them is absent on this frame
                continue
            ca, cb = (a[:2] + a[2:]) / 2, (b[:2] + b[2:]) / 2
            cell_a, cell_b = np.floor(ca / cell_px), np.floor(cb / cell_px)
            frames += 1
            same += bool((cell_a == cell_b).all())
            near += bool(np.abs(cell_a - cell_b).max() <= 1)
            distances.append(float(np.linalg.norm(ca - cb)))
            widths.append(float(a[2] - a[0]))
    if not frames:
        raise ValueError("no frame shows both the target and its twin")
    return {"frames": frames, "same_cell": same / frames, "within_3x3": near / frames,
            "median_centre_distance_px": float(np.median(distances)), "median_target_width_px": float(np.median(widths))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="5 clips per family (smoke test)")
    p.add_argument("--clips", type=int, default=60, help="clips per family (default 60)")
    p.add_argument("--cell-px", type=float, default=28.0, help="side of one memory cell in pixels (demo model: 28)")
    args = p.parse_args()

    from bridge_stg.training.demo import TEST_STREAM, render_clips

    num_clips = 5 if args.quick else args.clips
    t0 = time.perf_counter()
    load_start = list(os.getloadavg())
    results = {f: twin_geometry(render_clips(TEST_STREAM, 0, 0, num_clips, families=(f,)), args.cell_px)
               for f in TWIN_FAMILIES}
    print("| family | frames | same cell | within 3x3 cells | median centre distance | median target width |")
    print("|---|---|---|---|---|---|")
    for f, r in results.items():
        print(f"| {f} | {r['frames']} | {r['same_cell']:.1%} | {r['within_3x3']:.1%} | "
              f"{r['median_centre_distance_px']:.0f} px | {r['median_target_width_px']:.0f} px |")
    print(json.dumps({**run_record("twin_geometry", args.quick, t0, load_start), "clips_per_family": num_clips,
                      "cell_px": args.cell_px, "results": results}))


if __name__ == "__main__":
    main()
