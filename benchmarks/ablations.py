"""The evidence table on the synthetic benchmark: the demo recipe, each component of the method off, the coupled
text-box baseline; same data (every query family), same number of optimizer steps, same seeds, same test clips.

    python benchmarks/ablations.py [--quick] [--steps 2500] [--seeds 0,1,2] [--variants full,...,coupled]
                                   [--num-test-clips 250] [--threads 1] [--jobs 2] [--out-dir DIR] [--resume]
                                   [--report-only]

Every run is :func:`bridge_stg.training.demo.train_demo` (the recipe of ``bridge-stg demo --train``: same model
sizes, batch, optimizer, warm-up, training stream ``TRAIN_STREAM`` under the run's seed, the query families of
``DEMO_FAMILIES`` round robin) with one change to the ``BridgeSTGConfig`` (``DemoModelArguments.config_overrides``):

* ``full``: the recipe as shipped;
* ``single_layer``: ``bridge_num_layers=1`` (bridging queries and frame states from the last LLM layer only:
  no multi-layer fusion);
* ``no_eta``: ``eta=False`` (the decoder runs on every sampled frame, in training and at inference);
* ``no_negatives``: ``num_negative_frames=0`` and ``loss_contrastive_weight=0.0``: the decoder is trained on
  positive frames only, the relevance loss is restricted to positive frames and the InfoNCE term is off;
* ``no_bridge``: ``bridge_in_decoder=False``: the decoder's query positions leave the bridging queries out;
* ``text_span``: ``span_source="text"``: the MLLM writes the span as text ("From A s to B s."), the paper's
  temporal path, instead of the per-frame start / end head;
* ``coupled``: ``grounding_mode="coupled"``: the MLLM alone is trained (LM loss) to write the span and one
  ``<t s>: (x1,y1,x2,y2)`` line per positive sampled frame; no bridge, no decoder.

Budget: ``max_steps=--steps`` for every run with an unlimited time budget, so the learning-rate schedule and the
curriculum (the first ``family_warmup_steps`` steps on the appearance family, then every family) are functions of the
step alone; no periodic held-out evaluation. A budget of 1,000 steps or less is the curriculum's appearance phase
only. Test: the first ``--num-test-clips`` clips of the demo's test
stream (``TEST_STREAM``, seed 0, the families round robin: the clips ``bridge-stg demo`` scores), the same for every
run, grounded with ``predict_clips`` and scored per family with ``score_clips`` (tubedetr protocol; twin identity
accuracy for the twin families). The coupled baseline's generation budget is the token count of its longest
well-formed answer (span + a line for every sampled frame, computed with the tokenizer, max over extreme boxes)
plus 16; its malformed / unparsable generations are counted.

Runs go to ``--jobs`` worker processes (``--threads`` torch threads each); each run's checkpoint and result JSON stay
in ``--out-dir`` (``--resume`` reuses finished results; ``--resume --report-only`` only tabulates them). Prints a
markdown table per seed, the mean ± std over seeds, and a per-family table; the last stdout line is one JSON object.

``--quick``: 3 steps, seed 0, 5 test clips (a smoke test of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from _common import guarded_run, run_record  # this folder is on sys.path when the script runs

#: name -> BridgeSTGConfig overrides of the demo recipe
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "single_layer": {"bridge_num_layers": 1},
    "no_eta": {"eta": False},
    "no_negatives": {"num_negative_frames": 0, "loss_contrastive_weight": 0.0},
    "no_bridge": {"bridge_in_decoder": False},
    "text_span": {"span_source": "text"},
    "coupled": {"grounding_mode": "coupled"},
}
METRICS = ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5")
TEST_SEED = 0
NUM_VAL_CLIPS = 4
BUDGET_MARGIN = 16


def coupled_token_budget(processor: Any, metadata: list[dict[str, Any]]) -> int:
    """Tokens of the longest well-formed coupled answer over ``metadata`` (span + one box line per sampled
    frame; boxes with 1-, 3- and 4-digit coordinates) plus ``BUDGET_MARGIN``."""
    boxes_sets = (
        [0.5, 0.5, 0.3, 0.3],  # 350,350,650,650
        [0.5, 0.5, 1.0, 1.0],  # 0,0,1000,1000
        [0.9995, 0.9995, 0.001, 0.001],  # 999,999,1000,1000
        [0.1234, 0.5678, 0.0246, 0.1357],  # mixed digits
    )
    from bridge_stg.coupled_bridge_stg import format_coupled_answer

    longest = 0
    for meta in metadata:
        ts = list(meta["timestamps"])
        for box in boxes_sets:
            text = format_coupled_answer(processor, 0.0, float(meta["duration"]), ts, [box] * len(ts))
            longest = max(longest, len(processor.tokenizer(text, add_special_tokens=False)["input_ids"]))
    return longest + BUDGET_MARGIN


def run_one(variant: str, seed: int, steps: int, num_test_clips: int, threads: int, out_dir: str) -> dict[str, Any]:
    """Train one variant for ``steps`` steps, ground the test clips, return metrics and bookkeeping."""
    import torch

    from bridge_stg import BridgeSTGForVideoGrounding, BridgeSTGProcessor
    from bridge_stg.training.demo import (
        DEMO_FAMILIES, TEST_STREAM, DemoModelArguments, DemoTrainingArguments, render_clips, score_clips, train_demo,
    )
    from bridge_stg.training.predict import predict_clips

    torch.set_num_threads(threads)
    run_dir = Path(out_dir) / f"{variant}_seed{seed}"
    args = DemoTrainingArguments(
        output_dir=str(run_dir), seed=seed, minutes=1e9, max_steps=steps, eval_every_minutes=1e9,
        num_eval_clips=NUM_VAL_CLIPS, num_threads=threads,
        command=f"benchmarks/ablations.py variant {variant} (config overrides {VARIANTS[variant]}) seed {seed} steps {steps}",
        model=DemoModelArguments(config_overrides={**DemoModelArguments().config_overrides, **VARIANTS[variant]}),
        families=DEMO_FAMILIES,
    )
    t0 = time.perf_counter()
    summary = train_demo(args, progress=False)
    train_wall = time.perf_counter() - t0
    model = BridgeSTGForVideoGrounding.from_pretrained(run_dir).eval()
    processor = BridgeSTGProcessor.from_pretrained(run_dir)
    clips = render_clips(TEST_STREAM, TEST_SEED, 0, num_test_clips, families=DEMO_FAMILIES)
    budget = None
    if model.config.grounding_mode == "coupled":
        meta = processor(videos=[c.frames for c in clips[:1]], text=[clips[0].query], video_fps=[clips[0].fps]).video_metadata
        budget = coupled_token_budget(processor, meta)
    e0 = time.perf_counter()
    rows, raw = predict_clips(model, processor, clips, "test", progress=False, max_new_tokens=budget)
    result = score_clips(clips, rows, "test")
    out: dict[str, Any] = {
        "variant": variant, "seed": seed, "config_overrides": VARIANTS[variant], "steps": summary["steps"],
        "train_minutes": summary["train_minutes"], "train_wall_minutes": round(train_wall / 60.0, 2),
        "test_minutes": round((time.perf_counter() - e0) / 60.0, 2), "num_test_clips": len(clips),
        "metrics": {k: float(result["all"][k]) for k in METRICS}, "m_sIoU": result["all"].get("m_sIoU"),
        "final_loss_ema": summary["validation"].get("loss"), "families": result["families"],
        "span_sources": dict(Counter(str(r.get("span_source")) for r in raw)),
    }
    if budget is not None:
        malformed = [int(r.get("num_malformed", 0)) for r in raw]
        out["coupled"] = {
            "max_new_tokens": budget,
            "generations_with_malformed_lines": sum(m > 0 for m in malformed),
            "malformed_lines": sum(malformed),
            "unparsable": sum(r.get("span_source") == "unparsable" for r in raw),
            "no_boxes": sum(r.get("span_source") == "coupled_no_boxes" for r in raw),
            "budget_exhausted": sum(
                len(processor.tokenizer(r.get("generated_text", ""), add_special_tokens=False)["input_ids"]) >= budget
                for r in raw),
            "example_generation": raw[0].get("generated_text", "")[:400],
        }
    (run_dir / "ablation_result.json").write_text(json.dumps(out, indent=1))
    return out


def _safe_run(variant: str, seed: int, steps: int, num_test_clips: int, threads: int, out_dir: str) -> dict[str, Any]:
    return guarded_run(run_one, ("variant", "seed"), variant, seed, steps, num_test_clips, threads, out_dir)


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def table(rows: list[dict[str, Any]], names: list[str], spread: bool = False) -> str:
    """Markdown table: one row per variant (``spread``: mean ± population std over seeds)."""
    head = "| variant | m_tIoU | m_vIoU | vIoU@0.3 | vIoU@0.5 | steps | train min | notes |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for name in names:
        rs = [r for r in rows if r["variant"] == name and "error" not in r]
        errs = [r for r in rows if r["variant"] == name and "error" in r]
        if not rs:
            if errs:
                lines.append(f"| {name} | failed: {errs[0]['error'][:80]} | | | | | | |")
            continue
        cells = []
        for k in METRICS:
            vals = [r["metrics"][k] for r in rs]
            m = statistics.fmean(vals)
            cells.append(f"{m:.3f} ± {statistics.pstdev(vals):.3f}" if spread and len(vals) > 1 else f"{m:.3f}")
        steps = "/".join(sorted({str(r["steps"]) for r in rs}))
        minutes = statistics.fmean(r["train_minutes"] for r in rs)
        notes = []
        if spread:
            notes.append(f"{len(rs)} seed(s)")
        if any("coupled" in r for r in rs):
            c = [r["coupled"] for r in rs]
            n = sum(r["num_test_clips"] for r in rs)
            notes.append(f"malformed generations {sum(x['generations_with_malformed_lines'] for x in c)}/{n}, "
                         f"unparsable {sum(x['unparsable'] for x in c)}, no boxes {sum(x['no_boxes'] for x in c)}, "
                         f"budget hit ~{sum(x['budget_exhausted'] for x in c)} (max_new_tokens {c[0]['max_new_tokens']})")
        if errs:
            notes.append(f"{len(errs)} run(s) failed")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {steps} | {minutes:.1f} | {'; '.join(notes)} |")
    return "\n".join(lines)


def family_table(rows: list[dict[str, Any]], names: list[str]) -> str:
    """Markdown table of m_vIoU per family (mean ± std over seeds; twin families: identity accuracy too)."""
    ok = [r for r in rows if "error" not in r and r.get("families")]
    families = list(dict.fromkeys(f for r in ok for f in r["families"]))
    lines = ["| variant | " + " | ".join(families) + " | seeds |", "|---|" + "---|" * (len(families) + 1)]
    for name in names:
        rs = [r for r in ok if r["variant"] == name]
        if not rs:
            continue
        cells = []
        for f in families:
            vals = [r["families"][f]["m_vIoU"] for r in rs if f in r["families"]]
            cell = f"{statistics.fmean(vals):.3f}" + (f" ± {statistics.pstdev(vals):.3f}" if len(vals) > 1 else "")
            ids = [r["families"][f].get("identity_accuracy") for r in rs if f in r["families"]]
            ids = [x for x in ids if x is not None]
            if ids:
                cell += f" (id {statistics.fmean(ids):.2f})"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {len(rs)} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 steps, seed 0, 5 test clips (smoke test)")
    p.add_argument("--steps", type=int, default=2500, help="optimizer steps per run (default: %(default)s)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default: %(default)s)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of %(default)s")
    p.add_argument("--num-test-clips", type=int, default=250, help="test clips, the families round robin (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=2, help="parallel worker processes (default: %(default)s)")
    p.add_argument("--out-dir", default=None, help="checkpoints + per-run results (default: a new temporary folder)")
    p.add_argument("--resume", action="store_true", help="reuse finished runs found in --out-dir")
    p.add_argument("--report-only", action="store_true",
                   help="with --resume: train nothing, tabulate the finished runs found in --out-dir")
    args = p.parse_args()
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    steps, seeds, num_test = args.steps, [int(s) for s in args.seeds.split(",") if s], args.num_test_clips
    if args.quick:
        steps, seeds, num_test = 3, [0], 5
    if args.out_dir is None:
        import tempfile

        args.out_dir = tempfile.mkdtemp(prefix="bridge_stg_ablations_")
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    # the coupled runs are the slowest (long answers, long generations): start them first
    todo = sorted(((n, s) for s in seeds for n in names), key=lambda ns: (ns[0] != "coupled", ns[1], names.index(ns[0])))
    results: list[dict[str, Any]] = []
    pending = []
    for n, s in todo:
        f = Path(args.out_dir) / f"{n}_seed{s}" / "ablation_result.json"
        if args.resume and f.is_file():
            res = json.loads(f.read_text())
            if res.get("steps") == steps and res.get("num_test_clips") == num_test:
                results.append(res)
                print(f"reused {n} seed {s} from {f}", flush=True)
                continue
        if args.report_only:
            print(f"missing {n} seed {s} (--report-only: not run)", flush=True)
            continue
        pending.append((n, s))
    t0 = time.perf_counter()
    load_start = os.getloadavg()

    def report(res: dict[str, Any]) -> None:
        results.append(res)
        if "error" in res:
            print(f"{res['variant']} seed {res['seed']}: FAILED {res['error']}\n{res['traceback']}", flush=True)
        else:
            m = res["metrics"]
            print(f"{res['variant']:13s} seed {res['seed']}: steps {res['steps']} ({res['train_minutes']:.1f} min)  "
                  + "  ".join(f"{k} {m[k]:.3f}" for k in METRICS)
                  + (f"  malformed {res['coupled']['generations_with_malformed_lines']}/{res['num_test_clips']}"
                     if "coupled" in res else "")
                  + f"  [{(time.perf_counter() - t0) / 60:.1f} min elapsed, load {os.getloadavg()[0]:.2f}]", flush=True)

    call = (steps, num_test, args.threads, args.out_dir)
    if args.jobs <= 1:
        for n, s in pending:
            report(_safe_run(n, s, *call))
    else:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_safe_run, n, s, *call) for n, s in pending]
            for fut in as_completed(futures):
                report(fut.result())
    order = {(n, s): i for i, (n, s) in enumerate((n, s) for s in seeds for n in names)}
    results.sort(key=lambda r: order.get((r["variant"], r["seed"]), 0))
    tables = {}
    for s in seeds:
        tables[f"seed {s}"] = table([r for r in results if r["seed"] == s], names)
        print(f"\n### seed {s} ({steps} steps, {num_test} test clips)\n\n{tables[f'seed {s}']}", flush=True)
    if len(seeds) > 1:
        tables["mean"] = table(results, names, spread=True)
        print(f"\n### mean ± std over seeds {args.seeds}\n\n{tables['mean']}", flush=True)
    tables["families"] = family_table(results, names)
    print(f"\n### m_vIoU per family (mean ± std over seeds; id = twin identity accuracy)\n\n{tables['families']}", flush=True)
    print(json.dumps({
        **run_record("ablations", args.quick, t0, load_start),
        "wall_minutes": round((time.perf_counter() - t0) / 60.0, 2),
        "steps": steps, "seeds": seeds, "num_test_clips": num_test, "test_stream_seed": TEST_SEED,
        "threads": args.threads, "jobs": args.jobs, "quick": args.quick, "out_dir": args.out_dir,
        "missing": [f"{n} seed {s}" for s in seeds for n in names
                    if not any(r["variant"] == n and r["seed"] == s and "error" not in r for r in results)],
        "variants": {n: VARIANTS[n] for n in names}, "tables": tables, "runs": results,
    }))


if __name__ == "__main__":
    main()
