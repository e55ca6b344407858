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
    assert set(res) == {"query", "span", "span_seconds", "tube", "span_source"}, sorted(res)
    assert res["query"] == query
    (start, end), (start_s, end_s) = res["span"], res["span_seconds"]
    assert isinstance(start, int) and isinstance(end, int)
    assert 0 <= start < end <= num_frames, res["span"]
    assert abs(start_s - start / fps) < 1e-6
    assert abs(end_s - end / fps) < 1e-6
    assert res["span_source"] in ("text", "frame", "relevance_fallback")
    frames = [t["frame"] for t in res["tube"]]
    assert frames == sorted(set(frames)), frames
    for t in res["tube"]:
        assert set(t) == {"frame", "time", "score", "box"}
        assert start <= t["frame"] < end
        assert 0 <= t["frame"] < num_frames
        assert abs(t["time"] - t["frame"] / fps) < 1e-3, t
        assert 0.0 <= t["score"] <= 1.0
        b = t["box"]
        assert set(b) == {"xmin", "ymin", "xmax", "ymax"}
        assert 0.0 <= b["xmin"] <= b["xmax"] <= width, b
        assert 0.0 <= b["ymin"] <= b["ymax"] <= height, b


_BLOCKED_PIPELINE_SCRIPT = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "bridge_stg" or name.startswith("bridge_stg."):
            raise ImportError("bridge_stg is blocked in this test")
sys.meta_path.insert(0, Block())
try:
    import bridge_stg
    raise SystemExit("bridge_stg should not be importable")
except ImportError:
    pass
from transformers import pipeline
folder, video, queries = json.loads(sys.argv[1])
pipe = pipeline("video-grounding", model=folder, trust_remote_code=True, device="cpu")
out = pipe(video, text=queries)
assert not any(m == "bridge_stg" or m.startswith("bridge_stg.") for m in sys.modules)
print("RESULT" + json.dumps({"cls": type(pipe).__module__, "out": out}))
"""


def pipeline_without_the_package(folder: str | os.PathLike, video: str, queries: list[str], workdir: str | os.PathLike) -> dict[str, Any]:
    """Load ``folder`` with ``pipeline("video-grounding", trust_remote_code=True)`` in a fresh process in which
    ``bridge_stg`` cannot be imported, ground ``queries`` in ``video`` and return ``{"cls", "out"}`` (the
    pipeline class's module and its output)."""
    import json
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": os.path.join(str(workdir), "hf_modules")}
    res = subprocess.run([sys.executable, "-c", _BLOCKED_PIPELINE_SCRIPT, json.dumps([str(folder), str(video), list(queries)])],
                         capture_output=True, text=True, env=env, cwd=str(workdir), timeout=300, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(x for x in res.stdout.splitlines() if x.startswith("RESULT"))
    payload = json.loads(line[len("RESULT"):])
    assert payload["cls"].startswith("transformers_modules."), payload["cls"]
    return payload
