"""Video processor (resize / patchify layout), processor (prompt, tensors, targets), post-processing,
save / load (installed and remote code), bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from bridge_stg import BridgeSTGConfig, InvalidQueryError, VideoDecodeError
from bridge_stg.processing_bridge_stg import BridgeSTGProcessor
from bridge_stg.video_io_bridge_stg import read_video
from bridge_stg.video_processing_bridge_stg import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    BridgeSTGVideoProcessor,
    smart_resize,
)

from helpers_video import index_frame, write_index_video

TINY_VP = dict(min_pixels=4 * 28 * 28, max_pixels=4 * 28 * 28, max_video_tokens=256)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    return write_index_video(tmp_path_factory.mktemp("p") / "clip.mp4", 100, fps=25.0)


@pytest.fixture()
def processor(compact_tokenizer) -> BridgeSTGProcessor:
    return BridgeSTGProcessor(BridgeSTGVideoProcessor(**TINY_VP), compact_tokenizer, num_bridge_queries=4, max_frames=8)


# ------------------------------------------------------------------------------------------ video processor
def test_smart_resize_hand_values():
    # 1280x720 under 256*28^2: beta = sqrt(921600/200704); floor(720/beta/28)=12, floor(1280/beta/28)=21
    assert smart_resize(720, 1280, 28, 16 * 784, 256 * 784) == (336, 588)
    assert smart_resize(272, 640, 28, 16 * 784, 256 * 784) == (280, 644)  # rounding only
    assert smart_resize(144, 176, 28, 16 * 784, 256 * 784) == (140, 168)
    assert smart_resize(720, 1280, 32, 16 * 1024, 256 * 1024) == (384, 672)  # Qwen3-VL grid
    assert smart_resize(20, 20, 28, 16 * 784, 256 * 784) == (112, 112)  # up to min_pixels


def test_patchify_layout_matches_qwen_formula():
    """Element [row, col] of pixel_values_videos equals the normalised pixel predicted by the Qwen layout:
    row = g*gh*gw + ((bh*(gw/m) + bw)*m + ih)*m + iw for patch (py, px) = (bh*m+ih, bw*m+iw);
    col = c*tp*p*p + t*p*p + y*p + x."""
    p, m, tp = 14, 2, 2
    vp = BridgeSTGVideoProcessor(patch_size=p, merge_size=m, min_pixels=56 * 84, max_pixels=56 * 84)
    rng = np.random.RandomState(0)
    frames = rng.randint(0, 256, size=(4, 56, 84, 3)).astype(np.uint8)  # already multiples of 28: no resize
    pv, grid = vp.preprocess_one(frames)
    gh, gw = 56 // p, 84 // p
    assert grid.tolist() == [[1, gh, gw], [1, gh, gw]]
    assert pv.shape == (2 * gh * gw, 3 * tp * p * p)
    mean, std = np.array(OPENAI_CLIP_MEAN), np.array(OPENAI_CLIP_STD)
    for (g, t, c, py, px, y, x) in [(0, 0, 0, 0, 0, 0, 0), (1, 1, 2, 3, 5, 13, 7), (0, 1, 1, 2, 3, 4, 11), (1, 0, 0, 1, 4, 9, 0)]:
        bh, ih, bw, iw = py // m, py % m, px // m, px % m
        row = g * gh * gw + ((bh * (gw // m) + bw) * m + ih) * m + iw
        col = c * tp * p * p + t * p * p + y * p + x
        pixel = frames[g * tp + t, py * p + y, px * p + x, c]
        expected = (pixel / 255.0 - mean[c]) / std[c]
        assert pv[row, col].item() == pytest.approx(expected, abs=1e-5)


def test_odd_frames_repeat_last_and_budget():
    vp = BridgeSTGVideoProcessor(**TINY_VP)
    frames = np.random.RandomState(1).randint(0, 256, size=(3, 56, 112, 3)).astype(np.uint8)
    pv, grid = vp.preprocess_one(frames)
    assert grid.shape == (2, 3)
    per_group = int(grid[0, 1] * grid[0, 2])
    second = pv[per_group:].reshape(per_group, 3, 2, 14, 14)
    assert torch.equal(second[:, :, 0], second[:, :, 1])  # group 1 = frame 2 twice
    # total merged-token budget across groups
    big = BridgeSTGVideoProcessor(min_pixels=16 * 784, max_pixels=256 * 784, max_video_tokens=64)
    h, w = big.target_size(720, 1280, num_frames=16)  # 8 groups -> at most 8 tokens per group
    assert (h // 28) * (w // 28) * 8 <= 64 and h % 28 == 0 and w % 28 == 0
    h1, w1 = big.target_size(720, 1280, num_frames=2)  # one group: the budget still caps it at 64 tokens
    assert (h1 // 28) * (w1 // 28) <= 64 < (h1 // 28 + 1) * (w1 // 28 + 1)
    assert BridgeSTGVideoProcessor(min_pixels=16 * 784, max_pixels=256 * 784).target_size(720, 1280, 2) == (336, 588)


def test_video_processor_batch_and_dict():
    vp = BridgeSTGVideoProcessor(patch_size=16, **{**TINY_VP, "min_pixels": 4 * 32 * 32, "max_pixels": 4 * 32 * 32})
    a = np.zeros((4, 64, 64, 3), np.uint8)
    b = np.full((2, 64, 64, 3), 255, np.uint8)
    out = vp([a, b])
    assert out["video_grid_thw"].tolist() == [[1, 4, 4]] * 3
    assert out["pixel_values_videos"].shape == (48, 3 * 2 * 16 * 16)
    assert out["pixel_values_videos"][-1, 0].item() == pytest.approx((1 - OPENAI_CLIP_MEAN[0]) / OPENAI_CLIP_STD[0], abs=1e-5)
    d = vp.to_dict()
    assert d["patch_size"] == 16 and d["video_processor_type"] == "BridgeSTGVideoProcessor"
    again = BridgeSTGVideoProcessor(**d)
    assert again.to_dict() == d
    with pytest.raises(ValueError, match="max_pixels"):
        BridgeSTGVideoProcessor(min_pixels=10, max_pixels=5)


# ------------------------------------------------------------------------------------------ prompt and tensors
def test_prompt_exact_with_qwen_tokenizer(qwen_tokenizer, clip):
    proc = BridgeSTGProcessor(BridgeSTGVideoProcessor(**TINY_VP), qwen_tokenizer, num_bridge_queries=4, max_frames=8)
    out = proc(clip, "the bright bar", segments=[(10, 60)])
    meta = out.video_metadata[0]
    assert meta["frame_ids"] == [10, 22, 35, 47] and meta["segment"] == [10, 60]
    assert out["frame_timestamps"][0].tolist() == pytest.approx([0.0, 0.48, 1.0, 1.48])
    n = 3  # 160x64 -> 28x84 -> 1x3 merged tokens per group
    block = "<|vision_start|>" + "<|video_pad|>" * n + "<|vision_end|>"
    expected = (
        "<|im_start|>user\nQuery: the bright bar\n<0.0s>" + block + "<1.0s>" + block
        + '\nWhen does the query happen? Answer "From A s to B s".<|im_end|>\n<|im_start|>assistant\n'
    )
    ids = out["input_ids"][0].tolist()
    assert qwen_tokenizer.decode(ids) == expected
    assert ids == qwen_tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert ids.count(151656) == 2 * n and ids.count(151653) == 2  # <|video_pad|>, <|vision_end|>
    assert out["video_grid_thw"].tolist() == [[1, 2, 6], [1, 2, 6]]
    assert torch.equal(out["mm_token_type_ids"][0] == 2, out["input_ids"][0] == 151656)
    assert set(out.keys()) == {
        "input_ids", "attention_mask", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw",
        "frame_timestamps", "frame_mask", "frame_ids",
    }


def test_training_text_mode_labels_and_targets(processor, compact_tokenizer, clip):
    boxes = {20: [0, 0, 80, 32], 30: [40, 16, 120, 48]}
    out = processor(clip, "the bar", segments=[(10, 60)], target_spans=[(20, 45)], target_boxes=[boxes])
    ids = out["input_ids"][0]
    labels = out["labels"][0]
    answer = compact_tokenizer.decode(labels[labels != -100])
    # A = (20-10)/25 = 0.4 s, B = (45-10)/25 = 1.4 s
    assert answer == "From 0.4s to 1.4s.<|im_end|>"
    bridge = processor.bridge_token_ids
    assert ids[-4:].tolist() == bridge and (labels[-4:] == -100).all()
    assert compact_tokenizer.decode(ids[labels != -100]) == answer
    assert out["frame_ids"][0].tolist() == [10, 22, 35, 47]
    assert out["frame_labels"][0].tolist() == [0, 1, 1, 0]
    assert out["target_box_mask"][0].tolist() == [False, True, False, False]
    # frame 22 between annotated 20 and 30: w = 0.2 -> (8, 3.2, 88, 35.2) px -> cxcywh / (160, 64)
    assert out["target_boxes"][0, 1].tolist() == pytest.approx([48 / 160, 19.2 / 64, 80 / 160, 32 / 64])
    assert "labels" in out and out["attention_mask"][0].all()


def test_training_frame_mode_and_padding(compact_tokenizer, clip):
    proc = BridgeSTGProcessor(
        BridgeSTGVideoProcessor(**TINY_VP), compact_tokenizer, num_bridge_queries=4, max_frames=8, span_source="frame"
    )
    frames = np.stack([index_frame(i) for i in range(20)])
    out = proc([clip, frames], ["a long query about the bright bar", "short"], video_fps=[None, 10.0],
               target_spans=[(0, 50), (4, 12)], target_boxes=[{0: [0, 0, 10, 10]}, {}])
    assert (out["labels"] == -100).all()  # frame mode: no answer text, no LM loss
    suffix = compact_tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"] + proc.bridge_token_ids
    for i in range(2):
        valid = out["input_ids"][i][out["attention_mask"][i] == 1].tolist()
        assert valid[-len(suffix):] == suffix
    # training pads on the right
    assert out["attention_mask"][1, 0] == 1 and out["attention_mask"][1, -1] == 0
    assert out["frame_ids"].shape == (2, 8)
    assert out["frame_ids"][1].tolist() == [0, 5, 10, 15, -1, -1, -1, -1]
    assert out["frame_mask"][1].tolist() == [True] * 4 + [False] * 4
    assert out["frame_labels"][1].tolist() == [0, 1, 1, 0, -100, -100, -100, -100]
    n_pad = int((out["mm_token_type_ids"] == 2).sum())
    assert n_pad == int((out["video_grid_thw"].prod(-1) // 4).sum())
    # inference pads on the left
    inf = proc([clip, frames], ["a long query about the bright bar", "short"], video_fps=[None, 10.0])
    assert inf["attention_mask"][1, 0] == 0 and inf["attention_mask"][1, -1] == 1
    assert "labels" not in inf and "frame_labels" not in inf


def test_answer_format_and_parse(processor):
    assert processor.format_answer(3, 7.5) == "From 3.0s to 7.5s."
    assert processor.parse_answer("From 3.0s to 7.5s.") == (3.0, 7.5)
    assert processor.parse_answer("From 9.5 s to 2 s", duration=8.0) == (2.0, 8.0)  # swapped, clipped
    assert processor.parse_answer("It starts at -1.0s and ends at 4s") == (0.0, 4.0)
    assert processor.parse_answer("no numbers here") is None
    assert processor.parse_answer("From 3.0s") is None


# ------------------------------------------------------------------------------------------ post-processing
def test_post_process_hand_computed(processor, clip):
    inputs = processor(clip, "the bar", segments=[(10, 60)])
    assert inputs.video_metadata[0]["frame_ids"] == [10, 22, 35, 47]  # groups: (10, 22), (35, 47)
    pred_boxes = torch.zeros(1, 4, 4)
    pred_boxes[0, 0] = torch.tensor([0.05, 0.5, 0.2, 0.2])  # frame 10 (outside the span)
    pred_boxes[0, 1] = torch.tensor([0.25, 0.5, 0.1, 0.2])  # frame 22 -> (32, 25.6, 48, 38.4)
    pred_boxes[0, 2] = torch.tensor([0.9, 0.9, 0.4, 0.4])  # frame 35 -> (112, 44.8, 176->160, 70.4->64)
    pred_boxes[0, 3] = torch.tensor([0.5, 0.25, 0.25, 0.5])  # frame 47 (end is exclusive)
    outputs = {
        # A = 0.48 s -> 10 + round(12) = 22; B = 1.48 s -> 10 + 37 = 47 (exclusive)
        "pred_span_seconds": torch.tensor([[0.48, 1.48]]),
        "pred_span_frames": torch.tensor([[1, 3]]),
        "pred_boxes": pred_boxes,
        "presence_scores": torch.tensor([[0.1, 0.9, 0.7, 0.8]]),
        "decoder_frame_mask": torch.tensor([[True, True, True, True]]),
        "span_source": ["text"],
    }
    (res,) = processor.post_process_grounding(outputs, inputs, eval_frame_ids=[[20, 22, 30, 35, 40, 47]])
    assert res["span"] == [22, 47] and res["span_seconds"] == [22 / 25, 47 / 25]
    assert res["frames"] == [22, 35]
    np.testing.assert_allclose(res["boxes"], [[32.0, 25.6, 48.0, 38.4], [112.0, 44.8, 160.0, 64.0]], rtol=0, atol=1e-4)
    assert res["scores"] == pytest.approx([0.9, 0.7])
    assert res["span_source"] == "text"
    assert res["eval_frame_ids"] == [22, 30, 35, 40]
    w = 8 / 13  # frame 30 between 22 and 35
    np.testing.assert_allclose(res["eval_boxes"], [
        [32.0, 25.6, 48.0, 38.4],
        [32 + w * 80, 25.6 + w * 19.2, 48 + w * 112, 38.4 + w * 25.6],
        [112.0, 44.8, 160.0, 64.0],
        [112.0, 44.8, 160.0, 64.0],  # after the last decoded frame: nearest box
    ], rtol=0, atol=1e-4)
    assert res["eval_scores"] == pytest.approx([0.9, 0.9 + w * (0.7 - 0.9), 0.7, 0.7])
    # threshold drops low-score frames; the span from frames when seconds are absent
    (r2,) = processor.post_process_grounding({k: v for k, v in outputs.items() if k != "pred_span_seconds"},
                                             inputs.video_metadata, threshold=0.8)
    assert r2["span"][0] == 22 and r2["span"][1] == 36 and r2["frames"] == [22]


# ------------------------------------------------------------------------------------------ bad input
def test_bad_queries_and_long_prompt(processor, clip, tmp_path):
    with pytest.raises(InvalidQueryError, match="empty"):
        processor(clip, "")
    with pytest.raises(InvalidQueryError, match="sample 1.*whitespace"):
        processor([clip, clip], ["ok", "  \n\t "])
    with pytest.raises(InvalidQueryError, match="more than the limit of 20"):
        processor(clip, "the bar", max_length=20)
    processor.tokenizer.model_max_length, old = 30, processor.tokenizer.model_max_length
    try:
        with pytest.raises(InvalidQueryError, match="limit of 30"):
            processor(clip, "the bar " * 20)
    finally:
        processor.tokenizer.model_max_length = old
    with pytest.raises(VideoDecodeError, match="missing.mp4: no such file"):
        processor(str(tmp_path / "missing.mp4"), "the bar")
    with pytest.raises(ValueError, match="2 videos for 1 queries"):
        processor([clip, clip], ["one"])
    # a single video with a one-element query list is one sample, not a list of characters
    assert processor(clip, ["the bar"])["input_ids"].shape[0] == 1


def test_decoded_video_input(processor, clip):
    video = read_video(clip, sample_fps=2.0, max_frames=8, segment=(10, 60))
    a = processor(video, "the bar")
    b = processor(clip, "the bar", segments=[(10, 60)])
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ------------------------------------------------------------------------------------------ save / load
def _save(tmp_path, processor, tokenizer, remote: bool) -> str:
    from bridge_stg.training.tiny import tiny_bridge_kwargs, tiny_mllm_config

    config = BridgeSTGConfig(
        mllm_config=tiny_mllm_config("qwen2_5_vl", tokenizer), bridge_token_ids=processor.bridge_token_ids,
        **tiny_bridge_kwargs(),
    )
    path = str(tmp_path / ("remote" if remote else "installed"))
    # the package __init__ may register the classes for remote code at import: set the wanted state for
    # this save only, then restore whatever it was (other tests rely on the package's global state)
    classes = (BridgeSTGConfig, BridgeSTGProcessor)
    saved = [cls.__dict__.get("_auto_class", None) for cls in classes]
    try:
        if remote:
            BridgeSTGConfig.register_for_auto_class()
            BridgeSTGProcessor.register_for_auto_class("AutoProcessor")
        else:
            for cls in classes:
                cls._auto_class = None
        config.save_pretrained(path)
        processor.save_pretrained(path)
    finally:
        for cls, value in zip(classes, saved):
            cls._auto_class = value
    return path


def test_save_load_installed(tmp_path, compact_tokenizer, clip):
    from transformers import AutoProcessor

    proc = BridgeSTGProcessor(BridgeSTGVideoProcessor(**TINY_VP), compact_tokenizer, num_bridge_queries=4,
                              max_frames=8, span_source="frame", answer_decimals=2)
    path = _save(tmp_path, proc, compact_tokenizer, remote=False)
    # what the package __init__ does at import time (idempotent here)
    AutoProcessor.register(BridgeSTGConfig, BridgeSTGProcessor, exist_ok=True)
    assert "auto_map" not in open(os.path.join(path, "config.json")).read()
    loaded = AutoProcessor.from_pretrained(path)
    assert type(loaded) is BridgeSTGProcessor
    assert (loaded.span_source, loaded.answer_decimals, loaded.max_frames) == ("frame", 2, 8)
    assert loaded.video_processor.to_dict() == proc.video_processor.to_dict()
    assert loaded.bridge_token_ids == proc.bridge_token_ids
    a, b = proc(clip, "the bar"), loaded(clip, "the bar")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_save_load_remote_code(tmp_path, compact_tokenizer, clip):
    proc = BridgeSTGProcessor(BridgeSTGVideoProcessor(**TINY_VP), compact_tokenizer, num_bridge_queries=4, max_frames=8)
    path = _save(tmp_path, proc, compact_tokenizer, remote=True)
    for name in ("processing_bridge_stg.py", "video_processing_bridge_stg.py", "video_io_bridge_stg.py",
                 "errors_bridge_stg.py", "configuration_bridge_stg.py"):
        assert os.path.exists(os.path.join(path, name)), name
    expected = proc(clip, "the bar")
    np.save(tmp_path / "ids.npy", expected["input_ids"].numpy())
    np.save(tmp_path / "pv.npy", expected["pixel_values_videos"].numpy())
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "bridge_stg" or name.startswith("bridge_stg."):
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        from transformers import AutoProcessor
        p = AutoProcessor.from_pretrained({path!r}, trust_remote_code=True)
        assert "bridge_stg" not in sys.modules
        assert type(p).__name__ == "BridgeSTGProcessor" and "transformers_modules" in type(p).__module__
        out = p({clip!r}, "the bar")
        assert (out["input_ids"].numpy() == np.load({str(tmp_path / "ids.npy")!r})).all()
        assert (out["pixel_values_videos"].numpy() == np.load({str(tmp_path / "pv.npy")!r})).all()
        print("REMOTE_OK", type(p).__module__)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=180,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "REMOTE_OK transformers_modules" in res.stdout


def test_one_video_for_several_queries_is_preprocessed_once(processor, clip):
    """The pipeline hands one decoded video for all its queries: its pixels are computed once per call, and the
    batch equals the samples processed one by one."""
    decoded = read_video(clip, sample_fps=processor.sample_fps, max_frames=processor.max_frames)
    calls = []
    original = processor.video_processor.preprocess_one
    processor.video_processor.preprocess_one = lambda frames: calls.append(1) or original(frames)
    try:
        batch = processor(videos=[decoded] * 3, text=["the red square", "a dog", "the ball on the left"])
    finally:
        processor.video_processor.preprocess_one = original
    assert len(calls) == 1
    one = processor(videos=[decoded], text=["a dog"])
    n = one["pixel_values_videos"].shape[0]
    assert torch.equal(batch["pixel_values_videos"][n:2 * n], one["pixel_values_videos"])
    assert torch.equal(batch["video_grid_thw"], one["video_grid_thw"].repeat(3, 1))
    # two different decoded videos are each processed
    other = read_video(clip, sample_fps=processor.sample_fps, max_frames=processor.max_frames)
    two = processor(videos=[decoded, other], text=["a dog", "a dog"])
    assert torch.equal(two["pixel_values_videos"][:n], two["pixel_values_videos"][n:])
