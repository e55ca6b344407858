"""``bridge-stg demo``: the package's main job on an embedded default.

Without ``--train`` (a couple of minutes on 2 CPU cores): render fresh synthetic test clips from the demo's
test stream (never used in training, see :mod:`bridge_stg.training.demo`), ground them with the
shipped tiny checkpoint, score them with the exact STVG metric (``DIR/metrics.json``, the JSON of
``bridge-stg evaluate --json``), score a trivial baseline the same way (``DIR/baseline_metrics.json``),
copy the checkpoint to ``DIR/checkpoint/`` (loadable by ``pipeline("video-grounding")``), ground one clip
with that pipeline into ``DIR/example.json`` and an annotated ``DIR/example.mp4``, and print a summary. ``DIR`` is
written under a temporary name and renamed at the end; a ``DIR`` of an earlier demo is replaced (the command says
so), any other non-empty folder needs ``--overwrite``.

With ``--train``: train the demo checkpoint from scratch (``--max-steps``, ``--minutes``, ``--seed``,
``--output-dir``); see :func:`bridge_stg.training.demo.train_demo`. The defaults are the shipped
checkpoint's recipe: 7000 steps with a step-based learning-rate schedule (``--minutes`` is only a cap), so with
``--seed 0 --threads 1`` the run is deterministic and gives the shipped weights on a CPU of the kind that trained them
(the checkpoint's card names it; about 80 minutes on 2 cores). ``--max-steps 0`` trains for ``--minutes`` instead,
with the schedule following the clock. ``--families`` trains on some query families only (after the appearance
warm-up) and ``--config-overrides`` changes the method's options, for experiments (docs/method.md).

    bridge-stg demo --out demo_out
    bridge-stg demo --train --seed 0 --threads 1 --output-dir my_demo_checkpoint
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import time
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm
from transformers.utils import logging

logger = logging.get_logger(__name__)

def _summary_table(model_res: dict[str, Any], base_res: dict[str, Any]) -> str:
    """Overall scores of the checkpoint and the trivial baseline, then per query family (docs/benchmark.md): m_tIoU and
    m_vIoU of both, and the twin families' identity accuracy."""
    keys = ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5", "m_sIoU")
    lines = [f"{'':24s}" + "".join(f"{k:>10s}" for k in keys)]
    for name, res in (("demo checkpoint", model_res), ("trivial baseline", base_res)):
        a = res["all"]
        lines.append(f"{name:24s}" + "".join(f"{a[k]:10.3f}" if a.get(k) is not None else f"{'-':>10s}" for k in keys))
    families = model_res.get("families") or {}
    if families:
        lines += ["", f"{'per family (clips)':24s}{'m_tIoU':>10s}{'baseline':>10s}{'m_vIoU':>10s}{'baseline':>10s}"
                  f"{'identity':>10s}"]
        for family, r in families.items():
            b = (base_res.get("families") or {}).get(family, {})
            ident = r.get("identity_accuracy")
            lines.append(f"{family + ' (' + str(r['num_queries']) + ')':24s}{r['m_tIoU']:10.3f}{b.get('m_tIoU', float('nan')):10.3f}"
                         f"{r['m_vIoU']:10.3f}{b.get('m_vIoU', float('nan')):10.3f}"
                         + (f"{ident:10.3f}" if ident is not None else f"{'-':>10s}"))
    return "\n".join(lines)


#: what ``bridge-stg demo`` writes into its folder (a folder holding only these, with ``metrics.json``, is one the
#: demo wrote before: a rerun replaces it)
DEMO_OUTPUTS = ("metrics.json", "baseline_metrics.json", "predictions.jsonl", "references.jsonl", "checkpoint",
                "example_input.mp4", "example.mp4", "example.json")


def written_by_demo(folder: Path) -> bool:
    """A folder of an earlier ``bridge-stg demo``: nothing but :data:`DEMO_OUTPUTS`, ``metrics.json`` among them."""
    from bridge_stg.commands.common import folder_holds_only

    return folder_holds_only(folder, DEMO_OUTPUTS, "metrics.json")


def check_families(families: Sequence[str]) -> None:
    """Raise :class:`~bridge_stg.errors_bridge_stg.BridgeSTGError` naming the ``--families`` that the benchmark does not
    have (docs/benchmark.md)."""
    from bridge_stg.errors_bridge_stg import BridgeSTGError
    from bridge_stg.processing.synthetic_families import FAMILIES

    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise BridgeSTGError(f"--families: unknown {unknown}; choose from {', '.join(FAMILIES)}")


