"""``bridge-stg ground``: ground one or several sentences in a video; print the span and tube, write an
annotated video and/or JSON.

Examples::

    bridge-stg ground clip.mp4 "the man in the red shirt" --model path/to/checkpoint --output annotated.mp4
    bridge-stg ground clip.mp4 "the dog" "the ball" --model ckpt --json result.json --threshold 0.3
    bridge-stg ground synthetic.mp4 "the red square" --output demo.gif      # the shipped demo checkpoint

Without ``--model`` the tiny demo checkpoint shipped with the package is used, and a note on stderr says
so: it is trained on synthetic shapes only. ``--output`` / ``--json`` never replace an existing file without
``--overwrite`` and never the input video; they are written under a temporary name and renamed at the end.
Exit codes: 0 success, 2 bad input or checkpoint (one line on stderr naming the file; ``--debug`` for the
traceback), 1 unexpected failure.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from transformers import HfArgumentParser

PROG = "bridge-stg ground"


@dataclass
class GroundArguments:
    """Options of ``bridge-stg ground`` (positional: VIDEO and one or more QUERY)."""

    model: str | None = field(default=None, metadata={
        "help": "Bridge-STG checkpoint folder (written by save_for_hub). Default: the demo checkpoint shipped with "
                "the package, trained on synthetic shapes only."})
    output: str | None = field(default=None, metadata={
        "help": "write the annotated video here (.mp4: H.264 yuv420p; .gif)"})
    json: str | None = field(default=None, metadata={"help": "write the results as JSON here"})
    sample_fps: float | None = field(default=None, metadata={
        "help": "frames sampled per second of video (default: the checkpoint's processor)"})
    max_frames: int | None = field(default=None, metadata={
        "help": "at most this many sampled frames (default: the checkpoint's processor)"})
    threshold: float | None = field(default=None, metadata={"help": "drop tube boxes whose score is below this"})
    batch_size: int = field(default=1, metadata={"help": "queries grounded together in one model call"})
    device: str = field(default="cpu", metadata={"help": "torch device, e.g. cpu or cuda:0"})
    dtype: str = field(default="auto", metadata={"help": "weights dtype: auto (as saved), float32, bfloat16, float16"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --output / --json file"})
    progress: bool = field(default=True, metadata={"help": "progress bars on stderr (--no_progress to hide)"})


def build_parser() -> HfArgumentParser:
    """``HfArgumentParser`` over :class:`GroundArguments` plus the positional VIDEO and QUERY."""
    parser = HfArgumentParser(GroundArguments, prog=PROG, description=(
        "Ground sentences in a video with Bridge-STG: print when (frame span) and where (boxes), optionally write "
        "an annotated video and JSON."))
    parser.add_argument("video", help="the video file")
    parser.add_argument("queries", nargs="+", metavar="QUERY", help="the sentence(s) to ground")
    return parser


def _resolve_model(path: str | None) -> tuple[str, bool]:
    """The checkpoint folder and whether it is the shipped demo; errors name the folder."""
    from bridge_stg.errors_bridge_stg import BridgeSTGError

    if path is None:
        from bridge_stg.training.demo import demo_checkpoint_path

        return demo_checkpoint_path(), True
    if not os.path.isdir(path):
        raise BridgeSTGError(f"{path}: no such checkpoint folder")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise BridgeSTGError(f"{path}: not a checkpoint folder (no config.json)")
    if not os.path.isfile(os.path.join(path, "processor_config.json")):
        raise BridgeSTGError(
            f"{path}: the checkpoint has no processor_config.json (save it with bridge_stg.model_cards.hub.save_for_hub)"
        )
    return path, False


def load_checkpoint(model_dir: str, device: str = "cpu", dtype: str = "auto") -> tuple[Any, Any]:
    """``(model, processor)`` of a checkpoint folder, on the installed package's classes (the folder's code is not
    executed); the model in eval mode on ``device``. Errors name the folder."""
    import torch

    from bridge_stg import BridgeSTGConfig, BridgeSTGForVideoGrounding, BridgeSTGProcessor
    from bridge_stg.errors_bridge_stg import BridgeSTGError

    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as fh:
        try:
            model_type = json.load(fh).get("model_type")
        except json.JSONDecodeError as err:
            raise BridgeSTGError(f"{model_dir}/config.json: not valid JSON ({err})") from err
    if model_type != BridgeSTGConfig.model_type:
        raise BridgeSTGError(f"{model_dir}: not a Bridge-STG checkpoint (model_type {model_type!r})")
    kwargs: dict[str, Any] = {}
    if dtype != "auto":
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise BridgeSTGError(f"--dtype: unknown torch dtype {dtype!r}")
        kwargs["dtype"] = getattr(torch, dtype)
    model = BridgeSTGForVideoGrounding.from_pretrained(model_dir, **kwargs)
    processor = BridgeSTGProcessor.from_pretrained(model_dir)
    return model.to(device).eval(), processor


def load_grounder(model_dir: str, device: str = "cpu", dtype: str = "auto", batch_size: int = 1) -> Any:
    """A ``VideoGroundingPipeline`` on the installed package's classes (the folder's code is not executed)."""
    from bridge_stg import VideoGroundingPipeline

    model, processor = load_checkpoint(model_dir, device=device, dtype=dtype)
    return VideoGroundingPipeline(model=model, processor=processor, device=device, batch_size=batch_size)


def format_summary(results: list[dict[str, Any]], meta: Any) -> str:
    """The text printed on stdout: per query, the span and a short tube summary."""
    lines = [f"video: {meta.name}  {meta.width}x{meta.height}, {meta.num_frames} frames, {meta.fps:.3f} fps"]
    for res in results:
        (s, e), (a, b) = res["span"], res["span_seconds"]
        lines.append(f"query: {res['query']!r}")
        lines.append(f"  span: frames [{s}, {e}) ({a:.2f}s - {b:.2f}s)  [span from: {res.get('span_source')}]")
        tube = res["tube"]
        if not tube:
            lines.append("  tube: no box above the threshold")
            continue
        scores = [t["score"] for t in tube]
        lines.append(f"  tube: {len(tube)} boxes on frames {tube[0]['frame']}..{tube[-1]['frame']}, "
                     f"score mean {sum(scores) / len(scores):.2f} (min {min(scores):.2f}, max {max(scores):.2f})")
        shown = tube if len(tube) <= 4 else tube[:2] + [None] + tube[-2:]
        for t in shown:
            if t is None:
                lines.append("    ...")
                continue
            b = t["box"]
            lines.append(f"    frame {t['frame']:>6} {t['time']:8.2f}s  box [{b['xmin']:.0f}, {b['ymin']:.0f}, "
                         f"{b['xmax']:.0f}, {b['ymax']:.0f}]  score {t['score']:.2f}")
    return "\n".join(lines)


def check_queries(queries: list[str]) -> None:
    """Every query is a non-blank string (:class:`InvalidQueryError` naming the first that is not, counted from 1)."""
    from bridge_stg.errors_bridge_stg import InvalidQueryError

    if not queries:
        raise InvalidQueryError("no query given")
    for i, q in enumerate(queries):
        if not isinstance(q, str) or not q.strip():
            raise InvalidQueryError(f"query {i + 1} is empty")


def check_options(
    sample_fps: float | None = None, max_frames: float | None = None, threshold: float | None = None, prefix: str = "--",
) -> dict[str, Any]:
    """The pipeline's call options (``sample_fps``, ``max_frames``, ``threshold``) from the values the user gave, the
    unset ones (``None``) left out; a value out of range is a one-line :class:`BridgeSTGError` naming the option
    (``prefix`` + its name: ``--sample_fps`` on the command line, ``sample_fps`` on the page). The same checks as the
    pipeline's and the video reader's, made before the model is loaded and the video decoded."""
    import math

    from bridge_stg.errors_bridge_stg import BridgeSTGError, FrameSamplingError

    call: dict[str, Any] = {}
    if sample_fps is not None:
        if isinstance(sample_fps, bool) or not isinstance(sample_fps, (int, float)) or not (
                math.isfinite(sample_fps) and sample_fps > 0):
            raise FrameSamplingError(f"{prefix}sample_fps must be a positive number of frames per second, got {sample_fps!r}")
        call["sample_fps"] = float(sample_fps)
    if max_frames is not None:
        whole = isinstance(max_frames, int) or (isinstance(max_frames, float) and math.isfinite(max_frames)
                                                and max_frames.is_integer())
        if isinstance(max_frames, bool) or not whole or max_frames < 2 or int(max_frames) % 2:
            raise FrameSamplingError(f"{prefix}max_frames must be an even integer >= 2, got {max_frames!r}")
        call["max_frames"] = int(max_frames)
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise BridgeSTGError(f"{prefix}threshold must be a score in [0, 1], got {threshold!r}")
        call["threshold"] = float(threshold)
    return call


def result_payload(video: str, model_dir: str, is_demo: bool, meta: Any, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON result of ``--json`` (and of the browser app's download): the video, the model, the video's
    properties and the pipeline's results."""
    return {
        "video": video,
        "model": os.path.abspath(model_dir),
        "demo_checkpoint": is_demo,
        "video_info": {"fps": meta.fps, "num_frames": meta.num_frames, "width": meta.width, "height": meta.height,
                       "duration": meta.duration},
        "results": results,
    }


