"""Tiny randomly initialised Qwen-VL backbones for tests and the demo.

They run through exactly the code paths of the real 3B/7B checkpoints (same classes, same processor
layout); only the sizes differ. The special-token ids are taken from the tokenizer the model will be
used with, so the real Qwen tokenizer and the compact demo tokenizer both work.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig, Qwen2_5_VLConfig, Qwen3VLConfig

BACKBONES = ("qwen2_5_vl", "qwen3_vl")


def special_token_ids(tokenizer: Any) -> dict[str, int]:
    """Ids of the Qwen-VL special tokens the model config must agree on."""
    names = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
        "eos_token_id": "<|im_end|>",
        "pad_token_id": "<|endoftext|>",
    }
    ids = {}
    for key, token in names.items():
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no special token {token!r} (needed for {key})")
        ids[key] = int(tid)
    return ids


def tiny_mllm_config(
    backbone: str = "qwen2_5_vl",
    tokenizer: Any | None = None,
    vocab_size: int | None = None,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    vision_depth: int = 2,
    vision_hidden_size: int = 32,
    max_position_embeddings: int = 4096,
) -> PreTrainedConfig:
    """A tiny Qwen2.5-VL or Qwen3-VL config (see docs/hf_notes.md §2), sized for CPU tests.

    Args:
        backbone: ``"qwen2_5_vl"`` or ``"qwen3_vl"``.
        tokenizer: the tokenizer (with Qwen special tokens) whose ids the config must use. Its length
            sets ``vocab_size`` unless ``vocab_size`` is given.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone: must be one of {BACKBONES}, got {backbone!r}")
    if tokenizer is not None:
        ids = special_token_ids(tokenizer)
        vocab = int(vocab_size or len(tokenizer))
    else:
        vocab = int(vocab_size or 512)
        ids = dict(
            image_token_id=vocab - 6, video_token_id=vocab - 5, vision_start_token_id=vocab - 4,
            vision_end_token_id=vocab - 3, eos_token_id=vocab - 2, pad_token_id=vocab - 1,
        )
    head_dim = hidden_size // num_attention_heads
    half = head_dim // 2
    # mrope sections (t, h, w) must sum to head_dim / 2
    mrope = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    text = dict(
        vocab_size=vocab,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=ids["pad_token_id"],
        eos_token_id=ids["eos_token_id"],
        pad_token_id=ids["pad_token_id"],
    )
    common = dict(
        image_token_id=ids["image_token_id"],
        video_token_id=ids["video_token_id"],
        vision_start_token_id=ids["vision_start_token_id"],
        vision_end_token_id=ids["vision_end_token_id"],
    )
    if backbone == "qwen2_5_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e4, "mrope_section": mrope}
        vision = dict(
            depth=vision_depth, hidden_size=vision_hidden_size, intermediate_size=2 * vision_hidden_size,
            num_heads=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
            out_hidden_size=hidden_size, window_size=56, fullatt_block_indexes=[vision_depth - 1],
            tokens_per_second=2,
        )
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
    else:
        text["head_dim"] = head_dim
        text["rope_parameters"] = {
            "rope_type": "default", "rope_theta": 1e4, "mrope_section": mrope, "mrope_interleaved": True,
        }
        vision = dict(
            depth=vision_depth, hidden_size=vision_hidden_size, intermediate_size=2 * vision_hidden_size,
            num_heads=2, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
            out_hidden_size=hidden_size, num_position_embeddings=64, deepstack_visual_indexes=[0],
        )
        config = Qwen3VLConfig(text_config=text, vision_config=vision, **common)
    config.eos_token_id = ids["eos_token_id"]
    config.pad_token_id = ids["pad_token_id"]
    return config


def tiny_bridge_kwargs(**overrides: Any) -> dict[str, Any]:
    """The "tiny test" column of docs/method.md §3.14 as BridgeSTGConfig keyword arguments."""
    kwargs: dict[str, Any] = dict(
        num_bridge_queries=4,
        bridge_num_layers=2,
        decoder_layers=2,
        decoder_hidden_size=64,
        decoder_heads=4,
        decoder_ffn_dim=128,
        decoder_dropout=0.0,
        sample_fps=2.0,
        max_frames=8,
        min_frames=4,
        max_pixels=4 * 28 * 28,
        min_pixels=4 * 28 * 28,
        max_video_tokens=256,
        num_positive_frames=4,
        num_negative_frames=2,
    )
    kwargs.update(overrides)
    return kwargs
