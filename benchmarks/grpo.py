"""GRPO evidence (issue 18): reinforcement fine-tuning of a text-mode Bridge-STG checkpoint on synthetic clips, with
temporal-only rewards and with the tube reward added, scored before and after on fresh clips of every query family.

    python benchmarks/grpo.py --checkpoint DIR [--quick] [--variants temporal,tube] [--seeds 0,1,2] [--steps 300]
                              [--reward-weights format=0.5,temporal_iou=1,tube_viou=1] [--clips-per-family 50]
                              [--train-clips 256] [--eval-every 50] [--curve-clips-per-family 4] [--threads 1]
                              [--jobs 1] [--out DIR] [--table]

Variants: ``temporal`` trains with the rewards ``format`` + ``temporal_iou``; ``tube`` adds ``tube_viou`` (the vIoU of
the tube the bridge and the spatial decoder build from the sampled span). The weights are ``--reward-weights``
(a variant uses the weights of its rewards). Every run is :class:`bridge_stg.training.grpo.BridgeSTGGRPOTrainer`
(TRL's GRPOTrainer) on the MLLM of ``--checkpoint`` (full fine-tuning of the LLM, vision encoder frozen), for a fixed
budget of ``--steps`` optimiser steps (``--prompts-per-step`` prompts x ``--num-generations`` completions each), with
the seed setting the sampling and the order of the prompts; the prompts are the same ``--train-clips`` clips for every
run: clips of the demo's training stream under seed ``TRAIN_CLIP_SEED`` (never the clips the demo checkpoint was
trained on, seed 0, nor a test clip), every family round robin, written as lossless video (the pixels the test sees in
memory) in ``OUT/train_clips/``.

Scores: the first ``--clips-per-family`` x families clips of the demo's test stream (seed 0, families round robin: the
clips ``bridge-stg demo`` scores), grounded by ``model.ground`` in text span mode (``predict_clips``) and scored by
``score_clips`` (tubedetr protocol: m_tIoU, m_vIoU, vIoU@0.3/0.5 overall and per family; the share of answers that
parsed as a span). ``before`` is the checkpoint itself (once per ``--out``); ``after`` each run. With ``--eval-every K``
each run also records a curve: every K steps, the same metrics on ``--curve-clips-per-family`` clips per family of the
demo's validation stream (not the test clips), beside the per-step rewards, KL and completion lengths of TRL's logs.

A frame-mode checkpoint (``span_source="frame"``, e.g. the shipped demo checkpoint) is switched to text mode, and the
result says so: its LM was never trained to write the answer, so GRPO starts from (almost) no reward. Train a text-mode
checkpoint first (``bridge-stg demo --train`` with ``config_overrides`` ``{"span_source": "text"}``) for a measurement.

``--out DIR`` keeps ``DIR/before.json`` and one result JSON per (variant, seed), ``DIR/<variant>_seed<seed>.json``, with
the git commit, the options and the curves; a rerun reuses the finished runs with the same options (interrupted runs
resume), ``--table`` only tabulates what is in ``DIR``. The last stdout line is one JSON object: per variant the mean ±
population std over seeds of m_tIoU and m_vIoU after, their change from before, and the two comparisons of issue 18.

``--quick``: a tiny random text-mode model instead of ``--checkpoint``, 2 steps, seed 0, 4 training clips, 1 test
clip per family (a smoke test of the script, not a measurement).
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
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from _common import guarded_run, run_record

#: the rewards of each variant
VARIANTS: dict[str, tuple[str, ...]] = {"temporal": ("format", "temporal_iou"), "tube": ("format", "temporal_iou", "tube_viou")}
DEFAULT_WEIGHTS = {"format": 0.5, "temporal_iou": 1.0, "tube_viou": 1.0}
#: seed of the training clips (demo training stream): the demo checkpoint was trained on seed 0
TRAIN_CLIP_SEED = 1000
TEST_SEED = 0
HEADLINE = ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5")


def git_commit() -> dict[str, Any]:
    """The checkout's commit and whether it has uncommitted changes to tracked files."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def _round(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in d.items()}


