"""Which path carries the grounding: the spatial decoder with its bridging queries Q_b or its frame states s_g
zeroed or swapped between clips, per query family of the synthetic benchmark.

    python benchmarks/bridge_diagnostics.py [--quick] [--checkpoint DIR] [--clips-per-family 60] [--threads 1]

For every test clip of the demo's test stream (``TEST_STREAM``, seed 0, the families round robin), the model
grounds the query once (``model.ground``); its encoder pass and the frames the decoder ran on are kept. The
decoder is then run again on the **same frames** (the span is held fixed) with one of its inputs changed:

* ``none``: unchanged (reproduces the grounding);
* ``zero_bridge``: Q_b set to 0 (the query-slot embedding, the time embedding and s_g remain);
* ``swap_bridge``: each clip gets the Q_b of another clip of the batch (a cyclic shift);
* ``zero_frames``: s_g (the fused LLM state at each group's ``<|vision_end|>``) set to 0;
* ``swap_frames``: each clip gets the s_g of another clip.

The boxes are post-processed and scored with the exact metric (``tubedetr`` protocol), per family: m_vIoU, and the
twin identity accuracy of the families with a look-alike twin (``bridge_stg.training.demo.twin_identity``). With
the span fixed, m_tIoU does not change; a drop of m_vIoU is what that input carries for the boxes. Batches hold
clips of one family, so a swap gives a clip the bridge of another clip of the same family (another target).

Oracle rows (``"oracles"`` in the JSON) split the error between the span and the boxes:

* ``gt_span``: the ground-truth span in place of the predicted one, the decoder run (on the same encoder pass) on the
  sampled frames inside it, i.e. what the boxes score when the span is right. (The other half needs no run: with
  the true box on every frame, a clip's vIoU is its tIoU up to the protocol's grid (vIoU counts the 5 fps frames,
  tIoU every frame), so m_tIoU is about what the span scores when the boxes are
  right.)
* ``gt_frames_sampled``, ``gt_frames_midpoint``: no model; the sampled frames inside the true span read as a span
  with each ``span_edges`` rule of the config, with the true boxes: the best m_tIoU a span made of sampled frames
  can reach.

One more reading of the model's own output (``"readings"`` in the JSON): ``span_edges_midpoint``, the predicted span's
frames read with ``span_edges="midpoint"`` (the same boxes; what ``model.ground`` returns with that config).

``--quick``: the shipped demo checkpoint, 4 clips per family (a smoke test, not a measurement). The last stdout
line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Any

import torch

from _common import family_cell, run_record

ABLATIONS = ("none", "zero_bridge", "swap_bridge", "zero_frames", "swap_frames")
ORACLES = ("gt_span", "gt_frames_sampled", "gt_frames_midpoint")
READINGS = ("span_edges_midpoint",)


def _ablate(enc: Any, name: str) -> Any:
    if name == "none":
        return enc
    field = "bridge_queries" if name.endswith("bridge") else "frame_states"
    value = getattr(enc, field)
    value = torch.zeros_like(value) if name.startswith("zero") else torch.roll(value, shifts=1, dims=0)
    return dataclasses.replace(enc, **{field: value})


@torch.no_grad()
def diagnose(model: Any, processor: Any, clips: list[Any], batch_size: int = 8, first_id: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Prediction rows per ablation for ``clips`` (query ids ``test_{first_id + i}``), the span of each clip held fixed,
    and per oracle (``ORACLES``)."""
    from bridge_stg.evaluation import tubedetr_grid
    from bridge_stg.training.predict import results_to_prediction_rows

    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in (*ABLATIONS, *ORACLES, *READINGS)}
    original = model._run_decoder
    for start in range(0, len(clips), batch_size):
        chunk = clips[start: start + batch_size]
        inputs = processor(videos=[c.frames for c in chunk], text=[c.query for c in chunk], video_fps=[c.fps for c in chunk])
        tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor) and k != "frame_ids"}
        seen: dict[str, Any] = {}

        def capture(enc: Any, mask: torch.Tensor) -> Any:
            seen["enc"], seen["mask"] = enc, mask
            return original(enc, mask)

        model._run_decoder = capture
        try:
            out = model.ground(**tensors, tokenizer=processor.tokenizer)
        finally:
            model._run_decoder = original
        grids = [tubedetr_grid(0, c.num_frames, c.fps).tolist() for c in chunk]
        ids = [f"test_{first_id + start + j}" for j in range(len(chunk))]

        def prediction_rows(seconds: torch.Tensor, boxes: torch.Tensor, presence: torch.Tensor,
                            decode: torch.Tensor) -> list[dict[str, Any]]:
            fields = {"pred_span_seconds": seconds, "pred_boxes": boxes, "presence_scores": presence,
                      "decoder_frame_mask": decode, "span_source": out.span_source}
            results = processor.post_process_grounding(fields, inputs.video_metadata, eval_frame_ids=grids)
            return results_to_prediction_rows(results, inputs.video_metadata, ids)

        def decoded_rows(seconds: torch.Tensor, enc: Any, decode: torch.Tensor) -> list[dict[str, Any]]:
            boxes, logits, _ = original(enc, decode)
            return prediction_rows(seconds, boxes[-1] * decode.unsqueeze(-1), logits[-1].sigmoid() * decode, decode)

        for name in ABLATIONS:
            rows[name].extend(decoded_rows(out.pred_span_seconds, _ablate(seen["enc"], name), seen["mask"]))
        # the predicted span's frames read with span_edges="midpoint": same decoded frames and boxes, other seconds
        rows["span_edges_midpoint"].extend(prediction_rows(
            midpoint_seconds(out.pred_span_frames, tensors["frame_timestamps"], tensors["frame_mask"], model.config.sample_fps),
            out.pred_boxes, out.presence_scores, out.decoder_frame_mask))
        # the ground-truth span, the decoder on its sampled frames
        decode = gt_span_frames(chunk, inputs.video_metadata, tensors["frame_mask"].bool())
        rows["gt_span"].extend(decoded_rows(torch.tensor([[c.tube_start / c.fps, c.tube_end / c.fps] for c in chunk]),
                                            seen["enc"], decode))
        for b, (clip, meta) in enumerate(zip(chunk, inputs.video_metadata)):
            n = int(tensors["frame_mask"][b].sum())
            for edges in ("sampled", "midpoint"):
                rows[f"gt_frames_{edges}"].append(true_frames_row(clip, meta, tensors["frame_timestamps"][b, :n],
                                                                  decode[b, :n], ids[b], grids[b], edges,
                                                                  model.config.sample_fps))
    return rows


