"""GPU memory per device for Bridge-STG on Qwen2.5-VL-3B / -7B: full fine-tuning vs LoRA, DDP / FSDP / ZeRO-2 / ZeRO-3.

    python benchmarks/scaling_table.py [--quick] [--micro-batch 1] [--gpu-gib 80]

Nothing here runs on a GPU. Every figure is computed from counts:

* **Parameters** are exact: the published ``config.json`` values of Qwen/Qwen2.5-VL-3B-Instruct and
  -7B-Instruct (embedded below, no Hub access) build a ``Qwen2_5_VLConfig``; ``BridgeSTGForVideoGrounding``
  (backbone + bridge + QGSL decoder + heads, default ``BridgeSTGConfig`` decoder settings) is instantiated
  on the ``meta`` device and its tensors are counted. LoRA adapter sizes are ``r * (in + out)`` summed over
  the modules that ``bridge_stg.training.lora.LORA_TARGET_REGEX`` matches.
* **Sequence** of one clip: 64 frames (2 fps, ``max_frames``), resized by the package's own video processor
  under the default ``max_pixels`` / ``max_video_tokens``; text tokens are an estimate (see ``text_tokens``).
* **Model states** per GPU follow the byte-per-parameter table of each strategy (``STRATEGIES``).
* **Activations** are an approximation: the tensors autograd keeps per LLM layer and token, enumerated
  term by term in ``llm_activation_terms`` (flash/SDPA attention, no score matrix; bf16 autocast; HF
  Qwen2 RMSNorm upcasts to fp32). Not included: CUDA context, NCCL buffers, allocator fragmentation,
  DDP/ZeRO communication buckets; the fit test keeps 10 % of the card free for them.

``--quick``: the 7B model only. Last stdout line: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
import time
from typing import Any

import torch
from _common import run_record  # benchmarks/ is on sys.path when a script runs

GIB = 2**30

#: published config.json values (text and vision parts that fix the parameter count and the activations)
QWEN25_VL_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen2.5-VL-3B-Instruct": {
        "text": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                     num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
        "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                       patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                       fullatt_block_indexes=[7, 15, 23, 31]),
        "published_params": 3.75e9,
    },
    "Qwen2.5-VL-7B-Instruct": {
        "text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
        "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                       patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                       fullatt_block_indexes=[7, 15, 23, 31]),
        "published_params": 8.29e9,
    },
}

LORA_RANK = 64
LORA_DROPOUT = 0.05  # docs/method.md §3.10
NUM_FRAMES = 64
SAMPLE_FPS = 2.0
SOURCE_SIZES = {"square 448x448 (token budget reached)": (448, 448), "16:9 640x360 (typical VidSTG/VidOR)": (360, 640)}
MAIN_SOURCE = "square 448x448 (token budget reached)"
TEXT_TOKENS_PER_GROUP = 8  # "<3.0s>" timestamp (~5 tokens) + <|vision_start|> + <|vision_end|> + slack
TEXT_TOKENS_FIXED = 80  # chat template, query (~20 tokens), question, answer "From A s to B s." + <|im_end|>
HEADROOM = 0.9  # a configuration "fits" if the estimate stays below 90 % of the card

#: bytes per parameter held by every GPU (N = number of GPUs). "master" = fp32 master weights + AdamW m and v.
#: DDP / FSDP: torch AMP (bf16 autocast) on an fp32 model, as HF Trainer does with ``bf16=True``: the fp32
#: weights are the master copy, so trainable = 4 (w) + 4 (grad) + 8 (m, v); frozen weights stay fp32 (FSDP flat
#: parameters have one dtype). DeepSpeed bf16: module weights in bf16, fp32 master + m + v in the optimizer
#: (the ZeRO paper's 2 + 2 + 12), frozen weights in bf16.
STRATEGIES: dict[str, dict[str, Any]] = {
    "DDP": dict(w=4, g=4, opt=8, frozen=4, shard_w=False, shard_g=False, shard_opt=False, shard_frozen=False),
    "FSDP": dict(w=4, g=4, opt=8, frozen=4, shard_w=True, shard_g=True, shard_opt=True, shard_frozen=True),
    "ZeRO-2": dict(w=2, g=2, opt=12, frozen=2, shard_w=False, shard_g=True, shard_opt=True, shard_frozen=False),
    "ZeRO-3": dict(w=2, g=2, opt=12, frozen=2, shard_w=True, shard_g=True, shard_opt=True, shard_frozen=True),
}


# ----------------------------------------------------------------------------- parameters
def build_mllm_config(name: str):
    from transformers import Qwen2_5_VLConfig

    spec = QWEN25_VL_CONFIGS[name]
    text = dict(spec["text"], rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
    return Qwen2_5_VLConfig(text_config=text, vision_config=dict(spec["vision"]),
                            tie_word_embeddings=spec["text"]["tie_word_embeddings"])


def _n(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@functools.lru_cache(maxsize=None)
def count_parameters(name: str, lora_rank: int = LORA_RANK) -> dict[str, Any]:
    """Exact parameter counts of Bridge-STG with this backbone (model built on the meta device)."""
    from bridge_stg import BridgeSTGConfig, BridgeSTGForVideoGrounding
    from bridge_stg.training.lora import LORA_TARGET_REGEX

    config = BridgeSTGConfig(mllm_config=build_mllm_config(name))
    with torch.device("meta"):
        model = BridgeSTGForVideoGrounding(config)
    mllm = model.mllm
    lm = mllm.model.language_model
    tied = mllm.lm_head.weight is lm.embed_tokens.weight
    lora, lora_targets = 0, 0
    pattern = re.compile(LORA_TARGET_REGEX)
    for mod_name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and pattern.fullmatch(mod_name):
            lora += lora_rank * (mod.in_features + mod.out_features)
            lora_targets += 1
    layer = _n(lm.layers[0])
    counts = {
        "vision_encoder": _n(mllm.model.visual),  # ViT + merger (frozen by default: freeze_vision=True)
        "vision_merger": _n(mllm.model.visual.merger),
        "vision_block": _n(mllm.model.visual.blocks[0]),
        "llm_embed_tokens": lm.embed_tokens.weight.numel(),
        "llm_layers": sum(_n(x) for x in lm.layers),
        "llm_layer": layer,
        "llm_final_norm": _n(lm.norm),
        "lm_head_untied": 0 if tied else mllm.lm_head.weight.numel(),
        "tied_embeddings": bool(tied),
        "stsb": _n(model.stsb),
        "qgsl": _n(model.qgsl),
        "lora_rank": lora_rank,
        "lora_adapters": lora,
        "lora_target_modules": lora_targets,
        "total_model": _n(model),
    }
    counts["llm"] = _n(lm) + counts["lm_head_untied"]
    counts["mllm"] = _n(mllm)
    counts["stg_total"] = counts["stsb"] + counts["qgsl"]
    counts["published_mllm"] = QWEN25_VL_CONFIGS[name]["published_params"]
    counts["mllm_vs_published"] = counts["mllm"] / counts["published_mllm"] - 1.0
    counts["decoder_settings"] = dict(num_bridge_queries=config.num_bridge_queries, bridge_num_layers=config.bridge_num_layers,
                                      decoder_layers=config.decoder_layers, decoder_hidden_size=config.decoder_hidden_size,
                                      decoder_heads=config.decoder_heads, decoder_ffn_dim=config.decoder_ffn_dim,
                                      num_positive_frames=config.num_positive_frames,
                                      num_negative_frames=config.num_negative_frames)
    # FSDP auto-wrap (``_no_split_modules``): LLM layers and vision blocks are units, the rest is the root unit
    counts["fsdp_root_unit"] = counts["total_model"] - counts["llm_layers"] - _n(mllm.model.visual.blocks)
    counts["fsdp_root_trainable_full"] = counts["llm_embed_tokens"] + counts["lm_head_untied"] + counts["llm_final_norm"] + counts["stg_total"]
    return counts


def regime_split(p: dict[str, Any], tuning: str) -> tuple[int, int]:
    """(trainable, frozen) parameter counts. The vision encoder is frozen in both regimes (package default)."""
    if tuning == "full":
        trainable = p["llm"] + p["stg_total"]
        return trainable, p["vision_encoder"]
    trainable = p["lora_adapters"] + p["stg_total"]
    return trainable, p["vision_encoder"] + p["llm"]


# ----------------------------------------------------------------------------- sequence
def sequence(mllm_config) -> dict[str, Any]:
    """Visual and text tokens of one 64-frame clip, with the package's video processor and default budgets."""
    from bridge_stg import BridgeSTGConfig
    from bridge_stg.video_processing_bridge_stg import BridgeSTGVideoProcessor

    d = BridgeSTGConfig()
    vc = mllm_config.vision_config
    proc = BridgeSTGVideoProcessor(patch_size=vc.patch_size, merge_size=vc.spatial_merge_size,
                                   temporal_patch_size=vc.temporal_patch_size, min_pixels=d.min_pixels,
                                   max_pixels=d.max_pixels, max_video_tokens=d.max_video_tokens)
    frames = min(NUM_FRAMES, d.max_frames)
    groups = proc.num_groups(frames)
    out: dict[str, Any] = {"frames": frames, "sample_fps": d.sample_fps, "clip_seconds": frames / d.sample_fps,
                           "groups": groups, "max_pixels": d.max_pixels, "max_video_tokens": d.max_video_tokens,
                           "sources": {}}
    for label, (h, w) in SOURCE_SIZES.items():
        rh, rw = proc.target_size(h, w, frames)
        per_group = proc.tokens_per_group(rh, rw)
        video = per_group * groups
        text = groups * TEXT_TOKENS_PER_GROUP + TEXT_TOKENS_FIXED + d.num_bridge_queries
        out["sources"][label] = {
            "source_hw": [h, w], "resized_hw": [rh, rw], "tokens_per_group": per_group, "video_tokens": video,
            "text_tokens": text, "seq_len": video + text,
            "vit_patches": groups * (rh // vc.patch_size) * (rw // vc.patch_size),
        }
    out["main"] = MAIN_SOURCE
    return out


# ----------------------------------------------------------------------------- activations
def llm_activation_terms(h: int, h_kv: int, heads: int, ffn: int, r: int, mode: str) -> dict[str, int]:
    """Bytes autograd keeps per LLM decoder layer and token (approximation, bf16 autocast, flash/SDPA attention).

    ``mode``: "full" (trainable base weights), "lora" (frozen base + LoRA with dropout: every adapter keeps its own
    dropout output and mask, the frozen base Linear keeps nothing), "lora_nodropout".
    """
    t = {
        "rmsnorm_fp32_inputs (2 norms x 4h)": 2 * 4 * h,
        "attention q,k,v,out + logsumexp (2(2h+2h_kv) + 4 heads)": 2 * (2 * h + 2 * h_kv) + 4 * heads,
        "mlp gate, up, silu(gate) (3 x 2ffn)": 3 * 2 * ffn,
    }
    if mode == "full":
        t["norm outputs = q/k/v and gate/up inputs (2 x 2h)"] = 2 * 2 * h
        t["down_proj input (2ffn)"] = 2 * ffn
    elif mode == "lora":
        t["LoRA dropout out + mask, q/k/v/o/gate/up (6 x 3h)"] = 6 * 3 * h
        t["LoRA dropout out + mask, down (3ffn)"] = 3 * ffn
        t["LoRA A outputs (7 x 2r)"] = 7 * 2 * r
    elif mode == "lora_nodropout":
        t["LoRA A inputs = norm outputs (2 x 2h)"] = 2 * 2 * h
        t["LoRA A input, down (2ffn)"] = 2 * ffn
        t["LoRA A outputs (7 x 2r)"] = 7 * 2 * r
    else:
        raise ValueError(mode)
    return t


def activations(p: dict[str, Any], mllm_config, seq: dict[str, Any], tuning: str, ckpt: bool, micro_batch: int) -> dict[str, float]:
    """Activation bytes of one training step (micro-batch of ``micro_batch`` clips), by part."""
    tc, vc = mllm_config.get_text_config(), mllm_config.vision_config
    h, ffn, L = tc.hidden_size, tc.intermediate_size, tc.num_hidden_layers
    heads, kv = tc.num_attention_heads, tc.num_key_value_heads
    h_kv = kv * (h // heads)
    src = seq["sources"][seq["main"]]
    T, Tv, patches = src["seq_len"], src["video_tokens"], src["vit_patches"]
    mode = "full" if tuning == "full" else "lora"
    per_layer_tok = sum(llm_activation_terms(h, h_kv, heads, ffn, LORA_RANK, mode).values())
    if ckpt:
        # HF gradient checkpointing per decoder layer: the layer input (bf16) is kept, one layer is live in backward
        llm = L * 2 * h * T + per_layer_tok * T
    else:
        llm = L * per_layer_tok * T
    stream = 2 * 2 * h * T  # embedding output and final-norm output
    # gradients alive inside one layer's backward (dX of the MLP and of the residual stream)
    backward_work = (3 * ffn + 4 * h) * 2 * T
    # STG modules: memory projection of every visual token + 6 decoder layers on the sampled frames (fp32 upper bound)
    ds = p["decoder_settings"]
    d, dffn, K = ds["decoder_hidden_size"], ds["decoder_ffn_dim"], ds["num_bridge_queries"]
    S, M = ds["num_positive_frames"] + ds["num_negative_frames"], src["tokens_per_group"]
    stg = Tv * (2 * tc.hidden_size + 4 * 2 * d) + ds["decoder_layers"] * S * (K * (10 * d + 2 * dffn) + M * 6 * d) * 4
    # frozen vision encoder: no graph is kept; peak is one block's working set plus the fp32 pixel input
    vit_in = patches * 3 * vc.temporal_patch_size * vc.patch_size**2 * 4
    vit_transient = patches * (5 * vc.hidden_size + 3 * vc.intermediate_size) * 2
    mb = micro_batch
    return {
        "llm_bytes_per_layer_token": per_layer_tok,
        "llm": mb * llm, "stream": mb * stream, "stg": mb * stg, "inputs": mb * vit_in,
        "backward_work": mb * backward_work, "vit_transient": mb * vit_transient,
        "kept": mb * (llm + stream + stg + vit_in),
    }


# ----------------------------------------------------------------------------- per-GPU memory
def model_states(p: dict[str, Any], strategy: str, tuning: str, n_gpus: int) -> dict[str, float]:
    s = STRATEGIES[strategy]
    trainable, frozen = regime_split(p, tuning)
    div = lambda sharded: n_gpus if sharded else 1  # noqa: E731
    return {
        "weights": trainable * s["w"] / div(s["shard_w"]),
        "grads": trainable * s["g"] / div(s["shard_g"]),
        "optimizer": trainable * s["opt"] / div(s["shard_opt"]),
        "frozen": frozen * s["frozen"] / div(s["shard_frozen"]),
    }


def gather_transient(p: dict[str, Any], strategy: str, tuning: str, n_gpus: int) -> float:
    """Unsharded bf16 weights (and grads of trainable ones) that a fully sharded strategy materialises."""
    if not STRATEGIES[strategy]["shard_w"] or n_gpus == 1:
        return 0.0
    layer_grad = p["llm_layer"] if tuning == "full" else 0
    if strategy == "FSDP":
        # root unit (embeddings, lm_head, merger, STG modules...) stays gathered through forward and backward,
        # plus the current and the prefetched layer
        root_grad = p["fsdp_root_trainable_full"] if tuning == "full" else p["stg_total"]
        return 2 * p["fsdp_root_unit"] + 2 * root_grad + 2 * 2 * p["llm_layer"] + 2 * layer_grad
    # ZeRO-3: the largest single module (embedding / lm_head) plus the current and the prefetched layer
    big = max(p["llm_embed_tokens"], p["lm_head_untied"])
    big_grad = big if tuning == "full" else 0
    return 2 * big + 2 * big_grad + 2 * 2 * p["llm_layer"] + 2 * layer_grad


def per_gpu(p, mllm_config, seq, strategy, tuning, ckpt, n_gpus, micro_batch) -> dict[str, float]:
    st = model_states(p, strategy, tuning, n_gpus)
    act = activations(p, mllm_config, seq, tuning, ckpt, micro_batch)
    gather = gather_transient(p, strategy, tuning, n_gpus)
    states = sum(st.values())
    peak_act = max(act["kept"] + act["backward_work"], act["vit_transient"] + act["inputs"])
    total = states + gather + peak_act
    return {"states_gib": states / GIB, **{f"{k}_gib": v / GIB for k, v in st.items()}, "gather_gib": gather / GIB,
            "activations_gib": peak_act / GIB, "total_gib": total / GIB}


def max_micro_batch(p, mllm_config, seq, strategy, tuning, ckpt, n_gpus, budget_gib) -> int:
    mb = 0
    while mb < 64 and per_gpu(p, mllm_config, seq, strategy, tuning, ckpt, n_gpus, mb + 1)["total_gib"] <= budget_gib:
        mb += 1
    return mb


# ----------------------------------------------------------------------------- report
GLOBAL_BATCH = 32  # clips per optimiser step (docs/method.md §3.10)
RECIPE_ROWS = (  # (gpus, tuning, strategy): the candidates compared for the VidSTG recipe, all with grad ckpt
    (8, "lora", "ZeRO-2"), (8, "lora", "FSDP"), (8, "lora", "ZeRO-3"), (8, "full", "ZeRO-3"), (8, "full", "FSDP"),
    (8, "full", "ZeRO-2"), (1, "lora", "ZeRO-2"),
)


def recipe_block(out, names, gpu_gib: float, budget: float) -> dict[str, Any]:
    """Per-GPU memory of the recipe candidates for the 7B backbone at the global batch of docs/method.md §3.10."""
    name = "Qwen2.5-VL-7B-Instruct"
    cfg = build_mllm_config(name)
    p, seq = count_parameters(name), sequence(cfg)
    rows = {}
    out(f"### Recipe candidates: {name}, grad checkpointing, global batch {GLOBAL_BATCH} clips\n")
    out("| GPUs | tuning | strategy | micro-batch x accumulation | model states | gathered | activations | GiB per GPU | fits |")
    out("|---:|---|---|---|---:|---:|---:|---:|---|")
    for n, tuning, strat in RECIPE_ROWS:
        mb_max = max_micro_batch(p, cfg, seq, strat, tuning, True, n, budget)
        mb = max(d for d in (1, 2, 4, 8, 16, 32) if GLOBAL_BATCH % (d * n) == 0 and d <= max(mb_max, 1))
        accum = GLOBAL_BATCH // (mb * n)
        m = per_gpu(p, cfg, seq, strat, tuning, True, n, mb)
        rows[f"{n}gpu/{tuning}/ckpt/{strat}"] = {"micro_batch": mb, "accumulation": accum, **m}
        out(f"| {n} | {tuning} | {strat} | {mb} x {accum} | {m['states_gib']:.1f} | {m['gather_gib']:.1f} | "
            f"{m['activations_gib']:.1f} | {m['total_gib']:.1f} | "
            f"{'yes' if m['total_gib'] <= budget else 'no'} (<= {budget:.0f} of {gpu_gib:.0f}) |")
    out("")
    return rows


# ----------------------------------------------------------------------------- GRPO (reinforcement fine-tuning)
#: the GRPO recipe (recipes/qwen2_5_vl_7b_vidstg_grpo_lora.yaml): completions per prompt, completions per forward /
#: backward (per_device_train_batch_size), completions generated at once per GPU (x steps_per_generation), completion
#: tokens, completions per forward of the tube reward
GRPO = {"num_generations": 8, "micro_batch": 2, "generation_batch": 8, "completion_tokens": 32, "tube_batch": 4}
GRPO_STRATEGIES = ("DDP", "ZeRO-2")  # --method grpo refuses FSDP and ZeRO-3


def grpo_per_gpu(p, mllm_config, seq, strategy, tuning, n_gpus, grpo=GRPO) -> dict[str, float]:
    """GiB per GPU of one GRPO step (gradient checkpointing on), by part.

    * model states: the policy trains the LLM (full) or its LoRA adapters; the bridge and the decoder serve the tube
      reward only and are frozen, as is the vision encoder;
    * reference model: full fine-tuning keeps a frozen copy of the MLLM (fp32 under DDP's AMP model, bf16 under
      DeepSpeed); with LoRA the reference is the same weights with the adapters disabled (nothing extra);
    * training activations: ``micro_batch`` sequences of prompt + completion (each completion carries its clip);
    * generation: the KV cache of ``generation_batch`` sequences, plus one layer's prefill working set (residual in /
      out, MLP gate / up / activation) over their prompts, and the vision encoder once per distinct clip;
    * tube reward (no gradient): ``tube_batch`` sequences with every layer's hidden states kept (the bridge reads the
      last layers) plus one layer's working set.
    The three phases follow one another: the peak is states + reference + the largest of them."""
    tc = mllm_config.get_text_config()
    h, ffn, L = tc.hidden_size, tc.intermediate_size, tc.num_hidden_layers
    h_kv = tc.num_key_value_heads * (h // tc.num_attention_heads)
    st = STRATEGIES[strategy]
    div = lambda sharded: n_gpus if sharded else 1  # noqa: E731
    trainable = p["llm"] if tuning == "full" else p["lora_adapters"]
    frozen = p["vision_encoder"] + p["stg_total"] + (p["llm"] if tuning == "lora" else 0)
    states = (trainable * (st["w"] / div(st["shard_w"]) + st["g"] / div(st["shard_g"]) + st["opt"] / div(st["shard_opt"]))
              + frozen * st["frozen"])
    reference = p["mllm"] * (2 if strategy.startswith("ZeRO") else 4) if tuning == "full" else 0
    src = seq["sources"][seq["main"]]
    T, C = src["seq_len"], grpo["completion_tokens"]
    long_seq = {**seq, "sources": {**seq["sources"], seq["main"]: {**src, "seq_len": T + C}}}
    act = activations(p, mllm_config, long_seq, tuning, True, grpo["micro_batch"])
    train = act["kept"] + act["backward_work"]
    layer_work = (2 * 2 * h + 3 * 2 * ffn)  # bytes per token of one layer's prefill working set
    kv = grpo["generation_batch"] * (T + C) * L * 2 * h_kv * 2
    clips = max(1, grpo["generation_batch"] // grpo["num_generations"])
    vit = clips * (act["vit_transient"] + act["inputs"]) / grpo["micro_batch"]
    generation = kv + max(grpo["generation_batch"] * T * layer_work, vit)
    tube = grpo["tube_batch"] * (T + C) * ((L + 1) * 2 * h + layer_work)
    peak = states + reference + max(train, generation, tube)
    return {"states_gib": states / GIB, "reference_gib": reference / GIB, "train_activations_gib": train / GIB,
            "generation_gib": generation / GIB, "kv_cache_gib": kv / GIB, "tube_reward_gib": tube / GIB,
            "total_gib": peak / GIB}


def grpo_block(out, gpu_gib: float, budget: float) -> dict[str, Any]:
    """GRPO per GPU for both backbones: LoRA and full, 1 and 8 GPUs, DDP and ZeRO-2."""
    g = GRPO
    out(f"### GRPO (bridge-stg train --method grpo): {g['num_generations']} completions per prompt, {g['micro_batch']} per "
        f"forward / backward, {g['generation_batch']} generated at once, {g['completion_tokens']} completion tokens, "
        f"tube reward {g['tube_batch']} at once, grad checkpointing\n")
    out("| backbone | GPUs | tuning | strategy | model states | reference | train activations | generation (KV cache) "
        "| tube reward | GiB per GPU | fits |")
    out("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|")
    rows: dict[str, Any] = {}
    for name in QWEN25_VL_CONFIGS:
        cfg = build_mllm_config(name)
        p, seq = count_parameters(name), sequence(cfg)
        for n in (1, 8):
            for tuning in ("lora", "full"):
                for strat in GRPO_STRATEGIES:
                    m = grpo_per_gpu(p, cfg, seq, strat, tuning, n)
                    rows[f"{name}/{n}gpu/{tuning}/{strat}"] = m
                    out(f"| {name.split('-Instruct')[0]} | {n} | {tuning} | {strat} | {m['states_gib']:.1f} | "
                        f"{m['reference_gib']:.1f} | {m['train_activations_gib']:.1f} | {m['generation_gib']:.1f} "
                        f"({m['kv_cache_gib']:.1f}) | {m['tube_reward_gib']:.1f} | {m['total_gib']:.1f} | "
                        f"{'yes' if m['total_gib'] <= budget else 'no'} (<= {budget:.0f} of {gpu_gib:.0f}) |")
    out("")
    return {"settings": dict(g), "strategies": list(GRPO_STRATEGIES), "memory": rows}


def _fmt(x: float) -> str:
    return f"{x:,.0f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the 7B model only")
    ap.add_argument("--micro-batch", type=int, default=1, help="clips per GPU per forward")
    ap.add_argument("--gpu-gib", type=float, default=80.0, help="memory of one GPU for the fit test")
    args = ap.parse_args(argv)
    started, load_start = time.perf_counter(), list(os.getloadavg())
    names = ["Qwen2.5-VL-7B-Instruct"] if args.quick else list(QWEN25_VL_CONFIGS)
    budget = HEADROOM * args.gpu_gib
    result: dict[str, Any] = {
        **run_record("scaling_table", args.quick, started, load_start, argv),
        "micro_batch": args.micro_batch, "gpu_gib": args.gpu_gib,
        "fit_budget_gib": budget, "lora_rank": LORA_RANK, "lora_dropout": LORA_DROPOUT,
        "strategies": STRATEGIES, "models": {},
        "torch": torch.__version__,
    }
    import transformers

    result["transformers"] = transformers.__version__
    lines: list[str] = []
    out = lines.append
    for name in names:
        cfg = build_mllm_config(name)
        p = count_parameters(name)
        seq = sequence(cfg)
        tc = cfg.get_text_config()
        h, ffn, heads = tc.hidden_size, tc.intermediate_size, tc.num_attention_heads
        h_kv = tc.num_key_value_heads * (h // heads)
        terms = {m: llm_activation_terms(h, h_kv, heads, ffn, LORA_RANK, m) for m in ("full", "lora", "lora_nodropout")}
        entry: dict[str, Any] = {"params": p, "sequence": seq, "activation_terms_bytes_per_layer_token": terms,
                                 "activations": {}, "memory": {}, "max_micro_batch": {}}
        out(f"### {name} as the Bridge-STG backbone\n")
        out("| parameters | count |")
        out("|---|---:|")
        for key, label in (("vision_encoder", "vision encoder + merger (frozen)"), ("llm_embed_tokens", "LLM input embeddings"),
                           ("llm_layers", f"LLM decoder layers ({tc.num_hidden_layers} x {_fmt(p['llm_layer'])})"),
                           ("lm_head_untied", "LM head (0 = tied to the embeddings)"), ("mllm", "**Qwen2.5-VL total**"),
                           ("stsb", "STSB bridge (K bridge embeddings, layer fusion, projections, temporal heads)"),
                           ("qgsl", "QGSL decoder (visual memory, 6 layers of d 256, box and presence heads)"),
                           ("total_model", "**Bridge-STG total**"),
                           ("lora_adapters", f"LoRA r={LORA_RANK} on q/k/v/o/gate/up/down ({p['lora_target_modules']} modules)")):
            out(f"| {label} | {_fmt(p[key])} |")
        out(f"\nQwen2.5-VL total vs published {p['published_mllm'] / 1e9:.2f}B: {100 * p['mllm_vs_published']:+.2f} %. "
            f"Trainable: full FT {_fmt(regime_split(p, 'full')[0])}, LoRA {_fmt(regime_split(p, 'lora')[0])}.\n")
        out("| clip (64 frames, 2 fps) | resized frame | tokens / group | video tokens | text tokens (est.) | sequence | ViT patches |")
        out("|---|---|---:|---:|---:|---:|---:|")
        for label, s in seq["sources"].items():
            mark = " (used below)" if label == seq["main"] else ""
            out(f"| {label}{mark} | {s['resized_hw'][0]}x{s['resized_hw'][1]} | {s['tokens_per_group']} | {s['video_tokens']} | "
                f"{s['text_tokens']} | {s['seq_len']} | {s['vit_patches']} |")
        T = seq["sources"][seq["main"]]["seq_len"]
        out("\n| activation bytes per LLM layer per token | full FT | LoRA (dropout 0.05) | LoRA (dropout 0) |")
        out("|---|---:|---:|---:|")
        out(f"| without checkpointing | {_fmt(sum(terms['full'].values()))} | {_fmt(sum(terms['lora'].values()))} | "
            f"{_fmt(sum(terms['lora_nodropout'].values()))} |")
        out(f"| with checkpointing (layer input, bf16) | {_fmt(2 * h)} | {_fmt(2 * h)} | {_fmt(2 * h)} |")
        out(f"\n| activations of one clip ({T} tokens), GiB | no ckpt | ckpt |")
        out("|---|---:|---:|")
        for tuning in ("full", "lora"):
            row = []
            for ckpt in (False, True):
                a = activations(p, cfg, seq, tuning, ckpt, args.micro_batch)
                entry["activations"][f"{tuning}/{'ckpt' if ckpt else 'no_ckpt'}"] = {k: v / GIB if k != "llm_bytes_per_layer_token" else v for k, v in a.items()}
                row.append(f"{(a['kept'] + a['backward_work']) / GIB:.1f}")
            out(f"| {tuning} | {row[0]} | {row[1]} |")
        for n in (8, 1):
            out(f"\n**{n} GPU{'s' if n > 1 else ''}**, micro-batch {args.micro_batch}: GiB per GPU "
                f"(model states + gathered weights + activations; fits {args.gpu_gib:.0f} GB if <= {budget:.0f})\n")
            out("| tuning | grad ckpt | " + " | ".join(STRATEGIES) + " |")
            out("|---|---|" + "---:|" * len(STRATEGIES))
            for tuning in ("full", "lora"):
                for ckpt in (False, True):
                    cells = []
                    for strat in STRATEGIES:
                        m = per_gpu(p, cfg, seq, strat, tuning, ckpt, n, args.micro_batch)
                        key = f"{n}gpu/{tuning}/{'ckpt' if ckpt else 'no_ckpt'}/{strat}"
                        entry["memory"][key] = m
                        entry["max_micro_batch"][key] = max_micro_batch(p, cfg, seq, strat, tuning, ckpt, n, budget)
                        flag = "" if m["total_gib"] <= budget else " ✗"
                        cells.append(f"{m['total_gib']:.1f}{flag}")
                    out(f"| {'full FT' if tuning == 'full' else f'LoRA r{LORA_RANK}'} | {'yes' if ckpt else 'no'} | " + " | ".join(cells) + " |")
        out("\n✗ = above the fit budget. Breakdown of the 8-GPU, grad-checkpointing rows (GiB per GPU):\n")
        out("| tuning | strategy | weights | grads | optimizer | frozen | gathered | activations | total | max micro-batch |")
        out("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for tuning in ("full", "lora"):
            for strat in STRATEGIES:
                key = f"8gpu/{tuning}/ckpt/{strat}"
                m = entry["memory"][key]
                out(f"| {tuning} | {strat} | {m['weights_gib']:.1f} | {m['grads_gib']:.1f} | {m['optimizer_gib']:.1f} | "
                    f"{m['frozen_gib']:.1f} | {m['gather_gib']:.1f} | {m['activations_gib']:.1f} | {m['total_gib']:.1f} | "
                    f"{entry['max_micro_batch'][key]} |")
        out("")
        result["models"][name] = entry
    if "Qwen2.5-VL-7B-Instruct" in result["models"]:
        result["recipe"] = recipe_block(out, names, args.gpu_gib, budget)
    if not args.quick:
        result["grpo"] = grpo_block(out, args.gpu_gib, budget)
    print("\n".join(lines))
    print(json.dumps(result, default=float))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