def write_lossless_mp4(path: Path, frames: Any, fps: float) -> None:
    """RGB frames as lossless H.264 (libx264rgb, qp 0): decoding gives the same pixels back."""
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264rgb", rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        s.options = {"qp": "0", "preset": "ultrafast", "threads": "1"}
        for img in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def training_rows(out_dir: str, count: int, families: list[str]) -> list[dict[str, Any]]:
    """The GRPO prompts: ``count`` clips of the demo training stream (seed ``TRAIN_CLIP_SEED``) as canonical rows whose
    videos are lossless files in ``out_dir/train_clips/`` (written once)."""
    from bridge_stg.training.demo import TRAIN_STREAM, reference_rows, render_clips

    folder = Path(out_dir) / "train_clips"
    clips = render_clips(TRAIN_STREAM, TRAIN_CLIP_SEED, 0, count, families=families)
    rows = reference_rows(clips, "grpo_train")
    for clip, row in zip(clips, rows):
        path = folder / row["video"]
        if not path.is_file():  # a temporary name of this process's own, then an atomic rename
            tmp = path.with_suffix(f".{os.getpid()}.tmp.mp4")
            write_lossless_mp4(tmp, clip.frames, clip.fps)
            tmp.replace(path)
    return rows


def load_text_mode(checkpoint: str) -> tuple[Any, Any, str]:
    """The checkpoint in text span mode, its processor, and the span source it was saved with."""
    from bridge_stg import BridgeSTGConfig, BridgeSTGForVideoGrounding, BridgeSTGProcessor

    saved = BridgeSTGConfig.from_pretrained(checkpoint).span_source
    model = BridgeSTGForVideoGrounding.from_pretrained(checkpoint, span_source="text").eval()
    processor = BridgeSTGProcessor.from_model_config(model.config, BridgeSTGProcessor.from_pretrained(checkpoint).tokenizer)
    return model, processor, saved


def score(model: Any, processor: Any, clips: list[Any], prefix: str) -> dict[str, Any]:
    """Ground ``clips`` in text mode and score them (overall, per family, share of answers read as a span)."""
    from bridge_stg.training.demo import score_clips
    from bridge_stg.training.predict import predict_clips

    rows, raw = predict_clips(model, processor, clips, prefix, progress=False)
    res = score_clips(clips, rows, prefix)
    parsed = sum(1 for r in raw if r.get("span_source") == "text")
    return {"all": _round({k: res["all"][k] for k in HEADLINE}), "text_answer_rate": round(parsed / len(raw), 5),
            "families": {f: _round({k: r[k] for k in HEADLINE}) for f, r in res["families"].items()}}


def quick_checkpoint(out_dir: str) -> str:
    """A tiny random text-mode model (the demo's architecture, smaller), saved as a checkpoint folder."""
    import torch

    from bridge_stg.model_cards.hub import save_for_hub
    from bridge_stg.training.demo import DemoModelArguments, build_demo_model

    path = Path(out_dir) / "quick_checkpoint"
    if not (path / "config.json").is_file():
        torch.manual_seed(0)
        args = DemoModelArguments(hidden_size=64, intermediate_size=128, decoder_hidden_size=64, decoder_ffn_dim=128,
                                  max_frames=8, config_overrides={"span_source": "text", "max_new_tokens": 12})
        model, processor = build_demo_model(args)
        save_for_hub(model, processor, path)
    return str(path)


