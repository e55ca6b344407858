"""Explicit temporal alignment (ETA): visual tokens, FLOPs and latency of the spatial decoder with and without it.

    python benchmarks/eta_tokens.py [--quick] [--frames 16,32,64] [--repeats 50] [--ground-repeats 10] [--threads 1]

What is compared. ``eta=True`` (the default config) runs the QGSL decoder only on the sampled frames inside
the predicted span; ``eta=False`` runs it on every sampled frame. Both models are the demo-sized model of
``build_demo_model(DemoModelArguments(max_frames=F))`` with the same weights; only the config field ``eta``
differs. One random 112×112 video of F frames at 2 fps and one query are processed for F = 16, 32, 64.

The span. The models are untrained, so their own predicted span is arbitrary. The ETA frame set is instead the
span a model would predict on a typical VidSTG query: a contiguous, centred run of ``round(p·F)`` sampled frames,
built the way ``ground()`` builds its decoder mask. ``p`` is the mean fraction of its segment that the GT tube
covers, over all val + test queries of the real VidSTG sentence annotations, read from the folder named by the
environment variable ``BRIDGE_STG_VIDSTG_DIR`` (computed at start-up; 0.40, as docs/datasets.md states, if the
files are not there).

What is timed. ``ground()`` encodes once and then calls ``_run_decoder(enc, decode_mask)``; everything before
that call is identical with and without ETA. The benchmark runs ``ground()`` once on the ``eta=False`` model,
keeps the ``enc`` it passes to ``_run_decoder`` (captured with a wrapper on that instance), then times
``_run_decoder(enc, mask)`` alone with the ETA mask and with the all-frames mask (``--repeats`` rounds after one
warm-up round, the two settings interleaved in every round so load changes on the shared machine hit both alike;
median and minimum reported; under ``torch.inference_mode``). It also times the whole ``ground()`` of the ``eta=False``
model, to give the decoder's share of a query; "ground() with ETA" in the table is derived from those
(ground − decoder(all) + decoder(ETA)), not timed. FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` on the
same ``_run_decoder`` calls (matmuls and attention; CPU SDPA gets the standard SDPA formula registered here,
since torch does not count ``_scaled_dot_product_flash_attention_for_cpu``).

Visual tokens entering the decoder: per decoded frame, the merged visual tokens of its temporal group that the
frame's queries cross-attend to (``memory_valid``), summed over decoded frames. Two frames of one group read the
same tokens, so the distinct-token count is also given.

Qwen2.5-VL-7B-sized figures (COMPUTED, nothing measured): tokens per frame from ``BridgeSTGVideoProcessor``
sizing under the default ``BridgeSTGConfig`` pixel budget (``max_pixels = 256·28²``, ``max_video_tokens = 8192``)
for a 640×360 VidSTG frame at 64 frames, and decoder FLOPs of the default-size decoder (K = 8, d = 256, 6 layers,
FFN 2048) counted by FlopCounterMode on meta tensors of those shapes.

``--quick``: 16 frames only, 2 repeats (a smoke test, not a measurement). Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

from bridge_stg import BridgeSTGConfig, BridgeSTGForVideoGrounding, BridgeSTGProcessor
from bridge_stg.training.demo import DemoModelArguments, build_demo_model

from _common import run_record  # benchmarks/ is on sys.path when a script runs

VIDSTG_DIR = Path(os.environ.get("BRIDGE_STG_VIDSTG_DIR", ""))
FALLBACK_SPAN_FRACTION = 0.40


@register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
def _cpu_sdpa_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """The CPU SDPA kernel is missing from torch's FLOP registry; count it like the other SDPA kernels."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def vidstg_span_fraction() -> tuple[float, str]:
    """Mean fraction of its segment covered by the GT tube, per query (caption + questions), VidSTG val + test."""
    fractions: list[float] = []
    weights: list[int] = []
    files = [VIDSTG_DIR / f"{s}_annotations.json" for s in ("val", "test")]
    if not all(f.is_file() for f in files):
        return FALLBACK_SPAN_FRACTION, "docs/datasets.md ('about 40 %'; BRIDGE_STG_VIDSTG_DIR has no annotation files)"
    for f in files:
        for e in json.loads(f.read_text()):
            seg, gt = e["used_segment"], e["temporal_gt"]
            length = seg["end_fid"] + 1 - seg["begin_fid"]  # end_fid of the segment is inclusive
            inside = min(gt["end_fid"], seg["end_fid"] + 1) - max(gt["begin_fid"], seg["begin_fid"])
            fractions.append(inside / length)
            weights.append(len(e.get("captions", [])) + len(e.get("questions", [])))
    w = np.asarray(weights, dtype=float)
    p = float((np.asarray(fractions) * w).sum() / w.sum())
    return p, f"VidSTG val+test annotations ({int(w.sum())} queries, {len(fractions)} entries), per-query mean"