def run(args: GroundArguments, video: str, queries: list[str]) -> int:
    """Validate the inputs (cheap checks first), ground, print, write the outputs."""
    from bridge_stg.errors_bridge_stg import BridgeSTGError
    from bridge_stg.video_io_bridge_stg import probe_video

    from .common import check_output_file, write_text_atomic

    check_queries(queries)
    if args.output is not None:
        ext = os.path.splitext(args.output)[1].lower()
        if ext not in (".mp4", ".gif"):
            raise BridgeSTGError(f"--output {args.output}: unsupported format {ext or '(none)'!r}; use .mp4 or .gif")
    for name, path in (("--output", args.output), ("--json", args.json)):
        if path is not None:
            check_output_file(path, args.overwrite, name, inputs=[video, args.model])
    if args.output is not None and args.json is not None and os.path.abspath(args.output) == os.path.abspath(args.json):
        raise BridgeSTGError(f"--output and --json: both name {args.output}")
    if args.batch_size < 1:
        raise BridgeSTGError(f"--batch_size must be >= 1, got {args.batch_size}")
    options = check_options(args.sample_fps, args.max_frames, args.threshold)
    meta = probe_video(video)  # missing / corrupt / not a video: one-line VideoDecodeError before loading the model
    model_dir, is_demo = _resolve_model(args.model)
    if is_demo:
        print(f"{PROG}: no --model given: using the demo checkpoint shipped with bridge-stg ({model_dir}). It is "
              "trained on synthetic shapes only and knows nothing about real videos.", file=sys.stderr)
    grounder = load_grounder(model_dir, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    if args.progress:
        print(f"{PROG}: decoding and grounding {len(queries)} quer{'y' if len(queries) == 1 else 'ies'} ...",
              file=sys.stderr)
    results = grounder(video, text=list(queries), **options)
    print(format_summary(results, meta))
    if args.json is not None:
        payload = result_payload(os.path.abspath(video), model_dir, is_demo, meta, results)
        write_text_atomic(args.json, json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    if args.output is not None:
        from bridge_stg.evaluation.visualize import write_annotated_video

        info = write_annotated_video(video, results, args.output, progress=args.progress)
        print(f"wrote {info['output']} ({info['frames']} frames, {info['width']}x{info['height']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``bridge-stg ground``; returns the exit code (2 on bad input, with one line on stderr)."""
    from .common import run_command

    def body(args_: list[str]) -> int:
        args, rest = build_parser().parse_args_into_dataclasses(args=args_)
        return run(args, rest.video, list(rest.queries))

    return run_command(PROG, body, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
