"""Tiny random Bridge-STG models, checkpoints and clips for the pipeline / CLI / hub tests (no training)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from bridge_stg import BridgeSTGConfig, BridgeSTGForVideoGrounding, BridgeSTGProcessor
from bridge_stg.processing.synthetic import SyntheticClip, SyntheticSpec, render_synthetic_clip, write_mp4
from bridge_stg.training.tiny import tiny_bridge_kwargs, tiny_mllm_config
from bridge_stg.processing.tokenizer import bridge_token_ids


def tiny_model_and_processor(tokenizer: Any, seed: int = 0, span_source: str = "frame") -> tuple[Any, Any]:
    """A randomly initialised tiny Qwen2.5-VL Bridge-STG and its processor (4 bridge tokens)."""
    torch.manual_seed(seed)
    config = BridgeSTGConfig(
        mllm_config=tiny_mllm_config("qwen2_5_vl", tokenizer), bridge_token_ids=bridge_token_ids(tokenizer, 4),
        span_source=span_source, **tiny_bridge_kwargs(),
    )
    model = BridgeSTGForVideoGrounding(config).eval()
    return model, BridgeSTGProcessor.from_model_config(config, tokenizer)


def synthetic_clip(path: str | os.PathLike | None = None, seed: int = 0, num_frames: int = 40) -> SyntheticClip:
    """A synthetic STVG clip (moving coloured shapes, 112x112, 10 fps); written as mp4 when ``path`` is given."""
    clip = render_synthetic_clip(np.random.default_rng(seed), SyntheticSpec(num_frames=num_frames))
    if path is not None:
        write_mp4(path, clip.frames, clip.fps)
    return clip


def check_result(res: dict[str, Any], num_frames: int, width: int, height: int, fps: float, query: str) -> None:
    """Assert the documented pipeline output structure, frames inside the video and boxes inside the image."""
    assert set(res) == {"query", "span", "tube", "span_source"}, sorted(res)
    assert res["query"] == query
    span = res["span"]
    assert set(span) == {"start_frame", "end_frame", "start_time", "end_time"}
    assert isinstance(span["start_frame"], int) and isinstance(span["end_frame"], int)
    assert 0 <= span["start_frame"] < span["end_frame"] <= num_frames, span
    assert abs(span["start_time"] - span["start_frame"] / fps) < 1e-6
    assert abs(span["end_time"] - span["end_frame"] / fps) < 1e-6
    assert res["span_source"] in ("text", "frame", "relevance_fallback")
    frames = [t["frame"] for t in res["tube"]]
    assert frames == sorted(set(frames)), frames
    for t in res["tube"]:
        assert set(t) == {"frame", "time", "score", "box"}
        assert span["start_frame"] <= t["frame"] < span["end_frame"]
        assert 0 <= t["frame"] < num_frames
        assert abs(t["time"] - t["frame"] / fps) < 1e-3, t
        assert 0.0 <= t["score"] <= 1.0
        b = t["box"]
        assert set(b) == {"xmin", "ymin", "xmax", "ymax"}
        assert 0.0 <= b["xmin"] <= b["xmax"] <= width, b
        assert 0.0 <= b["ymin"] <= b["ymax"] <= height, b
