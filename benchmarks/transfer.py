"""Cross-task transfer in miniature (issue 17): at an equal budget of STVG steps and clips, STVG alone vs STVG + TVG vs
STVG + REC vs all three, scored on fresh STVG clips of every query family, and each auxiliary task's own score.

    python benchmarks/transfer.py [--quick] [--configs stvg,stvg+tvg,stvg+rec,stvg+tvg+rec] [--seeds 0,1,2]
                                  [--steps N] [--clips-per-family 50] [--threads 1] [--jobs 1] [--out DIR] [--table] [--losses]

Every run is :func:`bridge_stg.training.demo.train_demo` with the demo recipe's current defaults
(``DemoTrainingArguments()``, ``DemoModelArguments()``: model sizes, batch, optimizer, schedule, curriculum) and
three settings of this benchmark: ``max_steps=--steps`` (default: the recipe's ``DEMO_RECIPE_STEPS``) with no time
cap, ``families`` = every query family (``--families``), and ``aux_tasks`` = the configuration's auxiliary tasks
(docs/multitask.md §2: every step trains on the same ``batch_size`` STVG clips of the training stream as the STVG-only
run, plus ``aux_batch_size`` tvg / rec items per auxiliary task in extra forwards). The STVG clips of a seed are the
same in every configuration.

Test: the first ``--clips-per-family`` x families clips of the demo's STVG test stream (seed 0, families round robin:
the clips ``bridge-stg demo`` scores), and as many tvg / rec items per family of their own test streams
(``training/multitask_demo.AUX_STREAMS``), the same for every run. Every configuration is scored on all three tasks:
STVG per family (``score_clips``: m_tIoU, m_vIoU, vIoU@0.5, twin identity), tvg (m_tIoU, R@0.3/0.5/0.7) and rec
(accuracy@0.5, m_IoU), so the table shows both the transfer to STVG and each auxiliary task's own score (and what
the models that never trained on it make of it).

``--out DIR`` keeps one result JSON per (configuration, seed), ``DIR/<config>_seed<seed>.json`` with the git commit,
and the checkpoint beside it; a rerun reuses the finished results with the same steps, families and test clips
(so interrupted runs resume), and ``--table`` only tabulates what is in ``DIR``. Tables: STVG m_tIoU and m_vIoU per
family, mean ± population std over the seeds, and the auxiliary tasks' scores, each with a last row for the trivial
baseline on the same test items (the whole clip as the span, a centred box of 0.28 of the shorter side). The last
stdout line is one JSON object.

``--losses`` adds each auxiliary task's training objective (teacher-forced loss) on its test items under every finished
run's checkpoint, mean ± std per configuration: whether training on a task lowered its own held-out loss, which the
scores alone do not show while the boxes are still on the plateau (docs/method.md §3.17).

``--quick``: 2 steps, seed 0, 1 test clip per family (a smoke test of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from _common import guarded_run, run_record

ROOT = Path(__file__).resolve().parents[1]
#: configuration -> auxiliary tasks added to the STVG clips of every step
CONFIGS: dict[str, tuple[str, ...]] = {"stvg": (), "stvg+tvg": ("tvg",), "stvg+rec": ("rec",), "stvg+tvg+rec": ("tvg", "rec")}
TEST_SEED = 0
NUM_VAL_CLIPS = 4
STVG_KEYS = ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5", "identity_accuracy")
TVG_KEYS = ("m_tIoU", "R@0.3", "R@0.5", "R@0.7")
REC_KEYS = ("accuracy@0.5", "m_IoU")


def git_commit() -> dict[str, Any]:
    """The checkout's commit and whether it has uncommitted changes to tracked files."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def result_path(out_dir: str, config: str, seed: int) -> Path:
    return Path(out_dir) / f"{config}_seed{seed}.json"


def _round(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in d.items()}


