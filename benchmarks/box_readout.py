"""How the box head reads its attention: the same checkpoints scored with `reference_readout="mean"` and `"peak"`.

    python benchmarks/box_readout.py [--quick] [--checkpoints DIR [DIR ...]] [--clips 250] [--threads 1]

The reference-point box head (docs/method.md §3.6) scores every memory token of a frame and turns those scores into
one box. ``mean`` averages the boxes proposed by all the tokens, weighted by the softmax of the scores; ``peak``
averages only over the top-scoring token and the tokens of the 8 grid cells around it (the softmax renormalised
there). The readout adds no weight, so a checkpoint trained with one can be scored with the other: this script loads
each checkpoint twice (``from_pretrained(dir, reference_readout=...)``) and grounds the first ``--clips`` clips of the
demo's test stream (``TEST_STREAM``, seed 0, the families round robin, the clips ``bridge-stg demo`` scores) with
each readout. Scores: the exact metric (``tubedetr`` protocol) overall and per family, with the twin families'
identity accuracy (``bridge_stg.training.demo.twin_identity``). The spans do not depend on the readout, so m_tIoU is
the same for both; a difference in m_vIoU is the readout's.

``--quick``: the shipped demo checkpoint, 10 clips (a smoke test, not a measurement). The last stdout line is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import torch

from _common import family_cell, run_record


def score_readouts(checkpoint: str, clips: list[Any]) -> dict[str, dict[str, Any]]:
    """Per readout: m_tIoU, m_vIoU, vIoU@0.5 overall and the per-family entries of ``score_clips``."""
    from bridge_stg import BridgeSTGForVideoGrounding, BridgeSTGProcessor
    from bridge_stg.configuration_bridge_stg import REFERENCE_READOUTS
    from bridge_stg.training.demo import evaluate_clips

    processor = BridgeSTGProcessor.from_pretrained(checkpoint)
    out: dict[str, dict[str, Any]] = {}
    for readout in REFERENCE_READOUTS:
        model = BridgeSTGForVideoGrounding.from_pretrained(checkpoint, reference_readout=readout).eval()
        if model.config.box_head != "reference_point":
            raise SystemExit(f"{checkpoint}: box_head={model.config.box_head!r} has no reference-point readout")
        result = evaluate_clips(model, processor, clips, "test", progress=False)
        out[readout] = {**{k: result["all"][k] for k in ("m_tIoU", "m_vIoU", "vIoU@0.5")}, "families": result["families"]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="shipped checkpoint, 10 clips (smoke test)")
    p.add_argument("--checkpoints", nargs="+", default=None, help="checkpoint folders (default: the shipped demo checkpoint)")
    p.add_argument("--clips", type=int, default=250, help="first N clips of the test stream (default 250, 50 per family)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from bridge_stg.configuration_bridge_stg import REFERENCE_READOUTS
    from bridge_stg.processing.synthetic_families import FAMILIES
    from bridge_stg.training.demo import TEST_STREAM, demo_checkpoint_path, render_clips

    checkpoints = args.checkpoints or [demo_checkpoint_path()]
    num_clips = 10 if args.quick else args.clips
    t0 = time.perf_counter()
    load_start = list(os.getloadavg())
    clips = render_clips(TEST_STREAM, 0, 0, num_clips, families=FAMILIES)
    results = {os.path.abspath(c): score_readouts(c, clips) for c in checkpoints}
    families = list(dict.fromkeys(c.family for c in clips))

    print("| checkpoint | readout | m_tIoU | m_vIoU | vIoU@0.5 | " + " | ".join(families) + " |")
    print("|---|---|---|---|---|" + "---|" * len(families))
    for ckpt, per_readout in results.items():
        for readout, r in per_readout.items():
            cells = [family_cell(r["families"][f]) for f in families]
            print(f"| {os.path.basename(ckpt)} | {readout} | {r['m_tIoU']:.3f} | {r['m_vIoU']:.3f} | {r['vIoU@0.5']:.3f} | "
                  + " | ".join(cells) + " |")
    mean_of = {readout: statistics.fmean(r[readout]["m_vIoU"] for r in results.values())
               for readout in REFERENCE_READOUTS}
    print(f"mean m_vIoU over {len(results)} checkpoint(s): " + ", ".join(f"{k} {v:.3f}" for k, v in mean_of.items()))
    print(json.dumps({**run_record("box_readout", args.quick, t0, load_start), "clips": num_clips, "families": families,
                      "threads": args.threads, "mean_m_vIoU": mean_of, "results": results}))


if __name__ == "__main__":
    main()
