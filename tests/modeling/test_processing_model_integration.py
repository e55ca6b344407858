"""Processor output through the tiny Qwen2.5-VL / Qwen3-VL BridgeSTGForVideoGrounding, and back."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bridge_stg import BridgeSTGConfig
from bridge_stg.training.tiny import tiny_bridge_kwargs, tiny_mllm_config
from bridge_stg.processing_bridge_stg import BridgeSTGProcessor

from helpers_video import write_index_video



@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    return write_index_video(tmp_path_factory.mktemp("m") / "clip.mp4", 100, fps=25.0)


@pytest.mark.parametrize("backbone", ["qwen2_5_vl", "qwen3_vl"])
def test_processor_output_runs_through_qwen_vl(backbone, compact_tokenizer, clip):
    """The tensors feed the stock HF Qwen-VL model directly: video tokens match the features, the 3-D
    positions are built (mm_token_type_ids), and the LM loss on the answer is finite."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration

    torch.manual_seed(0)
    config = BridgeSTGConfig(mllm_config=tiny_mllm_config(backbone, compact_tokenizer), **tiny_bridge_kwargs())
    processor = BridgeSTGProcessor.from_model_config(config, compact_tokenizer)
    cls = Qwen2_5_VLForConditionalGeneration if backbone == "qwen2_5_vl" else Qwen3VLForConditionalGeneration
    mllm = cls(config.mllm_config).eval()
    frames = np.random.RandomState(0).randint(0, 256, size=(30, 48, 80, 3)).astype(np.uint8)
    batch = processor([clip, frames], ["the bright bar", "the noise"], video_fps=[None, 10.0], target_spans=[(20, 60), (5, 20)])
    keys = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw", "labels")
    with torch.no_grad():
        out = mllm(**{k: batch[k] for k in keys})
    assert torch.isfinite(out.logits).all() and math.isfinite(float(out.loss))
    # one grid row per temporal group: G_i rows and G_i <|vision_end|> tokens per sample
    groups = [len(m["frame_ids"]) // 2 for m in batch.video_metadata]
    assert batch["video_grid_thw"].shape[0] == sum(groups)
    ends = (batch["input_ids"] == config.mllm_config.vision_end_token_id).sum(1).tolist()
    assert ends == groups


@pytest.mark.parametrize("backbone", ["qwen2_5_vl", "qwen3_vl"])
def test_forward_and_ground(backbone, compact_tokenizer, clip):
    modeling = pytest.importorskip("bridge_stg.modeling_bridge_stg", reason="model file not written yet")
    torch.manual_seed(0)
    config = BridgeSTGConfig(
        mllm_config=tiny_mllm_config(backbone, compact_tokenizer),
        bridge_token_ids=BridgeSTGProcessor(tokenizer=compact_tokenizer, num_bridge_queries=4).bridge_token_ids,
        **tiny_bridge_kwargs(),
    )
    processor = BridgeSTGProcessor.from_model_config(config, compact_tokenizer)
    factor = 28 if backbone == "qwen2_5_vl" else 32
    assert processor.video_processor.factor == factor
    model = modeling.BridgeSTGForVideoGrounding(config).eval()

    frames = np.random.RandomState(0).randint(0, 256, size=(30, 48, 80, 3)).astype(np.uint8)
    train = processor(
        [clip, frames], ["the bright bar", "the noise"], video_fps=[None, 10.0], segments=[(0, 100), None],
        target_spans=[(20, 60), (5, 20)], target_boxes=[{20: [0, 0, 80, 32], 59: [80, 32, 160, 64]}, {5: [8, 8, 40, 40], 19: [20, 10, 60, 40]}],
    )
    video_tokens = int((train["input_ids"] == config.mllm_config.video_token_id).sum())
    assert video_tokens == int((train["video_grid_thw"].prod(-1) // 4).sum())
    model.train()
    out = model(**train)
    assert out.loss is not None and math.isfinite(out.loss.item())
    out.loss.backward()

    model.eval()
    inputs = processor([clip, frames], ["the bright bar", "the noise"], video_fps=[None, 10.0])
    with torch.no_grad():
        grounded = model.ground(**inputs, tokenizer=compact_tokenizer)
    results = processor.post_process_grounding(grounded, inputs, eval_frame_ids=[list(range(100)), list(range(30))])
    for res, meta in zip(results, inputs.video_metadata):
        start, end = res["span"]
        s0, s1 = meta["segment"]
        assert s0 <= start < end <= s1
        for fid, box in zip(res["frames"], res["boxes"]):
            assert start <= fid < end and fid in meta["frame_ids"]
            assert 0 <= box[0] <= box[2] <= meta["width"] and 0 <= box[1] <= box[3] <= meta["height"]
        assert res["eval_frame_ids"] == list(range(start, end))
        for box in res["eval_boxes"]:
            assert 0 <= box[0] <= box[2] <= meta["width"] and 0 <= box[1] <= box[3] <= meta["height"]


def test_frame_mode_forward_and_ground(compact_tokenizer):
    """span_source="frame": bridge tokens right after the prompt, labels all -100, span from frame logits."""
    modeling = pytest.importorskip("bridge_stg.modeling_bridge_stg", reason="model file not written yet")
    torch.manual_seed(0)
    config = BridgeSTGConfig(
        mllm_config=tiny_mllm_config("qwen3_vl", compact_tokenizer),
        bridge_token_ids=BridgeSTGProcessor(tokenizer=compact_tokenizer, num_bridge_queries=4).bridge_token_ids,
        **tiny_bridge_kwargs(span_source="frame"),
    )
    processor = BridgeSTGProcessor.from_model_config(config, compact_tokenizer)
    assert processor.span_source == "frame"
    model = modeling.BridgeSTGForVideoGrounding(config)
    frames = np.random.RandomState(1).randint(0, 256, size=(30, 48, 80, 3)).astype(np.uint8)
    train = processor([frames, frames[:12]], ["the noise", "a box"], video_fps=10.0, target_spans=[(5, 20), (2, 8)],
                      target_boxes=[{5: [0, 0, 10, 10]}, {2: [1, 1, 20, 20], 7: [5, 5, 30, 30]}])
    assert (train["labels"] == -100).all()
    out = model(**train)
    assert math.isfinite(out.loss.item())
    model.eval()
    inputs = processor(frames, "the noise", video_fps=10.0)
    with torch.no_grad():
        grounded = model.ground(**inputs)
    (res,) = processor.post_process_grounding(grounded, inputs)
    assert res["span_source"] in ("frame", "relevance_fallback")
    assert 0 <= res["span"][0] < res["span"][1] <= 30