def scored_items(task: str, clips_per_family: int, families: list[str]) -> list[Any]:
    """The test items every run is scored on, the same in every configuration and seed: ``clips_per_family`` per family
    from the task's test stream (seed ``TEST_SEED``, families round robin) -- STVG clips of ``families``, or tvg / rec
    items of the families that have a form of the task."""
    from bridge_stg.training.demo import TEST_STREAM, render_clips
    from bridge_stg.training.multitask_demo import AUX_STREAMS, aux_families, render_task_items

    if task == "stvg":
        return render_clips(TEST_STREAM, TEST_SEED, 0, clips_per_family * len(families), families=families)
    fams = aux_families(task, families)
    return render_task_items(task, AUX_STREAMS[task]["test"], TEST_SEED, 0, clips_per_family * len(fams), fams)


def run_one(config: str, seed: int, steps: int, clips_per_family: int, families: list[str], threads: int,
            out_dir: str, command: str) -> dict[str, Any]:
    """Train one configuration for one seed, score it on the three tasks' test items, write and return the result."""
    import torch

    from bridge_stg import BridgeSTGForVideoGrounding, BridgeSTGProcessor
    from bridge_stg.training.demo import DemoTrainingArguments, score_clips, train_demo
    from bridge_stg.training.multitask_demo import evaluate_task_items
    from bridge_stg.training.predict import predict_clips

    torch.set_num_threads(threads)
    run_dir = Path(out_dir) / f"{config}_seed{seed}"
    args = DemoTrainingArguments(
        output_dir=str(run_dir), seed=seed, minutes=1e9, max_steps=steps, eval_every_minutes=1e9,
        num_eval_clips=NUM_VAL_CLIPS, num_threads=threads, families=tuple(families), aux_tasks=CONFIGS[config],
        command=f"benchmarks/transfer.py config {config} seed {seed} steps {steps}",
    )
    t0 = time.perf_counter()
    summary = train_demo(args, progress=False)
    train_wall = time.perf_counter() - t0
    model = BridgeSTGForVideoGrounding.from_pretrained(run_dir).eval()
    processor = BridgeSTGProcessor.from_pretrained(run_dir)
    e0 = time.perf_counter()
    clips = scored_items("stvg", clips_per_family, families)
    rows, _ = predict_clips(model, processor, clips, "test", progress=False)
    stvg = score_clips(clips, rows, "test")
    scores: dict[str, Any] = {"stvg": {"all": _round({k: stvg["all"].get(k) for k in STVG_KEYS[:4]}),
                                       "families": {f: _round(r) for f, r in stvg["families"].items()}}}
    for task in ("tvg", "rec"):
        items = scored_items(task, clips_per_family, families)
        res = evaluate_task_items(model, processor, items, f"test_{task}")
        keys = TVG_KEYS if task == "tvg" else REC_KEYS
        scores[task] = {"all": _round({k: res[k] for k in keys}), "num_queries": res["num_queries"],
                        "families": {f: _round({k: r[k] for k in keys}) for f, r in res["families"].items()}}
    out = {
        "benchmark": "transfer", "config": config, "aux_tasks": list(CONFIGS[config]), "seed": seed, "steps": summary["steps"],
        "families": list(families), "clips_per_family": clips_per_family, "test_stream_seed": TEST_SEED,
        "git": git_commit(), "command": command, "threads": threads, "train_minutes": summary["train_minutes"],
        "train_wall_minutes": round(train_wall / 60.0, 2), "test_minutes": round((time.perf_counter() - e0) / 60.0, 2),
        "demo_args": summary["args"], **scores,
    }
    result_path(out_dir, config, seed).write_text(json.dumps(out, indent=1))
    return out


