"""BridgeSTGForVideoGrounding on tiny random Qwen2.5-VL and Qwen3-VL backbones (HF ModelTester style)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel

from bridge_stg import BridgeSTGConfig, BridgeSTGForVideoGrounding, BridgeSTGProcessor
from bridge_stg.training.tiny import tiny_bridge_kwargs, tiny_mllm_config
from bridge_stg.processing.tokenizer import bridge_token_ids

BACKBONES = ["qwen2_5_vl", "qwen3_vl"]
LOSS_NAMES = ["loss_lm", "loss_l1", "loss_giou", "loss_presence", "loss_relevance", "loss_contrastive", "loss_span"]


class BridgeSTGModelTester:
    """Builds a tiny model + processor and batches of moving-square clips with exact boxes."""

    def __init__(self, tokenizer, backbone: str, **overrides):
        torch.manual_seed(0)
        self.tokenizer = tokenizer
        self.config = BridgeSTGConfig(
            mllm_config=tiny_mllm_config(backbone, tokenizer, hidden_size=32, intermediate_size=64),
            bridge_token_ids=bridge_token_ids(tokenizer, 4),
            **tiny_bridge_kwargs(**overrides),
        )
        self.model = BridgeSTGForVideoGrounding(self.config)
        self.processor = BridgeSTGProcessor.from_model_config(self.config, tokenizer)

    @staticmethod
    def clip(num_frames: int = 16, size: int = 56, fps: float = 4.0, seed: int = 0):
        """A white square moving right on a dark background; returns frames and its exact boxes."""
        rng = np.random.default_rng(seed)
        frames = np.full((num_frames, size, size, 3), 20, dtype=np.uint8)
        frames += rng.integers(0, 10, size=frames.shape, dtype=np.uint8)
        boxes = {}
        side = size // 4
        for f in range(num_frames):
            x = 2 + int((size - side - 4) * f / max(num_frames - 1, 1))
            y = size // 3
            frames[f, y : y + side, x : x + side] = 235
            boxes[f] = [float(x), float(y), float(x + side), float(y + side)]
        return frames, boxes, fps

    def training_batch(self, span=(4, 12)):
        frames, boxes, fps = self.clip()
        frames2, boxes2, _ = self.clip(num_frames=12, seed=1)
        return self.processor(
            videos=[frames, frames2], text=["the white square", "where is the square?"], video_fps=[fps, fps],
            target_spans=[span, (2, 8)],
            target_boxes=[{f: boxes[f] for f in range(*span)}, {f: boxes2[f] for f in range(2, 8)}],
            training=True,
        )

    def inference_batch(self):
        frames, _, fps = self.clip()
        return self.processor(videos=[frames, frames[:12]], text=["the white square", "a square"], video_fps=[fps, fps])


@pytest.fixture(scope="module", params=BACKBONES)
def tester(request, qwen_tokenizer):
    return BridgeSTGModelTester(qwen_tokenizer, request.param)


def test_forward_backward_every_component(tester):
    model = tester.model.train()
    batch = tester.training_batch()
    out = model(**batch)
    assert torch.isfinite(out.loss)
    for name in LOSS_NAMES:
        value = getattr(out, name)
        assert torch.isfinite(value) and float(value) > 0, name
    expected = sum(getattr(tester.config, f"{n}_weight") * getattr(out, n) for n in LOSS_NAMES)
    torch.testing.assert_close(out.loss, expected)
    B, F = batch["frame_mask"].shape
    assert out.pred_boxes.shape == (B, F, 4)
    assert out.layer_boxes.shape == (tester.config.decoder_layers, B, F, 4)
    model.zero_grad()
    out.loss.backward()
    llm_q = model.mllm.model.language_model.layers[0].self_attn.q_proj.weight.grad
    assert llm_q is not None and llm_q.abs().sum() > 0
    assert model.stsb.bridge_embeddings.grad.abs().sum() > 0
    assert model.stsb.bridge_fusion.layer_logits.grad.abs().sum() > 0
    assert model.qgsl.layers[0].cross_attn.q_proj.weight.grad.abs().sum() > 0
    assert model.qgsl.heads.ref_mlp[0].weight.grad.abs().sum() > 0
    model.zero_grad()


def test_decoder_runs_only_on_sampled_positive_and_negative_frames(tester):
    model = tester.model.train()
    batch = tester.training_batch()
    out = model(**batch)
    decoded = out.decoder_frame_mask
    labels = batch["frame_labels"]
    n_pos = ((labels == 1) & decoded).sum(1)
    n_neg = ((labels == 0) & decoded).sum(1)
    assert (n_pos <= tester.config.num_positive_frames).all() and (n_pos >= 1).all()
    assert (n_neg <= tester.config.num_negative_frames).all()
    assert not (decoded & ~batch["frame_mask"]).any()


def test_ground_returns_span_and_boxes(tester):
    model = tester.model.eval()
    inputs = tester.inference_batch()
    out = model.ground(**inputs, tokenizer=tester.tokenizer)
    B, F = inputs["frame_mask"].shape
    assert out.pred_span_seconds.shape == (B, 2) and out.pred_boxes.shape == (B, F, 4)
    assert (out.pred_span_seconds[:, 0] < out.pred_span_seconds[:, 1]).all()
    s, e = out.pred_span_frames[:, 0], out.pred_span_frames[:, 1]
    assert (s < e).all()  # half-open, never empty
    assert out.decoder_frame_mask.sum() >= B  # at least one frame per query (ETA)
    assert ((out.pred_boxes >= 0) & (out.pred_boxes <= 1)).all()
    assert set(out.span_source) <= {"text", "frame", "relevance_fallback"}
    results = tester.processor.post_process_grounding(out, inputs.video_metadata)
    for res in results:
        assert 0 <= res["span"][0] < res["span"][1] <= 16
        for box in res["boxes"]:
            assert 0 <= box[0] <= box[2] <= 56 and 0 <= box[1] <= box[3] <= 56
    frame_out = model.ground(**inputs, span_source="frame")
    assert frame_out.span_source == ["frame", "frame"]


def test_save_load_round_trip_and_automodel(tester, tmp_path):
    model = tester.model.eval()
    batch = tester.training_batch()
    batch["decoder_frame_mask"] = batch["frame_mask"]  # deterministic frame selection
    model.save_pretrained(tmp_path)
    files = os.listdir(tmp_path)
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    config = json.loads((tmp_path / "config.json").read_text())
    # save_pretrained writes weights and configs only; code and auto_map are written at export (save_for_hub)
    assert "auto_map" not in config and not any(f.endswith(".py") for f in files)
    loaded = BridgeSTGForVideoGrounding.from_pretrained(tmp_path).eval()
    auto = AutoModel.from_pretrained(tmp_path).eval()
    assert type(auto) is BridgeSTGForVideoGrounding
    assert type(AutoConfig.from_pretrained(tmp_path)) is BridgeSTGConfig
    with torch.no_grad():
        ref = model(**batch)
        for other in (loaded, auto):
            out = other(**batch)
            torch.testing.assert_close(out.loss, ref.loss, rtol=0, atol=0)
            torch.testing.assert_close(out.pred_boxes, ref.pred_boxes, rtol=0, atol=0)


def test_bf16_loading_and_gradient_checkpointing(tester, tmp_path):
    tester.model.save_pretrained(tmp_path)
    bf16 = BridgeSTGForVideoGrounding.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert bf16.qgsl.layers[0].ffn[0].weight.dtype == torch.bfloat16
    assert bf16.mllm.lm_head.weight.dtype == torch.bfloat16
    model = BridgeSTGForVideoGrounding.from_pretrained(tmp_path).train()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    out = model(**tester.training_batch())
    out.loss.backward()
    assert model.qgsl.layers[0].ffn[0].weight.grad is not None


def test_resize_token_embeddings_and_repr(tester):
    model = BridgeSTGForVideoGrounding(copy.deepcopy(tester.config))
    n = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(n + 8)
    assert model.get_input_embeddings().weight.shape[0] == n + 8
    assert model.config.mllm_config.get_text_config().vocab_size == n + 8
    model.mllm.model.visual.requires_grad_(False)
    assert 0 < model.num_parameters(only_trainable=True) < model.num_parameters()
    assert "BridgeSTGDecoderLayer" in repr(model)


def test_from_mllm_pretrained(tmp_path, qwen_tokenizer):
    from transformers import AutoModelForImageTextToText

    mllm = AutoModelForImageTextToText.from_config(tiny_mllm_config("qwen2_5_vl", qwen_tokenizer, hidden_size=32, intermediate_size=64))
    mllm.save_pretrained(tmp_path / "qwen")
    model = BridgeSTGForVideoGrounding.from_mllm_pretrained(
        str(tmp_path / "qwen"), bridge_token_ids=bridge_token_ids(qwen_tokenizer, 4), **tiny_bridge_kwargs()
    )
    torch.testing.assert_close(model.mllm.lm_head.weight, mllm.lm_head.weight)
    assert model.config.mllm_config.model_type == "qwen2_5_vl"


def test_from_mllm_pretrained_embedding_rows(tmp_path, compact_tokenizer):
    """Spare embedding rows (as in the released Qwen-VL checkpoints) are kept; too few rows grow to the tokenizer;
    a bridge id outside the rows is refused."""
    from transformers import AutoModelForImageTextToText

    n = len(compact_tokenizer)
    ids = bridge_token_ids(compact_tokenizer, 4)
    for rows, expected in ((n + 64, n + 64), (n - 2, n)):
        mllm = AutoModelForImageTextToText.from_config(tiny_mllm_config("qwen2_5_vl", compact_tokenizer, vocab_size=rows))
        folder = tmp_path / f"rows{rows}"
        mllm.save_pretrained(folder)
        model = BridgeSTGForVideoGrounding.from_mllm_pretrained(str(folder), bridge_token_ids=ids, vocab_size=n,
                                                                **tiny_bridge_kwargs())
        assert model.mllm.get_input_embeddings().weight.shape[0] == expected
        assert model.config.mllm_config.get_text_config().vocab_size == expected
    with pytest.raises(ValueError, match="bridge_token_ids"):
        BridgeSTGForVideoGrounding.from_mllm_pretrained(str(tmp_path / f"rows{n + 64}"), bridge_token_ids=[n + 64],
                                                        **tiny_bridge_kwargs())


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(num_bridge_queries=0), "num_bridge_queries"),
        (dict(decoder_heads=3), "decoder_heads"),
        (dict(loss_giou_weight=-1.0), "loss_giou_weight"),
        (dict(bridge_num_layers=5), "bridge_num_layers"),
        (dict(max_frames=7), "max_frames"),
        (dict(box_head="conv"), "box_head"),
    ],
)
def test_invalid_config_names_the_field(kwargs, field, qwen_tokenizer):
    mllm = tiny_mllm_config("qwen2_5_vl", qwen_tokenizer, hidden_size=32, intermediate_size=64)
    with pytest.raises(ValueError, match=field):
        BridgeSTGConfig(mllm_config=mllm, **{**tiny_bridge_kwargs(), **kwargs})


def test_unknown_backbone_and_no_implicit_backbone():
    with pytest.raises(ValueError, match="mllm_config"):
        BridgeSTGConfig(mllm_config={"model_type": "llama"})
    bare = BridgeSTGConfig()
    assert bare.mllm_config is None
    with pytest.raises(ValueError, match="mllm_config"):
        BridgeSTGForVideoGrounding(bare)


def test_remote_code_load_without_package(tester, tmp_path):
    from bridge_stg.model_cards.hub import REMOTE_CODE_FILES, save_for_hub

    save_for_hub(tester.model, tester.processor, tmp_path)
    for name in ("modeling_bridge_stg.py", "configuration_bridge_stg.py", "processing_bridge_stg.py", *REMOTE_CODE_FILES):
        assert (tmp_path / name).exists(), name
    script = textwrap.dedent(
        f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "bridge_stg" or name.startswith("bridge_stg."):
                    raise ImportError("bridge_stg is blocked in this test")
        sys.meta_path.insert(0, Block())
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        proc = AutoProcessor.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        assert type(model).__name__ == "BridgeSTGForVideoGrounding", type(model)
        assert not any(m == "bridge_stg" or m.startswith("bridge_stg.") for m in sys.modules)
        print("OK", type(proc).__name__, model.num_parameters())
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "OK BridgeSTGProcessor" in res.stdout


@pytest.mark.slow
def test_overfit_one_clip_box_loss_falls_tenfold(qwen_tokenizer):
    """The decoder learns: on one moving-square clip the box loss (L1 + GIoU) falls by >= 10x."""
    torch.manual_seed(0)
    tester = BridgeSTGModelTester(
        qwen_tokenizer, "qwen2_5_vl", loss_lm_weight=0.0, max_pixels=16 * 28 * 28, min_pixels=16 * 28 * 28
    )
    model = tester.model.train()
    frames, boxes, fps = tester.clip(num_frames=8, size=112)
    batch = tester.processor(
        videos=[frames], text=["the white square"], video_fps=[fps], target_spans=[(0, 8)],
        target_boxes=[boxes], training=True,
    )
    batch["decoder_frame_mask"] = batch["frame_mask"]
    params = [p for n, p in model.named_parameters() if not n.startswith("mllm.")]
    opt = torch.optim.AdamW(params, lr=1e-3)

    def box_loss(out):
        return float(out.loss_l1 + out.loss_giou)

    first = None
    for _ in range(250):
        out = model(**batch)
        first = first if first is not None else box_loss(out)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        last = box_loss(model(**batch))
    assert last * 10 <= first, (first, last)


def test_ground_text_mode_never_generates_bridge_tokens(qwen_tokenizer):
    """An LM head that prefers a bridge token must not break ground(): bridge tokens are suppressed."""
    tester = BridgeSTGModelTester(qwen_tokenizer, "qwen2_5_vl")
    model = tester.model.eval()
    bridge0 = tester.config.bridge_token_ids[0]
    im_end = tester.config.mllm_config.get_text_config().eos_token_id
    with torch.no_grad():
        model.mllm.lm_head.weight.zero_()
        model.mllm.lm_head.weight[bridge0] = 1.0
        model.mllm.lm_head.weight[im_end] = 0.5
    inputs = tester.inference_batch()
    out = model.ground(**inputs, tokenizer=tester.tokenizer, span_source="text")
    # the answer is empty (im_end right away), so the span falls back to frame relevance; no crash
    assert out.span_source == ["relevance_fallback", "relevance_fallback"]
    assert out.generated_text == ["", ""]
