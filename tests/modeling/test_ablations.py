"""Ablation switches of BridgeSTGConfig change the behaviour they name (defaults = the full method)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bridge_stg import BridgeSTGConfig, BridgeSTGForVideoGrounding, BridgeSTGProcessor
from bridge_stg.processing.synthetic import render_synthetic_clip
from bridge_stg.training.tiny import tiny_bridge_kwargs, tiny_mllm_config
from bridge_stg.processing.tokenizer import bridge_token_ids, build_compact_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_compact_tokenizer(num_bridge_queries=4)


@pytest.fixture(scope="module")
def clip():
    return render_synthetic_clip(np.random.default_rng(11))


def _build(tok, **overrides) -> tuple[BridgeSTGForVideoGrounding, BridgeSTGProcessor]:
    kwargs = tiny_bridge_kwargs(span_source="frame")
    kwargs.update(overrides)
    config = BridgeSTGConfig(mllm_config=tiny_mllm_config("qwen2_5_vl", tok), bridge_token_ids=bridge_token_ids(tok, 4),
                             **kwargs)
    torch.manual_seed(0)
    return BridgeSTGForVideoGrounding(config), BridgeSTGProcessor.from_model_config(config, tok)


def _train_tensors(processor, clip) -> dict:
    inputs = processor(
        videos=[clip.frames], text=[clip.query], video_fps=[clip.fps], target_spans=[(clip.tube_start, clip.tube_end)],
        target_boxes=[{"frame_ids": list(clip.frame_ids), "boxes": [list(b) for b in clip.boxes]}], training=True,
    )
    return {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}


def test_defaults_are_the_full_method() -> None:
    c = BridgeSTGConfig()
    assert c.bridge_num_layers > 1 and c.eta is True and c.num_negative_frames > 0
    assert c.loss_contrastive_weight > 0 and c.loss_relevance_weight > 0 and c.grounding_mode == "decoupled"


@pytest.mark.parametrize("layers", [1, 2])
def test_bridge_num_layers_controls_the_fused_layers(tok, clip, layers) -> None:
    model, processor = _build(tok, bridge_num_layers=layers)
    assert model.stsb.bridge_fusion.layer_logits.numel() == layers
    seen: list[int] = []
    original = model.stsb.bridge_fusion.forward

    def spy(states):
        seen.append(len(states))
        return original(states)

    model.stsb.bridge_fusion.forward = spy
    model.eval()
    model(**_train_tensors(processor, clip))
    assert seen == [layers]


def test_eta_off_decodes_every_frame(tok, clip) -> None:
    for eta in (True, False):
        model, processor = _build(tok, eta=eta)
        model.eval()
        inf = processor(videos=[clip.frames], text=[clip.query], video_fps=[clip.fps])
        inf_kwargs = {k: v for k, v in inf.items() if isinstance(v, torch.Tensor)}
        out = model.ground(**inf_kwargs, tokenizer=tok)
        s, e = out.pred_span_frames[0].tolist()
        decoded = out.decoder_frame_mask[0]
        if eta:
            assert decoded.nonzero().flatten().tolist() == list(range(s, e))
        else:
            assert torch.equal(decoded, inf_kwargs["frame_mask"][0])
        # training: ETA off runs the decoder on every valid frame too
        model.train()
        train = _train_tensors(processor, clip)
        dec = model(**train).decoder_frame_mask[0]
        if eta:
            assert int(dec.sum()) <= model.config.num_positive_frames + model.config.num_negative_frames
            labels = train["frame_labels"][0]
            assert int((dec & (labels == 0)).sum()) <= model.config.num_negative_frames
        else:
            assert torch.equal(dec, train["frame_mask"][0])


def test_no_negative_frames(tok, clip) -> None:
    model, processor = _build(tok, num_negative_frames=0, loss_contrastive_weight=0.0)
    model.train()
    train = _train_tensors(processor, clip)
    labels = train["frame_labels"][0]
    assert (labels == 0).any() and (labels == 1).any()
    for _ in range(5):  # sampling is random: never a negative
        out = model(**train)
        dec = out.decoder_frame_mask[0]
        assert dec.any() and not (dec & (labels == 0)).any()
    # the relevance loss sees positives only (all targets 1), the contrastive term has no negatives
    assert out.loss_contrastive.item() == 0.0
    full, processor_full = _build(tok)
    full.train()
    negs = [int((full(**train).decoder_frame_mask[0] & (labels == 0)).sum()) for _ in range(5)]
    assert max(negs) > 0


def test_contrastive_weight_off_removes_the_term_from_the_loss(tok, clip) -> None:
    on, processor = _build(tok)
    off, _ = _build(tok, loss_contrastive_weight=0.0)
    train = _train_tensors(processor, clip)
    on.eval(), off.eval()
    a, b = on(**train, decoder_frame_mask=train["frame_mask"]), off(**train, decoder_frame_mask=train["frame_mask"])
    assert a.loss_contrastive.item() > 0
    torch.testing.assert_close(a.loss - b.loss, on.config.loss_contrastive_weight * a.loss_contrastive)