def run_demo(
    out_dir: str | os.PathLike[str], num_clips: int = 200, seed: int = 0, checkpoint: str | os.PathLike[str] | None = None,
    num_threads: int = 2, progress: bool = True, overwrite: bool = False, families: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Ground and score fresh synthetic test clips with the demo checkpoint; write the demo folder; return a summary.

    The clips are of the query ``families`` (default: every family of the benchmark, round robin by clip index,
    docs/benchmark.md); the scores are reported overall and per family.

    The folder is built under a temporary name beside ``out_dir`` and renamed at the end. An ``out_dir`` written by an
    earlier demo is replaced (with a warning naming what it held); any other non-empty folder raises
    :class:`~bridge_stg.errors_bridge_stg.OutputExistsError` unless ``overwrite``, and so does a folder that holds
    ``checkpoint``.
    """
    import torch
    from transformers import AutoModel, pipeline

    import bridge_stg  # noqa: F401  (registers the model and the "video-grounding" pipeline)
    from bridge_stg import BridgeSTGProcessor
    from bridge_stg.commands.common import plan_output_folder, staged_folder
    from bridge_stg.errors_bridge_stg import BridgeSTGError
    from bridge_stg.evaluation.visualize import write_annotated_video
    from bridge_stg.training.predict import predict_clips
    from bridge_stg.training.demo import (
        DEMO_FAMILIES, TEST_STREAM, demo_checkpoint_path, export_demo_checkpoint, reference_rows, render_clips, score_clips,
        trivial_baseline_rows,
    )
    from bridge_stg.processing.synthetic import write_mp4

    if num_clips < 1:
        raise BridgeSTGError(f"--num-clips must be >= 1, got {num_clips}")
    families = tuple(families or DEMO_FAMILIES)
    check_families(families)
    ckpt = Path(checkpoint) if checkpoint is not None else Path(demo_checkpoint_path())
    plan = plan_output_folder(out_dir, overwrite, "--out", "bridge-stg demo", written_by_demo, inputs=[ckpt])
    torch.set_num_threads(num_threads)
    t0 = time.perf_counter()
    out = Path(out_dir)
    model = AutoModel.from_pretrained(ckpt)
    processor = BridgeSTGProcessor.from_pretrained(ckpt)
    model.eval()

    clips = [c for c in tqdm((render_clips(TEST_STREAM, seed, i, 1, families=families)[0] for i in range(num_clips)),
                             total=num_clips, desc="rendering test clips", disable=not progress)]
    refs = reference_rows(clips, "test")
    preds, _ = predict_clips(model, processor, clips, "test", progress=progress, desc="grounding test clips")
    result = score_clips(clips, preds, "test")  # the exact metric, overall and per family
    baseline = score_clips(clips, trivial_baseline_rows(clips, "test"), "test")
    result["dataset"] = baseline["dataset"] = f"synthetic test stream (seed {seed}, {num_clips} clips)"
    with staged_folder(plan, "bridge-stg demo") as tmp:
        (tmp / "metrics.json").write_text(json.dumps(result, indent=2))
        (tmp / "baseline_metrics.json").write_text(json.dumps(baseline, indent=2))
        (tmp / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in preds))
        (tmp / "references.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))

        # a self-contained checkpoint folder (code, auto_map, pipeline registration, card with these test metrics)
        dst = tmp / "checkpoint"
        export_demo_checkpoint(model, processor, ckpt, dst, test_result=result, baseline_result=baseline)

        # one clip through the user-facing path: an mp4 file, the pipeline loaded from the copied checkpoint
        clip = clips[0]
        write_mp4(tmp / "example_input.mp4", clip.frames, clip.fps)
        grounder = pipeline("video-grounding", model=str(dst), trust_remote_code=True)
        with tqdm(total=1, desc="example clip (pipeline)", disable=not progress) as bar:
            res = grounder(str(tmp / "example_input.mp4"), text=clip.query)
            bar.update(1)
        span = tuple(res["span"])
        write_annotated_video(tmp / "example_input.mp4", [res], tmp / "example.mp4", progress=progress)
        example = {
            "query": clip.query, "fps": clip.fps, "num_frames": clip.num_frames, "width": clip.width, "height": clip.height,
            "prediction": res, "ground_truth": {"span": [clip.tube_start, clip.tube_end],
                                                "frame_ids": list(clip.frame_ids), "boxes": [list(b) for b in clip.boxes]},
            "test_stream_seed": seed, "clip_index": 0,
            "input_video": "example_input.mp4", "annotated_video": "example.mp4",
        }
        (tmp / "example.json").write_text(json.dumps(example, indent=2))
        written = sorted(e.name + ("/" if e.is_dir() else "") for e in tmp.iterdir())
    elapsed = time.perf_counter() - t0
    summary = {"num_clips": num_clips, "seed": seed, "checkpoint": str(ckpt), "seconds": round(elapsed, 1),
               "model": result["all"], "baseline": baseline["all"], "out": str(out), "files": written}
    print(f"\nbridge-stg demo: {num_clips} fresh synthetic clips (test stream seed {seed}), tubedetr protocol, "
          f"{elapsed:.0f} s")
    print(_summary_table(result, baseline))
    print(f"example: {clip.query!r} -> frames [{span[0]}, {span[1]}) (ground truth [{clip.tube_start}, {clip.tube_end}))")
    print(f"wrote {out}/: {', '.join(written)}")
    return summary


def main(argv: list[str]) -> int:
    from bridge_stg.training.demo import DEMO_RECIPE_MINUTES_CAP, DEMO_RECIPE_STEPS

    parser = argparse.ArgumentParser(
        prog="bridge-stg demo",
        description="Ground fresh synthetic clips with the shipped tiny checkpoint and score them; "
                    "with --train, train that checkpoint from scratch.",
    )
    parser.add_argument("--train", action="store_true", help="train the demo checkpoint instead of running the demo")
    parser.add_argument("--out", default="bridge_stg_demo", help="demo output folder (default: %(default)s)")
    parser.add_argument("--num-clips", type=int, default=200, help="fresh test clips to score (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="demo: seed of the test stream; --train: training seed (default: %(default)s)")
    parser.add_argument("--families", default=None,
                        help="comma-separated query families (docs/benchmark.md); demo: of the test clips; --train: of "
                             "the training and validation clips after the appearance warm-up (default: all, round robin)")
    parser.add_argument("--checkpoint", default=None, help="demo: checkpoint folder (default: the shipped one)")
    parser.add_argument("--overwrite", action="store_true",
                        help="demo: replace --out when it is a non-empty folder that bridge-stg demo did not write "
                             "(a folder of an earlier demo is always replaced)")
    parser.add_argument("--minutes", type=float, default=DEMO_RECIPE_MINUTES_CAP,
                        help="--train: cap on the training minutes (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=DEMO_RECIPE_STEPS,
                        help="--train: optimizer steps; the learning-rate schedule follows them; 0: train for --minutes "
                             "with the schedule following the clock (default: %(default)s, the shipped recipe)")
    parser.add_argument("--output-dir", default="demo_checkpoint", help="--train: checkpoint folder (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="--train: clips per step (default: %(default)s)")
    parser.add_argument("--eval-every-minutes", type=float, default=4.0, help="--train: learning-curve period (default: %(default)s)")
    parser.add_argument("--num-eval-clips", type=int, default=96, help="--train: held-out clips per curve point (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: 1 with --train, the shipped recipe's count: the run is "
                             "deterministic for a given count, and one thread trained 4-5x faster than two on a shared "
                             "2-core machine; 2 for the demo)")
    parser.add_argument("--config-overrides", default=None, metavar="JSON",
                        help="--train: BridgeSTGConfig fields as a JSON object, applied over the recipe's method options "
                             "(docs/method.md), e.g. '{\"motion_evidence\": true, \"motion_flow\": true}'")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    if args.num_clips < 1:
        parser.error(f"--num-clips: must be >= 1, got {args.num_clips}")
    if args.max_steps < 0:
        parser.error(f"--max-steps: must be >= 0, got {args.max_steps}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads: must be >= 1, got {args.threads}")
    if args.config_overrides is not None and not args.train:
        parser.error("--config-overrides: only with --train (a checkpoint's config is its own)")
    progress = not args.no_progress
    families = [f.strip() for f in args.families.split(",") if f.strip()] if args.families else None
    if args.train:
        from bridge_stg.errors_bridge_stg import BridgeSTGError
        from bridge_stg.training.demo import (
            DEMO_METHOD_OPTIONS, DemoModelArguments, DemoTrainingArguments, demo_model_config, train_demo,
        )
        from bridge_stg.training.recipe import parse_config_overrides

        check_families(families or ())
        model_args = DemoModelArguments(config_overrides=dict(
            DEMO_METHOD_OPTIONS, **parse_config_overrides(args.config_overrides, "--config-overrides")))
        try:  # the config's own checks (e.g. motion_flow without motion_evidence), before anything is trained
            demo_model_config(model_args)
        except ValueError as err:
            raise BridgeSTGError(f"--config-overrides: {err}") from err
        targs = DemoTrainingArguments(
            output_dir=args.output_dir, seed=args.seed, minutes=args.minutes, max_steps=args.max_steps or None,
            batch_size=args.batch_size, eval_every_minutes=args.eval_every_minutes, num_eval_clips=args.num_eval_clips,
            num_threads=args.threads or DemoTrainingArguments.num_threads, command=shlex.join(["bridge-stg", "demo", *argv]),
            model=model_args, **({"families": tuple(families)} if families else {}),
        )
        summary = train_demo(targs, progress=progress)
        print(json.dumps({k: summary[k] for k in ("seed", "steps", "train_minutes", "wall_minutes", "validation")}))
        return 0
    run_demo(args.out, num_clips=args.num_clips, seed=args.seed, checkpoint=args.checkpoint, num_threads=args.threads or 2,
             progress=progress, overwrite=args.overwrite, families=families)
    return 0