def run_one(variant: str, seed: int, options: dict[str, Any], out_dir: str, command: str) -> dict[str, Any]:
    """GRPO on the checkpoint for one variant and seed; score after; write and return the result."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from bridge_stg.model_cards.hub import save_for_hub
    from bridge_stg.training.demo import TEST_STREAM, VALIDATION_STREAM, render_clips
    from bridge_stg.training.grpo import BridgeSTGGRPOTrainer, grounding_model_after_training, grpo_dataset
    from bridge_stg.training.grpo_recipe import BridgeSTGGRPOConfig
    from bridge_stg.training.rewards import build_reward_funcs

    torch.set_num_threads(options["threads"])
    families = options["families"]
    model, processor, saved_source = load_text_mode(options["checkpoint"])
    model.mllm.model.visual.requires_grad_(False)
    rows = training_rows(out_dir, options["train_clips"], families)
    rewards = list(VARIANTS[variant])
    run_dir = Path(out_dir) / f"{variant}_seed{seed}"
    args = BridgeSTGGRPOConfig(
        output_dir=str(run_dir), seed=seed, max_steps=options["steps"], learning_rate=options["lr"],
        lr_scheduler_type="constant", per_device_train_batch_size=options["prompts_per_step"] * options["num_generations"],
        num_generations=options["num_generations"], max_completion_length=options["max_completion_length"],
        temperature=options["temperature"], beta=options["beta"], rewards=rewards,
        reward_weights=[options["weights"][r] for r in rewards], use_cpu=True, logging_steps=1, save_strategy="no",
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, max_grad_norm=1.0,
    )
    curve_clips = (render_clips(VALIDATION_STREAM, TEST_SEED, 0, options["curve_clips_per_family"] * len(families),
                                families=families) if options["eval_every"] else [])
    curve: list[dict[str, Any]] = []

    class Curve(TrainerCallback):
        """Every ``eval_every`` steps: the metrics on the validation clips (training modes restored after)."""

        def on_step_end(self, targs, state, control, **kwargs):
            if options["eval_every"] and state.global_step % options["eval_every"] == 0:
                modes = [(m, m.training) for m in model.modules()]
                res = score(model, processor, curve_clips, "curve")
                for m, mode in modes:
                    m.training = mode
                curve.append({"step": state.global_step, **res["all"], "text_answer_rate": res["text_answer_rate"]})

    funcs = build_reward_funcs(rewards, model, processor)
    trainer = BridgeSTGGRPOTrainer(model=model, reward_funcs=funcs, args=args, processor=processor,
                                   train_dataset=grpo_dataset(Dataset.from_list(rows)),
                                   video_root=str(Path(out_dir) / "train_clips"), callbacks=[Curve()])
    if options["eval_every"]:
        Curve().on_step_end(None, trainer.state, None)  # step 0: the checkpoint itself
    t0 = time.perf_counter()
    trainer.train()
    train_minutes = (time.perf_counter() - t0) / 60.0
    final = grounding_model_after_training(trainer).eval()
    e0 = time.perf_counter()
    test = render_clips(TEST_STREAM, TEST_SEED, 0, options["clips_per_family"] * len(families), families=families)
    after = score(final, processor, test, "test")
    save_for_hub(final, processor, run_dir / "checkpoint", overwrite=True)
    keys = ("loss", "reward", "reward_std", "kl", "entropy", "completions/mean_length", "frac_reward_zero_std",
            *(f"rewards/{f.__name__}/mean" for f in funcs))
    log = [{"step": h["step"], **{k: round(h[k], 6) for k in keys if k in h}} for h in trainer.state.log_history
           if "reward" in h]
    out = {
        "benchmark": "grpo", "variant": variant, "rewards": rewards, "reward_weights": args.reward_weights, "seed": seed,
        "options": {k: v for k, v in options.items() if k not in ("threads",)}, "checkpoint_span_source": saved_source,
        "git": git_commit(), "command": command, "threads": options["threads"], "train_minutes": round(train_minutes, 2),
        "test_minutes": round((time.perf_counter() - e0) / 60.0, 2), "after": after, "curve": curve, "log": log,
    }
    (Path(out_dir) / f"{variant}_seed{seed}.json").write_text(json.dumps(out, indent=1))
    return out


def _safe_run(*call: Any) -> dict[str, Any]:
    return guarded_run(run_one, ("variant", "seed"), *call)


def _stats(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": round(statistics.fmean(values), 5), "std": round(statistics.pstdev(values), 5), "n": len(values)}


def _cell(s: dict[str, float] | None) -> str:
    return "–" if s is None else (f"{s['mean']:.3f} ± {s['std']:.3f}" if s["n"] > 1 else f"{s['mean']:.3f}")


def summarize(before: dict[str, Any], results: list[dict[str, Any]], variants: list[str]) -> dict[str, Any]:
    """Per variant: mean ± std over seeds of the metrics after and of their change; the two comparisons of issue 18."""
    ok = [r for r in results if "error" not in r]
    out: dict[str, Any] = {"before": before["all"], "variants": {}}
    for v in variants:
        rs = [r for r in ok if r["variant"] == v]
        if not rs:
            continue
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in rs]}
        for k in ("m_tIoU", "m_vIoU", "vIoU@0.5"):
            entry[k] = _stats([r["after"]["all"][k] for r in rs])
            entry[f"delta_{k}"] = _stats([r["after"]["all"][k] - before["all"][k] for r in rs])
        entry["text_answer_rate"] = _stats([r["after"]["text_answer_rate"] for r in rs])
        entry["families"] = {f: {k: _stats([r["after"]["families"][f][k] for r in rs]) for k in ("m_tIoU", "m_vIoU")}
                             for f in before["families"]}
        out["variants"][v] = entry
    checks: dict[str, Any] = {}
    for v, e in out["variants"].items():  # GRPO improves m_tIoU by more than the seed spread
        d = e["delta_m_tIoU"]
        checks[f"{v}: m_tIoU gain > seed spread"] = bool(d["n"] >= 3 and d["mean"] > 0 and d["mean"] > e["m_tIoU"]["std"])
    if {"temporal", "tube"} <= set(out["variants"]):  # the tube reward improves m_vIoU over temporal-only rewards
        t, u = out["variants"]["temporal"]["m_vIoU"], out["variants"]["tube"]["m_vIoU"]
        checks["tube - temporal m_vIoU"] = round(u["mean"] - t["mean"], 5)
        checks["tube > temporal m_vIoU by more than the seed spread"] = bool(
            min(u["n"], t["n"]) >= 3 and u["mean"] - t["mean"] > max(u["std"], t["std"]))
    out["checks"] = checks
    return out


def table(summary: dict[str, Any], families: list[str]) -> str:
    lines = [f"| model | m_tIoU | m_vIoU | vIoU@0.5 | {' | '.join(f + ' m_vIoU' for f in families)} | answers parsed |",
             "|---|---|---|---|" + "---|" * (len(families) + 1)]
    b = summary["before"]
    lines.append(f"| before | {b['m_tIoU']:.3f} | {b['m_vIoU']:.3f} | {b['vIoU@0.5']:.3f} | "
                 + " | ".join(f"{summary['before_families'][f]['m_vIoU']:.3f}" for f in families)
                 + f" | {summary['before_text_answer_rate']:.2f} |")
    for v, e in summary["variants"].items():
        lines.append(f"| GRPO {v} ({'+'.join(VARIANTS[v])}) | {_cell(e['m_tIoU'])} | {_cell(e['m_vIoU'])} | "
                     f"{_cell(e['vIoU@0.5'])} | " + " | ".join(_cell(e["families"][f]["m_vIoU"]) for f in families)
                     + f" | {_cell(e['text_answer_rate'])} |")
    return "\n".join(lines)


def _weights(text: str) -> dict[str, float]:
    weights = dict(DEFAULT_WEIGHTS)
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        if name not in weights:
            raise ValueError(f"--reward-weights: unknown reward {name!r}; choose from {list(weights)}")
        weights[name] = float(value)
    return weights


def main() -> None:
    from bridge_stg.training.demo import DEMO_FAMILIES, TEST_STREAM, render_clips

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="the text-mode Bridge-STG checkpoint folder GRPO starts from")
    p.add_argument("--quick", action="store_true", help="tiny random model, 2 steps, seed 0 (smoke test)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of %(default)s")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated GRPO seeds (default: %(default)s)")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps per run (default: %(default)s)")
    p.add_argument("--reward-weights", default="", help="e.g. format=0.5,temporal_iou=1,tube_viou=1 (the default)")
    p.add_argument("--no-tube", action="store_true", help="the temporal variant only (no tube reward)")
    p.add_argument("--families", default=",".join(DEMO_FAMILIES), help="query families (default: all)")
    p.add_argument("--clips-per-family", type=int, default=50, help="test clips per family (default: %(default)s)")
    p.add_argument("--train-clips", type=int, default=256, help="training prompts, families round robin (default: %(default)s)")
    p.add_argument("--prompts-per-step", type=int, default=2, help="prompts per optimiser step (default: %(default)s)")
    p.add_argument("--num-generations", type=int, default=8, help="completions per prompt (default: %(default)s)")
    p.add_argument("--max-completion-length", type=int, default=16, help="completion tokens at most (default: %(default)s)")
    p.add_argument("--lr", type=float, default=5e-5, help="learning rate of the LLM (default: %(default)s)")
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=50, help="curve: validation metrics every K steps, 0 off (default: %(default)s)")
    p.add_argument("--curve-clips-per-family", type=int, default=4, help="validation clips per family for the curve")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default: %(default)s)")
    p.add_argument("--out", default=None, help="result JSONs + checkpoints (default: a new temporary folder)")
    p.add_argument("--table", action="store_true", help="train nothing: tabulate the results found in --out")
    args = p.parse_args()
    variants = ["temporal"] if args.no_tube else [v for v in args.variants.split(",") if v]
    families = [f for f in args.families.split(",") if f]
    unknown = [v for v in variants if v not in VARIANTS] + [f for f in families if f not in DEMO_FAMILIES]
    if unknown:
        p.error(f"unknown variants / families {unknown}; choose from {list(VARIANTS)} / {list(DEMO_FAMILIES)}")
    try:
        weights = _weights(args.reward_weights)
    except ValueError as err:
        p.error(str(err))
    seeds = [int(s) for s in args.seeds.split(",") if s]
    steps, cpf, train_clips, eval_every, curve_cpf = (args.steps, args.clips_per_family, args.train_clips, args.eval_every,
                                                      args.curve_clips_per_family)
    if args.quick:
        steps, seeds, cpf, train_clips, eval_every, curve_cpf = 2, [0], 1, 4, 1, 1
    if steps < 1 or cpf < 1 or train_clips < 1 or not seeds or eval_every < 0:
        p.error("--steps, --clips-per-family and --train-clips must be >= 1, --seeds non-empty, --eval-every >= 0")
    if args.table and not args.out:
        p.error("--table needs --out")
    out_dir = args.out or tempfile.mkdtemp(prefix="bridge_stg_grpo_")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    checkpoint = quick_checkpoint(out_dir) if args.quick else args.checkpoint
    if not checkpoint or not os.path.isfile(os.path.join(checkpoint, "config.json")):
        p.error("--checkpoint: a Bridge-STG checkpoint folder is required (or --quick)")
    checkpoint = os.path.abspath(checkpoint)
    command = " ".join(shlex.quote(a) for a in [sys.executable.rsplit("/", 1)[-1], *sys.argv])
    options = {
        "checkpoint": checkpoint, "steps": steps, "families": families, "clips_per_family": cpf, "train_clips": train_clips,
        "prompts_per_step": args.prompts_per_step, "num_generations": args.num_generations,
        "max_completion_length": args.max_completion_length, "lr": args.lr, "beta": args.beta,
        "temperature": args.temperature, "weights": weights, "eval_every": eval_every,
        "curve_clips_per_family": curve_cpf, "threads": args.threads,
    }
    same = lambda res: {k: v for k, v in res.get("options", {}).items()} == {k: v for k, v in options.items() if k != "threads"}
    t0, load_start = time.perf_counter(), os.getloadavg()

    # before: the checkpoint itself, on the test clips
    import torch

    torch.set_num_threads(args.threads)
    before_file = Path(out_dir) / "before.json"
    key = {"checkpoint": checkpoint, "families": families, "clips_per_family": cpf}
    before = json.loads(before_file.read_text()) if before_file.is_file() else None
    if before is None or before.get("key") != key:
        if args.table:
            p.error(f"--table: no before.json for these options in {out_dir}")
        model, processor, saved = load_text_mode(checkpoint)
        test = render_clips(TEST_STREAM, TEST_SEED, 0, cpf * len(families), families=families)
        before = {"key": key, "checkpoint_span_source": saved, "git": git_commit(), **score(model, processor, test, "test")}
        before_file.write_text(json.dumps(before, indent=1))
    if before["checkpoint_span_source"] != "text":
        print(f"note: {checkpoint} is a {before['checkpoint_span_source']}-mode checkpoint, switched to text span mode: its "
              "LM never learned to write the answer (GRPO starts from almost no reward)", file=sys.stderr, flush=True)
    print(f"before: m_tIoU {before['all']['m_tIoU']:.3f} m_vIoU {before['all']['m_vIoU']:.3f} "
          f"(answers parsed {before['text_answer_rate']:.2f})", flush=True)

    results: list[dict[str, Any]] = []
    pending = []
    for s in seeds:
        for v in variants:
            f = Path(out_dir) / f"{v}_seed{s}.json"
            if f.is_file():
                res = json.loads(f.read_text())
                if same(res):
                    results.append(res)
                    print(f"reused {v} seed {s} from {f} (commit {(res.get('git') or {}).get('commit')})", flush=True)
                    continue
                print(f"{f}: other options, not reused", flush=True)
            if args.table:
                print(f"missing {v} seed {s} (--table: not run)", flush=True)
                continue
            pending.append((v, s))

    def report(res: dict[str, Any]) -> None:
        results.append(res)
        if "error" in res:
            print(f"{res['variant']} seed {res['seed']}: FAILED {res['error']}\n{res['traceback']}", flush=True)
            return
        a = res["after"]["all"]
        print(f"{res['variant']:8s} seed {res['seed']}: {steps} steps ({res['train_minutes']:.1f} min)  m_tIoU "
              f"{a['m_tIoU']:.3f} m_vIoU {a['m_vIoU']:.3f} (answers parsed {res['after']['text_answer_rate']:.2f})  "
              f"[{(time.perf_counter() - t0) / 60:.1f} min elapsed]", flush=True)

    if pending:  # the prompts' video files, written here once, before any worker reads them
        training_rows(out_dir, train_clips, families)
    if args.jobs <= 1:
        for v, s in pending:
            report(_safe_run(v, s, options, out_dir, command))
    else:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(_safe_run, v, s, options, out_dir, command) for v, s in pending]):
                report(fut.result())
    results.sort(key=lambda r: (r["seed"], variants.index(r["variant"]) if r["variant"] in variants else 0))
    summary = summarize(before, results, variants)
    summary["before_families"] = before["families"]
    summary["before_text_answer_rate"] = before["text_answer_rate"]
    ok = [r for r in results if "error" not in r]
    commits = sorted({str((r.get("git") or {}).get("commit")) + (" (dirty)" if (r.get("git") or {}).get("dirty") else "")
                      for r in ok})
    print(f"\n### GRPO from {checkpoint} (mean ± population std over seeds {seeds}, {steps} steps, {cpf} test clips per "
          f"family)\n\n{table(summary, families)}\n\nchecks: {json.dumps(summary['checks'])}\ncommits: {', '.join(commits)}",
          flush=True)
    print(json.dumps({
        **run_record("grpo", args.quick, t0, load_start), "command": command,
        "wall_minutes": round((time.perf_counter() - t0) / 60.0, 2), "quick": args.quick, "options": options,
        "seeds": seeds, "variants": variants, "checkpoint_span_source": before["checkpoint_span_source"], "out": out_dir,
        "commits": commits, "git": git_commit(),
        "missing": [f"{v} seed {s}" for s in seeds for v in variants
                    if not any(r["variant"] == v and r["seed"] == s and "error" not in r for r in results)],
        "summary": summary,
        "runs": [{k: v for k, v in r.items() if k not in ("log", "options")} for r in results],
    }))


if __name__ == "__main__":
    main()