def midpoint_seconds(spans: torch.Tensor, times: torch.Tensor, frame_mask: torch.Tensor, sample_fps: float) -> torch.Tensor:
    """`(B, 2)` seconds of frame spans `(B, 2)` read with `span_edges="midpoint"` (as `model.ground` reads them)."""
    from bridge_stg.modeling_bridge_stg import sampled_duration, span_seconds

    out = torch.zeros(spans.shape[0], 2)
    for b, (s, e) in enumerate(spans.tolist()):
        n = int(frame_mask[b].sum())
        t = times[b, :n].float()
        out[b] = torch.tensor(span_seconds(t, s, e, sampled_duration(t, sample_fps), "midpoint"))
    return out


def true_frames_row(clip: Any, meta: dict[str, Any], times: torch.Tensor, inside: torch.Tensor, query_id: str,
                    grid: list[int], edges: str, sample_fps: float) -> dict[str, Any]:
    """A prediction row whose span is the sampled frames ``inside`` (the true span's) read in seconds with the
    ``span_edges`` rule ``edges`` and mapped to frame ids as the processor does, with the true box on every frame."""
    from bridge_stg.box_ops_bridge_stg import round_half_up
    from bridge_stg.modeling_bridge_stg import sampled_duration, span_seconds

    index = torch.nonzero(inside).flatten().tolist()
    a, b = span_seconds(times.float(), index[0], index[-1] + 1, sampled_duration(times.float(), sample_fps), edges)
    fps, (seg_start, seg_end) = float(meta["fps"]), (int(x) for x in meta["segment"])
    start = min(max(seg_start + round_half_up(a * fps), seg_start), seg_end - 1)
    end = min(max(seg_start + round_half_up(b * fps), start + 1), seg_end)
    truth = {int(f): [float(v) for v in box] for f, box in zip(clip.frame_ids, clip.boxes)}
    frames = [f for f in grid if start <= f < end]
    return {"query_id": query_id, "span": [start, end], "frame_ids": frames,
            "boxes": [truth.get(f, [0.0, 0.0, 1.0, 1.0]) for f in frames], "scores": [1.0] * len(frames),
            "sampled_frame_ids": sorted({int(f) for f in meta["frame_ids"]}), "span_source": f"true frames, {edges}"}


