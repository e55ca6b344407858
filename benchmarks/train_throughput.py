"""Training throughput and peak memory of the demo recipe (``bridge-stg demo --train``) on CPU.

    python benchmarks/train_throughput.py [--quick] [--steps 30] [--warmup 3] [--threads 1,2]

What is measured. The demo model (``build_demo_model(DemoModelArguments())``: tiny Qwen2.5-VL backbone, 16 frames
of 112×112 at 2 fps, ``span_source="frame"``) trained as ``train_demo`` trains it with the
``DemoTrainingArguments`` defaults: batch 8 synthetic clips of the training stream rendered in memory, the
processor's training batch, forward, backward, gradient clipping (max norm 1.0) and an AdamW step (lr 1e-3,
weight decay 0.01; the lr schedule is left out, it costs nothing). Every step is split into

- data: ``render_clips`` (synthetic rendering) + ``training_batch`` (the processor: resize, patchify, prompt,
  tokenise, targets);
- model: forward (with the losses), backward, clip + optimiser step.

After ``--warmup`` steps that are not counted, ``--steps`` steps are timed and the median per step is reported,
for each torch thread count of ``--threads``. clips/s = batch / median step time.

Memory. Each thread setting runs in its own subprocess (this script with ``--worker``), so the peak resident set
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, a high-water mark that never goes down) of one setting cannot
include the other's. The worker reads it after the imports, after building the model and optimiser, and after
the last step; "training peak − built" is what the training steps themselves added (activations, gradients, AdamW
state, batch tensors). torch 2.13 exposes no CPU allocator statistics, so instead of a torch allocator peak the
exact bytes of parameters, gradients and AdamW state are reported.

The machine is a shared 2-core CPU: another job may be using one core, so the 2-thread figures in particular
depend on the load average recorded with each setting.

``--quick``: 1 warm-up + 3 steps, 1 thread only (a smoke test, not a measurement). Last stdout line: one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import run_record  # benchmarks/ is on sys.path when a script runs


def max_rss_mb() -> float:
    """Peak resident set of this process so far, MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def worker(threads: int, steps: int, warmup: int, seed: int) -> dict[str, Any]:
    """Train the demo model for ``warmup + steps`` steps with ``threads`` torch threads; timings and memory."""
    import torch

    from bridge_stg.training.demo import (
        TRAIN_STREAM, DemoModelArguments, DemoTrainingArguments, build_demo_model, render_clips, training_batch,
    )

    torch.set_num_threads(threads)
    load_start = os.getloadavg()
    rss_imports = max_rss_mb()
    targs = DemoTrainingArguments()
    bs = targs.batch_size
    model, processor = build_demo_model(DemoModelArguments(), seed=seed)
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=targs.learning_rate, weight_decay=targs.weight_decay)
    rss_built = max_rss_mb()
    parts: dict[str, list[float]] = {k: [] for k in ("render", "process", "forward", "backward", "optim", "step")}
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        clips = render_clips(TRAIN_STREAM, seed, step * bs, bs)
        t1 = time.perf_counter()
        batch = training_batch(processor, clips)
        tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        t2 = time.perf_counter()
        loss = model(**tensors).loss
        t3 = time.perf_counter()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        t4 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), targs.max_grad_norm)
        optim.step()
        t5 = time.perf_counter()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}")
        if step >= warmup:
            for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0)):
                parts[k].append(v)
    rss_peak = max_rss_mb()
    med = {k: statistics.median(v) for k, v in parts.items()}
    data_s = med["render"] + med["process"]
    model_s = med["forward"] + med["backward"] + med["optim"]
    params = list(model.parameters())
    n_params = sum(p.numel() for p in params)
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    optim_bytes = sum(t.numel() * t.element_size() for s in optim.state.values() for t in s.values() if torch.is_tensor(t))
    return {
        "threads": threads, "torch_threads_effective": torch.get_num_threads(), "batch_size": bs,
        "steps": steps, "warmup": warmup, "parameters": n_params,
        "s_per_step": round(med["step"], 4), "clips_per_s": round(bs / med["step"], 3),
        "data_s": round(data_s, 4), "render_s": round(med["render"], 4), "process_s": round(med["process"], 4),
        "model_s": round(model_s, 4), "forward_s": round(med["forward"], 4), "backward_s": round(med["backward"], 4),
        "optim_s": round(med["optim"], 4), "data_fraction": round(data_s / med["step"], 3),
        "model_only_clips_per_s": round(bs / model_s, 3),
        "step_runs_s": [round(x, 4) for x in parts["step"]],
        "max_rss_mb_after_imports": round(rss_imports, 1), "max_rss_mb_after_build": round(rss_built, 1),
        "peak_rss_mb": round(rss_peak, 1), "training_rss_increase_mb": round(rss_peak - rss_built, 1),
        "torch_cpu_allocator_peak": None,
        "state_mb": {"params": round(param_bytes / 2**20, 2), "grads": round(grad_bytes / 2**20, 2),
                     "adamw": round(optim_bytes / 2**20, 2)},
        "load_avg_start": load_start, "load_avg_end": os.getloadavg(), "torch": torch.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per thread setting (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts, one subprocess each")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(int(args.threads), args.steps, args.warmup, args.seed)))
        return
    steps, warmup = (3, 1) if args.quick else (args.steps, args.warmup)
    thread_list = [1] if args.quick else [int(x) for x in args.threads.split(",")]
    started, load_start = time.perf_counter(), list(os.getloadavg())
    results: dict[str, Any] = {}
    for t in thread_list:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--threads", str(t), "--steps", str(steps),
               "--warmup", str(warmup), "--seed", str(args.seed)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"worker with {t} thread(s) failed (exit {proc.returncode})")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results[str(t)] = r
        print(f"threads={t}: {r['s_per_step']:.3f} s/step, {r['clips_per_s']:.2f} clips/s (batch {r['batch_size']}) | "
              f"data {r['data_s']:.3f} s (render {r['render_s']:.3f} + processor {r['process_s']:.3f}) = "
              f"{r['data_fraction']:.0%} | model {r['model_s']:.3f} s (fwd {r['forward_s']:.3f}, bwd {r['backward_s']:.3f}, "
              f"clip+AdamW {r['optim_s']:.3f}) | peak RSS {r['peak_rss_mb']:.0f} MiB (+{r['training_rss_increase_mb']:.0f} "
              f"MiB over the built model) | load {[round(x, 2) for x in r['load_avg_start']]}", flush=True)
    print(json.dumps({
        **run_record("train_throughput", args.quick, started, load_start),
        "steps": steps, "warmup": warmup, "threads": thread_list, "results": results,
    }))


if __name__ == "__main__":
    main()