def trivial_baseline(clips_per_family: int, families: list[str]) -> dict[str, Any]:
    """The trivial baseline's scores on the same test items as :func:`run_one`: the whole clip as the span and a
    centred box (``trivial_baseline_rows``: side 0.28 of the shorter side) for STVG and REC, the whole clip for tvg."""
    from bridge_stg.evaluation.task_metrics import compute_task_metrics
    from bridge_stg.training.demo import centred_box, score_clips, trivial_baseline_rows
    from bridge_stg.training.multitask_demo import reference_rows

    clips = scored_items("stvg", clips_per_family, families)
    stvg = score_clips(clips, trivial_baseline_rows(clips, "test"), "test")
    out: dict[str, Any] = {"stvg": {"all": _round({k: stvg["all"].get(k) for k in STVG_KEYS[:4]}),
                                    "families": {f: _round(r) for f, r in stvg["families"].items()}}}
    for task in ("tvg", "rec"):
        refs = reference_rows(scored_items(task, clips_per_family, families), f"test_{task}")
        if task == "tvg":
            rows = [{"query_id": r["query_id"], "span": [0, r["num_frames"]]} for r in refs]
        else:
            rows = [{"query_id": r["query_id"], "frame_ids": [0], "boxes": [centred_box(r["width"], r["height"])]}
                    for r in refs]  # the box of trivial_baseline_rows, on the image (frame 0)
        res = compute_task_metrics(task, refs, rows)
        out[task] = {"all": _round({k: res[k] for k in (TVG_KEYS if task == "tvg" else REC_KEYS)})}
    return out


def aux_losses(out_dir: str, results: list[dict[str, Any]], clips_per_family: int, families: list[str],
               threads: int) -> dict[str, dict[str, float]]:
    """The training objective of each auxiliary task on its test items (the same items as the scores), teacher-forced,
    under every finished run's checkpoint (``DIR/<config>_seed<seed>``): did training on a task lower its own loss on
    items it never saw? ``{"<config> seed <seed>": {"tvg": loss, "rec": loss}}``, each a mean over the items."""
    import torch

    from bridge_stg import BridgeSTGForVideoGrounding, BridgeSTGProcessor
    from bridge_stg.training.multitask_demo import task_batch

    torch.set_num_threads(threads)
    items = {t: scored_items(t, clips_per_family, families) for t in ("tvg", "rec")}
    out: dict[str, dict[str, float]] = {}
    for r in results:
        if "error" in r:
            continue
        folder = Path(out_dir) / f"{r['config']}_seed{r['seed']}"
        if not (folder / "config.json").is_file():
            print(f"{folder}: no checkpoint, no held-out losses for {r['config']} seed {r['seed']}", flush=True)
            continue
        model = BridgeSTGForVideoGrounding.from_pretrained(folder).eval()
        processor = BridgeSTGProcessor.from_pretrained(folder)
        losses = {}
        with torch.no_grad():
            for task, its in items.items():
                total = 0.0
                for s in range(0, len(its), 16):
                    chunk = its[s: s + 16]
                    batch = task_batch(processor, chunk)
                    loss = model(**{k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}).loss
                    total += float(loss) * len(chunk)  # the loss is a mean over the chunk's items
                losses[task] = round(total / len(its), 4)
        out[f"{r['config']} seed {r['seed']}"] = losses
    return out


def losses_table(losses: dict[str, dict[str, float]], configs: list[str]) -> str:
    lines = ["| config | tvg loss | rec loss | seeds |", "|---|---|---|---|"]
    for c in configs:
        rs = [v for k, v in losses.items() if k.rsplit(" seed ", 1)[0] == c]
        if rs:
            lines.append(f"| {c} | {_cell([v['tvg'] for v in rs])} | {_cell([v['rec'] for v in rs])} | {len(rs)} |")
    return "\n".join(lines)


def _safe_run(*call: Any) -> dict[str, Any]:
    return guarded_run(run_one, ("config", "seed"), *call)