def gt_span_frames(clips: list[Any], metadata: list[dict[str, Any]], frame_mask: torch.Tensor) -> torch.Tensor:
    """`(B, F)`: the sampled frames inside each clip's ground-truth span ``[tube_start, tube_end)`` (the one nearest to
    the span's middle when no sampled frame falls inside it)."""
    decode = torch.zeros(frame_mask.shape, dtype=torch.bool)
    for b, (clip, meta) in enumerate(zip(clips, metadata)):
        ids = torch.tensor([int(f) for f in meta["frame_ids"]])
        inside = (ids >= clip.tube_start) & (ids < clip.tube_end)
        if not inside.any():
            inside = torch.zeros_like(inside)
            inside[int((ids.float() - (clip.tube_start + clip.tube_end - 1) / 2).abs().argmin())] = True
        decode[b, : len(ids)] = inside
    return decode.to(frame_mask.device) & frame_mask


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="shipped checkpoint, 4 clips per family (smoke test)")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped demo checkpoint)")
    p.add_argument("--clips-per-family", type=int, default=60)
    p.add_argument("--families", default=None, help="comma-separated families (default: all)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from bridge_stg import BridgeSTGForVideoGrounding, BridgeSTGProcessor
    from bridge_stg.processing.synthetic_families import FAMILIES
    from bridge_stg.training.demo import TEST_STREAM, demo_checkpoint_path, render_clips, score_clips

    ckpt = args.checkpoint or demo_checkpoint_path()
    per_family = 4 if args.quick else args.clips_per_family
    families = tuple(args.families.split(",")) if args.families else FAMILIES
    model = BridgeSTGForVideoGrounding.from_pretrained(ckpt).eval()
    processor = BridgeSTGProcessor.from_pretrained(ckpt)
    t0 = time.perf_counter()
    load_start = list(os.getloadavg())
    # clip i of family f is clip (i * len(families) + k) of the round-robin test stream: the clips the demo scores
    everything = render_clips(TEST_STREAM, 0, 0, per_family * len(families), families=families)
    clips = [c for f in families for c in everything if c.family == f]
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in (*ABLATIONS, *ORACLES, *READINGS)}
    for k, family in enumerate(families):  # one family per batch: a swap gives a clip another clip's target
        part = diagnose(model, processor, clips[k * per_family: (k + 1) * per_family], first_id=k * per_family)
        for name in rows:
            rows[name].extend(part[name])
    table: dict[str, dict[str, Any]] = {}
    for name in rows:
        scored = score_clips(clips, rows[name], "test")
        table[name] = {f: {k: v for k, v in r.items() if k in ("m_vIoU", "m_tIoU", "identity_accuracy", "num_queries")}
                       for f, r in scored["families"].items()}
        table[name]["all"] = {"m_vIoU": scored["all"]["m_vIoU"], "m_tIoU": scored["all"]["m_tIoU"]}
    print("| change to the decoder's input | " + " | ".join(families) + " | all |")
    print("|---|" + "---|" * (len(families) + 1))
    for name in (*ABLATIONS, *ORACLES, *READINGS):
        cells = [family_cell(table[name][f]) for f in (*families, "all")]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(json.dumps({**run_record("bridge_diagnostics", args.quick, t0, load_start), "checkpoint": os.path.abspath(ckpt),
                      "clips_per_family": per_family, "families": list(families), "threads": args.threads,
                      "results": {name: table[name] for name in ABLATIONS},
                      "oracles": {name: table[name] for name in ORACLES},
                      "readings": {name: table[name] for name in READINGS}}))


if __name__ == "__main__":
    main()