def span_mask(frame_mask: torch.Tensor, fraction: float) -> torch.Tensor:
    """Decoder mask of a centred span covering ``fraction`` of each sample's frames (as ``ground()`` builds it)."""
    B, Fmax = frame_mask.shape
    idx = torch.arange(Fmax)
    out = torch.zeros_like(frame_mask)
    for i in range(B):
        n = int(frame_mask[i].sum())
        length = min(max(1, round(fraction * n)), n)
        s = (n - length) // 2
        e = s + length - 1
        out[i] = (idx >= s) & (idx <= e) & frame_mask[i]
    return out


def decoder_tokens(enc: dict[str, Any], mask: torch.Tensor) -> tuple[int, int]:
    """(token reads, distinct tokens): visual memory tokens the decoded frames cross-attend to."""
    per_group = enc.memory_valid.sum(-1)  # (B, G)
    groups = enc.frame_group  # (F,)
    reads = distinct = 0
    for b in range(mask.shape[0]):
        frames = mask[b].nonzero().flatten()
        g = groups[frames]
        reads += int(per_group[b, g].sum())
        distinct += int(per_group[b, torch.unique(g)].sum())
    return reads, distinct


def count_flops(fn: Any) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def time_call(fn: Any, repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after one warm-up call."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def time_interleaved(fns: list[Any], repeats: int) -> list[list[float]]:
    """Wall-clock seconds of ``repeats`` rounds, each calling every fn once in turn, after one warm-up round.

    Interleaving makes a change in the machine's load (it is shared) hit every setting alike."""
    for fn in fns:
        fn()
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, times in zip(fns, out):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return out


def build_pair(frames: int, seed: int = 0) -> tuple[BridgeSTGForVideoGrounding, BridgeSTGForVideoGrounding, BridgeSTGProcessor]:
    """The demo-sized model with ``eta=True`` and the same weights with ``eta=False``."""
    eta_model, processor = build_demo_model(DemoModelArguments(max_frames=frames), seed=seed)
    # the recipe's method options with ETA off on top (the same parameters, so the weights load)
    overrides = {**DemoModelArguments().config_overrides, "eta": False}
    no_eta, _ = build_demo_model(DemoModelArguments(max_frames=frames, config_overrides=overrides), seed=seed)
    no_eta.load_state_dict(eta_model.state_dict())
    assert eta_model.config.eta is True and no_eta.config.eta is False
    return eta_model.eval(), no_eta.eval(), processor


def capture_encoding(model: BridgeSTGForVideoGrounding, tensors: dict[str, Any], tokenizer: Any) -> tuple[dict[str, Any], torch.Tensor]:
    """Run ``ground()`` once and return the (enc, decode_mask) it hands to ``_run_decoder``."""
    seen: dict[str, Any] = {}
    original = model._run_decoder

    def spy(enc: dict[str, Any], decode_mask: torch.Tensor) -> Any:
        seen["enc"], seen["mask"] = enc, decode_mask.clone()
        return original(enc, decode_mask)

    model._run_decoder = spy  # instance attribute; removed below
    try:
        model.ground(**tensors, tokenizer=tokenizer)
    finally:
        del model._run_decoder
    return seen["enc"], seen["mask"]


def qwen7b_computed(fraction: float, frames: int = 64, height: int = 360, width: int = 640) -> dict[str, Any]:
    """Qwen2.5-VL-7B-sized decoder inputs and FLOPs, computed from the default config (nothing is run)."""
    from transformers import Qwen2_5_VLConfig

    from bridge_stg.modeling_bridge_stg import BridgeSTGSlotMemory, BridgeSTGSpatialDecoder
    from bridge_stg.video_processing_bridge_stg import BridgeSTGVideoProcessor

    # only the vision sizes of the backbone matter here (patch 14, merge 2, temporal patch 2: as Qwen2.5-VL-7B)
    cfg = BridgeSTGConfig(mllm_config=Qwen2_5_VLConfig())
    vp = BridgeSTGVideoProcessor(
        patch_size=cfg.patch_size, merge_size=cfg.spatial_merge_size, temporal_patch_size=cfg.temporal_patch_size,
        min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels, max_video_tokens=cfg.max_video_tokens,
    )
    h, w = vp.target_size(height, width, frames)
    m = vp.tokens_per_group(h, w)
    groups = vp.num_groups(frames)
    span = min(max(1, round(fraction * frames)), frames)
    start = (frames - span) // 2
    distinct_groups = len({f // 2 for f in range(start, start + span)})
    K, d = cfg.num_bridge_queries, cfg.decoder_hidden_size

    def flops(S: int, groups_of_slots: int) -> int:
        """Decoder FLOPs for S selected frames whose memory comes from ``groups_of_slots`` temporal groups (the
        memory's linear maps run once per group: S groups = the per-frame computation before it was shared)."""
        with torch.device("meta"):
            dec = BridgeSTGSpatialDecoder(cfg).eval()
            slot_group = torch.arange(S) * groups_of_slots // S
            memory = BridgeSTGSlotMemory(torch.empty(1, groups_of_slots, m, d), torch.empty(1, groups_of_slots, m, d),
                                         torch.ones(1, S, m, dtype=torch.bool), slot_group[None])
            args = (torch.empty(1, S, K, d), torch.ones(1, S, dtype=torch.bool), memory, torch.empty(1, S, m, 2),
                    torch.empty(1, S, 2))
            with torch.inference_mode():
                return count_flops(lambda: dec(*args))

    f_all, f_eta = flops(frames, groups), flops(span, distinct_groups)
    f_all_per_frame, f_eta_per_frame = flops(frames, frames), flops(span, span)
    return {
        "label": "COMPUTED (not measured): default BridgeSTGConfig sizing, FlopCounterMode on meta tensors",
        "frame_size": [height, width], "resized": [h, w], "frames": frames, "tokens_per_frame": m,
        "tokens_per_frame_max": cfg.max_pixels // (cfg.patch_size * cfg.spatial_merge_size) ** 2,
        "mllm_visual_tokens": groups * m, "decoder": {"K": K, "d": d, "layers": cfg.decoder_layers, "ffn": cfg.decoder_ffn_dim},
        "eta_frames": span, "no_eta_frames": frames,
        "eta_token_reads": span * m, "no_eta_token_reads": frames * m,
        "eta_tokens_distinct": distinct_groups * m, "no_eta_tokens_distinct": groups * m,
        "eta_gflops": round(f_eta / 1e9, 3), "no_eta_gflops": round(f_all / 1e9, 3),
        "flops_ratio": round(f_all / f_eta, 2),
        # the memory's key / value and reference-key projections once per frame (before they were shared per group)
        "eta_gflops_per_frame_memory": round(f_eta_per_frame / 1e9, 3),
        "no_eta_gflops_per_frame_memory": round(f_all_per_frame / 1e9, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--frames", default="16,32,64")
    ap.add_argument("--repeats", type=int, default=50, help="timed decoder calls per setting (median reported)")
    ap.add_argument("--ground-repeats", type=int, default=10, help="timed ground() calls (median reported)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started, load_start = time.perf_counter(), list(os.getloadavg())
    frames_list = [16] if args.quick else [int(x) for x in args.frames.split(",")]
    repeats = 2 if args.quick else args.repeats
    ground_repeats = 2 if args.quick else args.ground_repeats
    fraction, source = vidstg_span_fraction()
    print(f"span fraction p = {fraction:.3f} ({source}); torch threads {args.threads}; load {load_start}", flush=True)
    results: dict[str, Any] = {}
    for F in frames_list:
        eta_model, no_eta, processor = build_pair(F)
        video = np.random.default_rng(F).integers(0, 255, (F, 112, 112, 3), dtype=np.uint8)
        inputs = processor(videos=video, text="the red square moves", video_fps=2.0, frame_ids=[list(range(F))])
        tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        tok = processor.tokenizer
        frame_mask = tensors["frame_mask"].bool()
        with torch.inference_mode():
            enc, ground_mask = capture_encoding(no_eta, tensors, tok)
            assert torch.equal(ground_mask, frame_mask), "eta=False must decode every sampled frame"
            mask_eta = span_mask(frame_mask, fraction)
            mask_all = frame_mask

            def dec_eta() -> Any:
                return eta_model._run_decoder(enc, mask_eta)

            def dec_all() -> Any:
                return no_eta._run_decoder(enc, mask_all)

            def ground_all() -> Any:
                return no_eta.ground(**tensors, tokenizer=tok)

            flops_eta, flops_all = count_flops(dec_eta), count_flops(dec_all)
            t_eta, t_all = time_interleaved([dec_eta, dec_all], repeats)
            t_ground = time_call(ground_all, ground_repeats)
        reads_eta, distinct_eta = decoder_tokens(enc, mask_eta)
        reads_all, distinct_all = decoder_tokens(enc, mask_all)
        grid = tensors["video_grid_thw"]
        merge = eta_model.config.spatial_merge_size
        mllm_tokens = int((grid.prod(-1) // merge**2).sum())
        me, ma, mg = statistics.median(t_eta), statistics.median(t_all), statistics.median(t_ground)
        results[str(F)] = {
            "frames": int(frame_mask.sum()), "eta_frames": int(mask_eta.sum()), "tokens_per_frame": int(enc.memory_valid[0, 0].sum()),
            "mllm_visual_tokens": mllm_tokens,
            "eta_token_reads": reads_eta, "no_eta_token_reads": reads_all,
            "eta_tokens_distinct": distinct_eta, "no_eta_tokens_distinct": distinct_all,
            "eta_mflops": round(flops_eta / 1e6, 3), "no_eta_mflops": round(flops_all / 1e6, 3),
            "flops_ratio": round(flops_all / flops_eta, 2),
            "eta_decoder_ms": round(me * 1e3, 3), "no_eta_decoder_ms": round(ma * 1e3, 3),
            "decoder_speedup": round(ma / me, 2),
            "eta_decoder_min_ms": round(min(t_eta) * 1e3, 3), "no_eta_decoder_min_ms": round(min(t_all) * 1e3, 3),
            "decoder_speedup_min": round(min(t_all) / min(t_eta), 2), "no_eta_ground_min_ms": round(min(t_ground) * 1e3, 2),
            "no_eta_ground_ms": round(mg * 1e3, 2), "decoder_share_of_ground_no_eta": round(ma / mg, 3),
            "eta_ground_ms_derived": round((mg - ma + me) * 1e3, 2),
            "eta_decoder_runs_ms": [round(x * 1e3, 3) for x in t_eta],
            "no_eta_decoder_runs_ms": [round(x * 1e3, 3) for x in t_all],
            "no_eta_ground_runs_ms": [round(x * 1e3, 2) for x in t_ground],
        }
        print(f"F={F}: decoder frames {int(mask_eta.sum())} (ETA) vs {int(frame_mask.sum())} | token reads {reads_eta} vs "
              f"{reads_all} | decoder {flops_eta / 1e6:.1f} vs {flops_all / 1e6:.1f} MFLOPs | decoder {me * 1e3:.2f} vs "
              f"{ma * 1e3:.2f} ms median ({ma / me:.2f}x; min {min(t_eta) * 1e3:.2f} vs {min(t_all) * 1e3:.2f} ms) | "
              f"ground() without ETA {mg * 1e3:.1f} ms, decoder share {ma / mg:.1%}",
              flush=True)
    q7 = qwen7b_computed(fraction)
    print(f"COMPUTED, Qwen2.5-VL-7B-sized, {q7['frames']} frames of {q7['frame_size'][1]}x{q7['frame_size'][0]}: "
          f"{q7['tokens_per_frame']} tokens/frame; decoder frames {q7['eta_frames']} vs {q7['no_eta_frames']}; token reads "
          f"{q7['eta_token_reads']} vs {q7['no_eta_token_reads']}; decoder {q7['eta_gflops']:.1f} vs {q7['no_eta_gflops']:.1f} "
          f"GFLOPs ({q7['flops_ratio']}x)", flush=True)
    print(json.dumps({
        **run_record("eta_tokens", args.quick, started, load_start),
        "torch": torch.__version__, "threads": args.threads, "repeats": repeats, "ground_repeats": ground_repeats,
        "span_fraction": round(fraction, 4), "span_fraction_source": source, "results": results,
        "qwen2_5_vl_7b_computed": q7,
    }))


if __name__ == "__main__":
    main()
