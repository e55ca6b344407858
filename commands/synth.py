"""``bridge-stg synth --num-videos N --out DIR --seed S``: write the synthetic STVG benchmark."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from bridge_stg.errors_bridge_stg import BridgeSTGError

from bridge_stg.processing.synthetic import SyntheticSpec, write_synthetic_dataset


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
    no_progress: bool = field(default=False, metadata={"help": "hide the progress bar"})


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``bridge-stg synth``; returns the exit code."""
    parser = HfArgumentParser(SynthArguments, prog="bridge-stg synth", description=__doc__)
    (args,) = parser.parse_args_into_dataclasses(args=list(sys.argv[1:] if argv is None else argv))
    test_fraction = 1.0 - args.train_fraction - args.validation_fraction
    try:
        spec = SyntheticSpec(width=args.width, height=args.height, fps=args.fps, num_frames=args.num_frames, crf=args.crf)
        write_synthetic_dataset(args.out, args.num_videos, args.seed, spec=spec,
                                splits=(args.train_fraction, args.validation_fraction, max(0.0, test_fraction)),
                                embed_videos=args.embed_videos, progress=not args.no_progress)
    except (BridgeSTGError, ValueError) as exc:
        print(f"bridge-stg synth: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
