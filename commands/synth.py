"""``bridge-stg synth --num-videos N --out DIR --seed S``: write the synthetic STVG benchmark.

``--tasks stvg,tvg=50,rec=50`` writes a multi-task set instead (docs/multitask.md §1): STVG clips of every query family,
temporal-grounding clips (span only) and referring-expression images (one box), each task ``--num_videos`` items
unless a count is given (``task=N``); :func:`bridge_stg.processing.synthetic_tasks.write_synthetic_task_dataset`.

The folder is built under a temporary name beside ``DIR`` and renamed at the end. A ``DIR`` written by an earlier
``bridge-stg synth`` is replaced (the command says so); any other non-empty folder is refused without
``--overwrite``. Exit codes: 0 success, 2 bad input (one line on stderr; ``--debug`` for the traceback).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from bridge_stg.errors_bridge_stg import BridgeSTGError

from bridge_stg.commands.common import folder_holds_only, plan_output_folder, run_command, staged_folder
from bridge_stg.processing.synthetic import SyntheticSpec, write_synthetic_dataset
from bridge_stg.processing.synthetic_tasks import parse_task_counts, write_synthetic_task_dataset
from bridge_stg.processing.writer import REPORT_NAME

PROG = "bridge-stg synth"


@dataclass
class SynthArguments:
    """Options of ``bridge-stg synth``."""

    out: str = field(metadata={"help": "output dataset folder (parquet splits, videos/, README.md, conversion_report.json)"})
    num_videos: int = field(default=100, metadata={"help": "number of clips (one query each)"})
    seed: int = field(default=0, metadata={"help": "random seed; the same seed gives the same rows and pixels"})
    width: int = field(default=112, metadata={"help": "frame width (even)"})
    height: int = field(default=112, metadata={"help": "frame height (even)"})
    fps: float = field(default=10.0, metadata={"help": "frames per second"})
    num_frames: int = field(default=80, metadata={"help": "frames per clip"})
    crf: int = field(default=18, metadata={"help": "libx264 constant rate factor (lower = closer colours)"})
    train_fraction: float = field(default=0.8, metadata={"help": "fraction of clips in train"})
    validation_fraction: float = field(default=0.1, metadata={"help": "fraction of clips in validation (the rest is test)"})
    embed_videos: bool = field(default=False, metadata={"help": "also store the mp4 bytes in the video_bytes column"})
    tasks: str | None = field(default=None, metadata={
        "help": "a multi-task set: comma-separated tasks of stvg, tvg, rec, each with --num_videos items or task=N, "
                "e.g. 'stvg,tvg=50,rec=50' (STVG clips of every query family, tvg clips with a span only, rec images "
                "with one box; docs/multitask.md). Default: STVG appearance clips only"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace --out when it is a non-empty folder that bridge-stg synth did not write"})
    no_progress: bool = field(default=False, metadata={"help": "hide the progress bar"})


def written_by_synth(folder: Path) -> bool:
    """A folder of an earlier ``bridge-stg synth``: only ``data/``, ``videos/``, ``images/`` (``--tasks`` with rec),
    ``README.md`` and a conversion report whose every run is synthetic."""
    if not folder_holds_only(folder, ("data", "videos", "images", "README.md", REPORT_NAME), REPORT_NAME):
        return False
    try:
        runs = json.loads((folder / REPORT_NAME).read_text(encoding="utf-8"))["runs"]
        return bool(runs) and all(run["report"]["source_format"] == "synthetic" for run in runs)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _run(argv: list[str]) -> int:
    parser = HfArgumentParser(SynthArguments, prog=PROG, description=__doc__)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    test_fraction = 1.0 - args.train_fraction - args.validation_fraction
    plan = plan_output_folder(args.out, args.overwrite, "--out", PROG, written_by_synth)
    spec = SyntheticSpec(width=args.width, height=args.height, fps=args.fps, num_frames=args.num_frames, crf=args.crf)
    spec.validate()  # bad options fail before anything is replaced
    if args.num_videos < 1:
        raise BridgeSTGError(f"--num_videos must be >= 1, got {args.num_videos}")
    splits = (args.train_fraction, args.validation_fraction, max(0.0, test_fraction))
    counts = None if args.tasks is None else parse_task_counts(args.tasks, args.num_videos)
    with staged_folder(plan, PROG) as tmp:
        if counts is not None:
            write_synthetic_task_dataset(tmp, counts, args.seed, spec=spec, splits=splits, embed_videos=args.embed_videos,
                                         progress=not args.no_progress)
        else:
            write_synthetic_dataset(tmp, args.num_videos, args.seed, spec=spec, splits=splits,
                                    embed_videos=args.embed_videos, progress=not args.no_progress)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``bridge-stg synth``; returns the exit code."""
    return run_command(PROG, _run, argv, errors=(BridgeSTGError, ValueError, OSError))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
