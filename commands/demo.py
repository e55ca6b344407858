"""``bridge-stg demo``: the package's main job on an embedded default.

Without ``--train`` (a couple of minutes on 2 CPU cores): render fresh synthetic test clips from the demo's
test stream (never used in training, see :mod:`bridge_stg.processing.demo_training`), ground them with the
shipped tiny checkpoint, score them with the exact STVG metric (``DIR/metrics.json``, the JSON of
``bridge-stg evaluate --json``), score a trivial baseline the same way (``DIR/baseline_metrics.json``),
copy the checkpoint to ``DIR/checkpoint/`` (loadable by ``pipeline("video-grounding")``), ground one clip
with that pipeline into ``DIR/example.json`` and an annotated ``DIR/example.mp4``, and print a summary.

With ``--train``: train the demo checkpoint from scratch (``--max-steps``, ``--minutes``, ``--seed``,
``--output-dir``); see :func:`bridge_stg.processing.demo_training.train_demo`. The defaults are the shipped
checkpoint's recipe: 4551 steps with a step-based learning-rate schedule (``--minutes`` is only a cap), so with
``--seed 0 --threads 1`` the run is deterministic and gives the shipped weights (about an hour on 2 cores).
``--max-steps 0`` trains for ``--minutes`` instead, with the schedule following the clock.

    bridge-stg demo --out demo_out
    bridge-stg demo --train --seed 0 --threads 1 --output-dir my_demo_checkpoint
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm
from transformers.utils import logging

logger = logging.get_logger(__name__)

#: the shipped checkpoint folder (``bridge_stg/demo_checkpoint``)
DEMO_CHECKPOINT = Path(__file__).resolve().parent.parent / "demo_checkpoint"
if not DEMO_CHECKPOINT.is_dir():  # editable install: commands/ and modeling_bridge_stg/ are sibling folders
    DEMO_CHECKPOINT = Path(__file__).resolve().parent.parent / "modeling_bridge_stg" / "demo_checkpoint"

PRED_COLOUR = (255, 40, 40)
GT_COLOUR = (40, 255, 40)


def shipped_checkpoint() -> Path:
    """Path of the checkpoint shipped in the package (``bridge_stg/demo_checkpoint``)."""
    import bridge_stg

    path = Path(bridge_stg.__file__).resolve().parent / "demo_checkpoint"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"the demo checkpoint is missing from the installed package ({path}); "
                                "train one with `bridge-stg demo --train` and pass --checkpoint")
    return path


def draw_box(frame: np.ndarray, box: Sequence[float], colour: tuple[int, int, int], thickness: int = 2) -> None:
    """Draw the outline of ``box`` ``[x1, y1, x2, y2]`` (pixels, exclusive right/bottom) on ``frame`` in place."""
    h, w = frame.shape[:2]
    x1, y1 = int(np.clip(round(box[0]), 0, w - 1)), int(np.clip(round(box[1]), 0, h - 1))
    x2, y2 = int(np.clip(round(box[2]) - 1, 0, w - 1)), int(np.clip(round(box[3]) - 1, 0, h - 1))
    if x2 < x1 or y2 < y1:
        return
    c = np.asarray(colour, dtype=np.uint8)
    t = max(1, thickness)
    frame[y1: min(y1 + t, y2 + 1), x1: x2 + 1] = c
    frame[max(y2 - t + 1, y1): y2 + 1, x1: x2 + 1] = c
    frame[y1: y2 + 1, x1: min(x1 + t, x2 + 1)] = c
    frame[y1: y2 + 1, max(x2 - t + 1, x1): x2 + 1] = c


def annotate_frames(
    frames: np.ndarray, pred_tube: dict[int, Sequence[float]], gt_tube: dict[int, Sequence[float]] | None = None,
    span: tuple[int, int] | None = None,
) -> np.ndarray:
    """A copy of ``frames`` with the predicted tube (red; boxes interpolated between tube frames inside the
    predicted span), the ground-truth tube (green, thin) and a red bar at the top during the predicted span."""
    out = frames.copy()
    keys = sorted(pred_tube)
    if keys:
        kf = np.asarray(keys, dtype=np.float64)
        kb = np.asarray([pred_tube[k] for k in keys], dtype=np.float64)
    for f in range(out.shape[0]):
        if gt_tube and f in gt_tube:
            draw_box(out[f], gt_tube[f], GT_COLOUR, thickness=1)
        if span is not None and span[0] <= f < span[1]:
            out[f, :3] = np.asarray(PRED_COLOUR, dtype=np.uint8)
            if keys:
                box = [float(np.interp(f, kf, kb[:, c])) for c in range(4)]
                draw_box(out[f], box, PRED_COLOUR, thickness=2)
    return out


def write_example_video(src: Path, dst: Path, result: dict[str, Any], clip: Any, progress: bool = True) -> str:
    """Write the annotated example video; return which writer drew it.

    Uses ``bridge_stg.commands.annotate.write_annotated_video`` (the ``bridge-stg ground`` writer: boxes, query
    text, timeline) when that module is importable; otherwise (older checkouts without it) draws the predicted
    tube in red and the ground truth in green with :func:`annotate_frames`, and logs that it did so.
    """
    from bridge_stg.processing.synthetic import write_mp4

    try:
        from bridge_stg.commands.annotate import write_annotated_video
    except ImportError as exc:
        logger.warning(f"bridge_stg.commands.annotate is not importable ({exc}); drawing example.mp4 with the demo's own writer")
        pred_tube = {int(t["frame"]): [t["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")] for t in result["tube"]}
        gt_tube = {int(f): list(b) for f, b in zip(clip.frame_ids, clip.boxes)}
        span = (int(result["span"]["start_frame"]), int(result["span"]["end_frame"]))
        write_mp4(dst, annotate_frames(clip.frames, pred_tube, gt_tube, span), clip.fps)
        return "demo"
    write_annotated_video(src, [result], dst, progress=progress)
    return "annotate"


def _summary_table(model_res: dict[str, Any], base_res: dict[str, Any]) -> str:
    keys = ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5", "m_sIoU")
    lines = [f"{'':24s}" + "".join(f"{k:>10s}" for k in keys)]
    for name, res in (("demo checkpoint", model_res), ("trivial baseline", base_res)):
        a = res["all"]
        lines.append(f"{name:24s}" + "".join(f"{a[k]:10.3f}" if a.get(k) is not None else f"{'-':>10s}" for k in keys))
    return "\n".join(lines)


def run_demo(
    out_dir: str | os.PathLike[str], num_clips: int = 200, seed: int = 0, checkpoint: str | os.PathLike[str] | None = None,
    num_threads: int = 2, progress: bool = True,
) -> dict[str, Any]:
    """Ground and score fresh synthetic test clips with the demo checkpoint; write the demo folder; return a summary."""
    import torch
    from transformers import AutoModel, pipeline

    import bridge_stg  # noqa: F401  (registers the model and the "video-grounding" pipeline)
    from bridge_stg import BridgeSTGProcessor
    from bridge_stg.evaluation import compute_stvg_metrics
    from bridge_stg.processing.demo_training import (
        TEST_STREAM, ground_clips, reference_rows, render_clips, trivial_baseline_rows,
    )
    from bridge_stg.processing.synthetic import write_mp4

    if num_clips < 1:
        raise ValueError(f"--num-clips must be >= 1, got {num_clips}")
    torch.set_num_threads(num_threads)
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Path(checkpoint) if checkpoint is not None else shipped_checkpoint()
    model = AutoModel.from_pretrained(ckpt)
    processor = BridgeSTGProcessor.from_pretrained(ckpt)
    model.eval()

    clips = [c for c in tqdm((render_clips(TEST_STREAM, seed, i, 1)[0] for i in range(num_clips)), total=num_clips,
                             desc="rendering test clips", disable=not progress)]
    refs = reference_rows(clips, "test")
    preds, _ = ground_clips(model, processor, clips, "test", progress=progress, desc="grounding test clips")
    result = compute_stvg_metrics(refs, preds, protocol="tubedetr")
    baseline = compute_stvg_metrics(refs, trivial_baseline_rows(clips, "test"), protocol="tubedetr")
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "baseline_metrics.json").write_text(json.dumps(baseline, indent=2))
    with open(out / "predictions.jsonl", "w") as f:
        for r in preds:
            f.write(json.dumps(r) + "\n")
    with open(out / "references.jsonl", "w") as f:
        for r in refs:
            f.write(json.dumps(r) + "\n")

    dst = out / "checkpoint"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(ckpt, dst)

    # one clip through the user-facing path: an mp4 file, the pipeline loaded from the copied checkpoint
    clip = clips[0]
    write_mp4(out / "example_input.mp4", clip.frames, clip.fps)
    grounder = pipeline("video-grounding", model=str(dst))
    with tqdm(total=1, desc="example clip (pipeline)", disable=not progress) as bar:
        res = grounder(str(out / "example_input.mp4"), text=clip.query)
        bar.update(1)
    span = (int(res["span"]["start_frame"]), int(res["span"]["end_frame"]))
    write_example_video(out / "example_input.mp4", out / "example.mp4", res, clip, progress=progress)
    example = {
        "query": clip.query, "fps": clip.fps, "num_frames": clip.num_frames, "width": clip.width, "height": clip.height,
        "prediction": res, "ground_truth": {"span": {"start_frame": clip.tube_start, "end_frame": clip.tube_end},
                                            "frame_ids": list(clip.frame_ids), "boxes": [list(b) for b in clip.boxes]},
        "test_stream_seed": seed, "clip_index": 0,
        "input_video": "example_input.mp4", "annotated_video": "example.mp4",
    }
    (out / "example.json").write_text(json.dumps(example, indent=2))
    elapsed = time.perf_counter() - t0
    summary = {"num_clips": num_clips, "seed": seed, "checkpoint": str(ckpt), "seconds": round(elapsed, 1),
               "model": result["all"], "baseline": baseline["all"]}
    print(f"\nbridge-stg demo: {num_clips} fresh synthetic clips (test stream seed {seed}), tubedetr protocol, "
          f"{elapsed:.0f} s")
    print(_summary_table(result, baseline))
    print(f"example: {clip.query!r} -> frames [{span[0]}, {span[1]}) (ground truth [{clip.tube_start}, {clip.tube_end}))")
    print(f"wrote {out}/metrics.json, baseline_metrics.json, example.mp4, example.json, checkpoint/")
    return summary


def main(argv: list[str]) -> int:
    from bridge_stg.processing.demo_training import DEMO_RECIPE_MINUTES_CAP, DEMO_RECIPE_STEPS

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
    parser.add_argument("--checkpoint", default=None, help="demo: checkpoint folder (default: the shipped one)")
    parser.add_argument("--minutes", type=float, default=DEMO_RECIPE_MINUTES_CAP,
                        help="--train: cap on the training minutes (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=DEMO_RECIPE_STEPS,
                        help="--train: optimizer steps; the learning-rate schedule follows them; 0: train for --minutes "
                             "with the schedule following the clock (default: %(default)s, the shipped recipe)")
    parser.add_argument("--output-dir", default="demo_checkpoint", help="--train: checkpoint folder (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="--train: clips per step (default: %(default)s)")
    parser.add_argument("--eval-every-minutes", type=float, default=4.0, help="--train: learning-curve period (default: %(default)s)")
    parser.add_argument("--num-eval-clips", type=int, default=96, help="--train: held-out clips per curve point (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    if args.max_steps < 0:
        parser.error(f"--max-steps: must be >= 0, got {args.max_steps}")
    progress = not args.no_progress
    if args.train:
        from bridge_stg.processing.demo_training import DemoTrainingArguments, train_demo

        targs = DemoTrainingArguments(
            output_dir=args.output_dir, seed=args.seed, minutes=args.minutes, max_steps=args.max_steps or None,
            batch_size=args.batch_size, eval_every_minutes=args.eval_every_minutes, num_eval_clips=args.num_eval_clips,
            num_threads=args.threads, command="bridge-stg demo " + " ".join(argv),
        )
        summary = train_demo(targs, progress=progress)
        print(json.dumps({k: summary[k] for k in ("seed", "steps", "train_minutes", "wall_minutes", "validation")}))
        return 0
    run_demo(args.out, num_clips=args.num_clips, seed=args.seed, checkpoint=args.checkpoint, num_threads=args.threads,
             progress=progress)
    return 0