def _cell(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    mean = statistics.fmean(values)
    return f"{mean:.3f} ± {statistics.pstdev(values):.3f}" if len(values) > 1 else f"{mean:.3f}"


def tables(results: list[dict[str, Any]], configs: list[str], baseline: dict[str, Any] | None = None) -> dict[str, str]:
    """Markdown tables (mean ± population std over seeds): STVG m_tIoU and m_vIoU per family, the auxiliary tasks;
    with ``baseline`` (:func:`trivial_baseline`), its row last in each."""
    ok = [r for r in results if "error" not in r]
    families = list(dict.fromkeys(f for r in ok for f in r["families"]))
    if baseline is not None:
        ok = ok + [{"config": "trivial baseline", **baseline}]
        configs = [*configs, "trivial baseline"]
    out: dict[str, str] = {}
    for metric in ("m_vIoU", "m_tIoU"):
        lines = [f"| config | {' | '.join(families)} | all | seeds |", "|---|" + "---|" * (len(families) + 2)]
        for c in configs:
            rs = [r for r in ok if r["config"] == c]
            if rs:
                cells = [_cell([r["stvg"]["families"].get(f, {}).get(metric) for r in rs]) for f in families]
                seeds = len(rs) if c in CONFIGS else "–"
                lines.append(f"| {c} | " + " | ".join(cells) + f" | {_cell([r['stvg']['all'][metric] for r in rs])} | {seeds} |")
        out[f"stvg_{metric}"] = "\n".join(lines)
    lines = ["| config | trained on | tvg m_tIoU | tvg R@0.5 | tvg R@0.7 | rec accuracy@0.5 | rec m_IoU | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for c in configs:
        rs = [r for r in ok if r["config"] == c]
        if rs:
            cells = [_cell([r["tvg"]["all"][k] for r in rs]) for k in ("m_tIoU", "R@0.5", "R@0.7")]
            cells += [_cell([r["rec"]["all"][k] for r in rs]) for k in REC_KEYS]
            known = c in CONFIGS
            trained = ", ".join(["stvg", *CONFIGS[c]]) if known else "–"
            lines.append(f"| {c} | {trained} | " + " | ".join(cells) + f" | {len(rs) if known else '–'} |")
    out["aux_tasks"] = "\n".join(lines)
    return out


def main() -> None:
    from bridge_stg.training.demo import DEMO_FAMILIES, DEMO_RECIPE_STEPS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 steps, seed 0, 1 test clip per family (smoke test)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of %(default)s")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default: %(default)s)")
    p.add_argument("--steps", type=int, default=DEMO_RECIPE_STEPS,
                   help="optimizer steps per run (default: the demo recipe's %(default)s)")
    p.add_argument("--families", default=",".join(DEMO_FAMILIES), help="STVG query families (default: all)")
    p.add_argument("--clips-per-family", type=int, default=50,
                   help="test clips (tvg / rec items) per family (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default: %(default)s)")
    p.add_argument("--out", default=None, help="result JSONs + checkpoints (default: a new temporary folder)")
    p.add_argument("--table", action="store_true", help="train nothing: tabulate the results found in --out")
    p.add_argument("--losses", action="store_true",
                   help="also the auxiliary tasks' held-out training loss under every finished run's checkpoint")
    args = p.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    families = [f for f in args.families.split(",") if f]
    unknown = [c for c in configs if c not in CONFIGS] + [f for f in families if f not in DEMO_FAMILIES]
    if unknown:
        p.error(f"unknown configs / families {unknown}; choose from {list(CONFIGS)} / {list(DEMO_FAMILIES)}")
    steps, seeds, cpf = args.steps, [int(s) for s in args.seeds.split(",") if s], args.clips_per_family
    if args.quick:
        steps, seeds, cpf = 2, [0], 1
    if steps < 1 or cpf < 1 or not seeds:
        p.error("--steps and --clips-per-family must be >= 1, --seeds non-empty")
    if args.table and not args.out:
        p.error("--table needs --out")
    out_dir = args.out or tempfile.mkdtemp(prefix="bridge_stg_transfer_")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    command = " ".join(shlex.quote(a) for a in [sys.executable.rsplit("/", 1)[-1], *sys.argv])
    results: list[dict[str, Any]] = []
    pending = []
    for s in seeds:
        for c in configs:
            f = result_path(out_dir, c, s)
            if f.is_file():
                res = json.loads(f.read_text())
                if (res.get("steps"), res.get("clips_per_family"), res.get("families")) == (steps, cpf, families):
                    results.append(res)
                    print(f"reused {c} seed {s} from {f} (commit {(res.get('git') or {}).get('commit')})", flush=True)
                    continue
                print(f"{f}: other steps / test clips / families, not reused", flush=True)
            if args.table:
                print(f"missing {c} seed {s} (--table: not run)", flush=True)
                continue
            pending.append((c, s))
    t0, load_start = time.perf_counter(), os.getloadavg()

    def report(res: dict[str, Any]) -> None:
        results.append(res)
        if "error" in res:
            print(f"{res['config']} seed {res['seed']}: FAILED {res['error']}\n{res['traceback']}", flush=True)
            return
        fam = "  ".join(f"{f} {r['m_vIoU']:.3f}" for f, r in res["stvg"]["families"].items())
        print(f"{res['config']:13s} seed {res['seed']}: {res['steps']} steps ({res['train_minutes']:.1f} min)  "
              f"stvg m_tIoU {res['stvg']['all']['m_tIoU']:.3f} m_vIoU {res['stvg']['all']['m_vIoU']:.3f} [{fam}]  "
              f"tvg m_tIoU {res['tvg']['all']['m_tIoU']:.3f}  rec acc@0.5 {res['rec']['all']['accuracy@0.5']:.3f}  "
              f"[{(time.perf_counter() - t0) / 60:.1f} min elapsed]", flush=True)

    call = (steps, cpf, families, args.threads, out_dir, command)
    if args.jobs <= 1:
        for c, s in pending:
            report(_safe_run(c, s, *call))
    else:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(_safe_run, c, s, *call) for c, s in pending]):
                report(fut.result())
    order = {(c, s): i for i, (s, c) in enumerate((s, c) for s in seeds for c in configs)}
    results.sort(key=lambda r: order.get((r["config"], r["seed"]), 0))
    baseline = trivial_baseline(cpf, families)
    tabs = tables(results, configs, baseline)
    ok = [r for r in results if "error" not in r]
    losses = aux_losses(out_dir, results, cpf, families, args.threads) if args.losses else None
    if losses is not None:
        tabs["aux_losses"] = losses_table(losses, configs)
    commits = sorted({str((r.get("git") or {}).get("commit")) + (" (dirty)" if (r.get("git") or {}).get("dirty") else "")
                      for r in ok})
    print(f"\n### STVG m_vIoU per family (mean ± population std over seeds {seeds}, {steps} steps, {cpf} test clips per "
          f"family)\n\n{tabs['stvg_m_vIoU']}\n\n### STVG m_tIoU per family\n\n{tabs['stvg_m_tIoU']}\n\n"
          f"### auxiliary tasks ({cpf} test items per family)\n\n{tabs['aux_tasks']}\n\n"
          + (f"### auxiliary tasks' held-out training loss (teacher-forced)\n\n{tabs['aux_losses']}\n\n" if losses else "")
          + f"commits: {', '.join(commits)}",
          flush=True)
    print(json.dumps({
        **run_record("transfer", args.quick, t0, load_start), "command": command,
        "wall_minutes": round((time.perf_counter() - t0) / 60.0, 2), "quick": args.quick, "steps": steps, "seeds": seeds,
        "configs": configs, "families": families, "clips_per_family": cpf, "threads": args.threads, "jobs": args.jobs,
        "out": out_dir, "commits": commits, "git": git_commit(),
        "missing": [f"{c} seed {s}" for s in seeds for c in configs
                    if not any(r["config"] == c and r["seed"] == s and "error" not in r for r in results)],
        "tables": tabs, "trivial_baseline": baseline, "aux_losses": losses, "runs": [{k: v for k, v in r.items() if k != "demo_args"} for r in results],
    }))


if __name__ == "__main__":
    main()
