"""Sweep of the demo training recipe: a few variants, each trained for the same budget, scored on held-out clips.

    python benchmarks/demo_sweep.py [--quick] [--minutes 5] [--seed 0] [--threads 1] [--variants base,h64,lr2e-3]

Every variant runs :func:`bridge_stg.training.demo.train_demo` (the recipe of
``bridge-stg demo --train``) from scratch into a temporary folder with the same wall-clock budget and seed,
and reports its held-out learning curve (tubedetr protocol, the validation stream, never the demo's test
stream) plus steps/second. Prints one line per variant and, as the last line of stdout, one JSON object
``{"machine", "date", "minutes", "seed", "variants": {name: {"steps", "sec_per_step", "final", "curve"}}}``.

``--quick``: 3 steps per variant on 4 held-out clips (a smoke test of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from typing import Any

from _common import run_record  # benchmarks/ is on sys.path when a script runs
from bridge_stg.training.demo import DemoModelArguments, DemoTrainingArguments, train_demo

#: name -> (model overrides, training overrides)
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "base": ({}, {}),
    "h64": ({"hidden_size": 64, "intermediate_size": 128, "decoder_hidden_size": 64, "decoder_ffn_dim": 128}, {}),
    "lr2e-3": ({}, {"learning_rate": 2e-3}),
    "bs16": ({}, {"batch_size": 16}),
    "frames8": ({"max_frames": 8}, {}),
}


def run_variant(name: str, minutes: float, seed: int, threads: int, quick: bool) -> dict[str, Any]:
    """Train one variant into a temporary folder; return steps, speed, final held-out metrics and the curve."""
    model_over, train_over = VARIANTS[name]
    with tempfile.TemporaryDirectory(prefix=f"demo_sweep_{name}_") as tmp:
        args = DemoTrainingArguments(
            output_dir=tmp, seed=seed, minutes=minutes, max_steps=3 if quick else None,
            eval_every_minutes=max(minutes / 4.0, 0.5), num_eval_clips=4 if quick else 96, num_threads=threads,
            model=replace(DemoModelArguments(), **model_over),
        )
        args = replace(args, **train_over)
        summary = train_demo(args, progress=not quick)
        curve = json.loads(open(os.path.join(tmp, "learning_curve.json")).read())
    steps = summary["steps"]
    return {
        "steps": steps, "sec_per_step": round(60.0 * summary["train_minutes"] / max(steps, 1), 3),
        "final": summary["validation"], "curve": curve,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 steps per variant, 4 held-out clips (smoke test)")
    p.add_argument("--minutes", type=float, default=5.0, help="training budget per variant (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: measured 4-6x faster than 2 on the shared 2-core machine)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of %(default)s")
    args = p.parse_args()
    started, load_start = time.perf_counter(), list(os.getloadavg())
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    results: dict[str, Any] = {}
    for name in names:
        res = run_variant(name, args.minutes, args.seed, args.threads, args.quick)
        results[name] = res
        f = res["final"]
        print(f"{name:10s} steps {res['steps']:6d}  {res['sec_per_step']:.3f} s/step  m_tIoU {f['m_tIoU']:.3f}  "
              f"m_vIoU {f['m_vIoU']:.3f}", flush=True)
    print(json.dumps({
        **run_record("demo_sweep", args.quick, started, load_start),
        "minutes": args.minutes, "seed": args.seed, "variants": results,
    }))


if __name__ == "__main__":
    main()
