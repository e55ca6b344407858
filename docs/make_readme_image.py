"""Make the README picture: one annotated frame of a synthetic clip grounded by the shipped demo checkpoint.

Usage (from the repository root, once the demo checkpoint exists in ``modeling_bridge_stg/demo_checkpoint/``)::

    python docs/make_readme_image.py                       # -> docs/images/demo_frame.png
    python docs/make_readme_image.py --seed 3 --out x.png  # another clip

The clip is rendered in memory by ``bridge_stg.processing.synthetic`` (the demo checkpoint knows only such
synthetic shapes), grounded with the ``video-grounding`` pipeline, and the predicted tube frame nearest to
the middle of the predicted span is drawn with ``bridge_stg.evaluation.visualize.annotate_frame`` (box, query,
timeline), enlarged 3x (nearest neighbour) and saved as PNG. The query, span and frame are printed.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic clip (default 0)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "images", "demo_frame.png"))
    parser.add_argument("--model", default=None, help="checkpoint folder (default: the shipped demo checkpoint)")
    parser.add_argument("--scale", type=int, default=3, help="enlargement factor of the saved frame (default 3)")
    args = parser.parse_args(argv)

    from bridge_stg.training.demo import demo_checkpoint_path
    from bridge_stg.evaluation.visualize import annotate_frame
    from bridge_stg.commands.ground import load_grounder
    from bridge_stg.errors_bridge_stg import BridgeSTGError
    from bridge_stg.processing.synthetic import render_synthetic_clip

    try:
        model_dir = args.model or demo_checkpoint_path()
    except BridgeSTGError as err:
        print(f"make_readme_image: error: {err}", file=sys.stderr)
        return 2
    clip = render_synthetic_clip(np.random.default_rng(args.seed))
    grounder = load_grounder(model_dir)
    result = grounder(clip.frames, text=clip.query, video_fps=clip.fps)
    if not result["tube"]:
        print("make_readme_image: error: the model predicted no box on this clip; try another --seed", file=sys.stderr)
        return 1
    span = result["span"]
    middle = (span[0] + span[1] - 1) / 2
    frame = min((t["frame"] for t in result["tube"]), key=lambda f: abs(f - middle))
    img = annotate_frame(clip.frames[frame], frame, [result], clip.num_frames)
    pil = Image.fromarray(img)
    pil = pil.resize((pil.width * args.scale, pil.height * args.scale), Image.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    pil.save(args.out, optimize=True)
    print(f"query: {clip.query!r}  ground truth frames {clip.tube_start}-{clip.tube_end - 1}")
    print(f"predicted span: frames [{span[0]}, {span[1]}); drawn frame {frame}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
