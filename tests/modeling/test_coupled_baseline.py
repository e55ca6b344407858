"""Coupled text-box baseline (grounding_mode="coupled"): answer format, parser robustness, train + ground."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bridge_stg import BridgeSTGConfig, BridgeSTGForVideoGrounding, BridgeSTGProcessor
from bridge_stg.coupled_bridge_stg import parse_coupled_answer
from bridge_stg.processing.synthetic import render_synthetic_clip
from bridge_stg.training.tiny import tiny_bridge_kwargs, tiny_mllm_config
from bridge_stg.processing.tokenizer import bridge_token_ids, build_compact_tokenizer

TS = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_parse_well_formed() -> None:
    text = "From 0.5s to 2.0s.\n<0.5s>: (100,200,300,400)\n<1.0s>: (0,0,1000,1000)\n<1.5s>: (250,250,750,500)"
    span, boxes, bad = parse_coupled_answer(text, TS, duration=3.0)
    assert span == (0.5, 2.0)
    assert bad == 0
    assert sorted(boxes) == [1, 2, 3]
    np.testing.assert_allclose(boxes[1], [0.2, 0.3, 0.2, 0.2])
    np.testing.assert_allclose(boxes[2], [0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(boxes[3], [0.5, 0.375, 0.5, 0.25])


def test_parse_truncated_keeps_complete_lines() -> None:
    text = "From 0.5s to 2.0s.\n<0.5s>: (100,200,300,400)\n<1.0s>: (100,2"
    span, boxes, bad = parse_coupled_answer(text, TS, duration=3.0)
    assert span == (0.5, 2.0)
    assert sorted(boxes) == [1]
    assert bad == 1
    # truncated inside the span sentence: no span, no boxes, counted
    span, boxes, bad = parse_coupled_answer("From 0.", TS, duration=3.0)
    assert span is None and boxes == {} and bad == 1


@pytest.mark.parametrize("text", ["", "HereHereHere", "\n\n", "(1,2,3,4)", "<x>: (a,b,c,d)", None])
def test_parse_garbage(text) -> None:
    span, boxes, bad = parse_coupled_answer(text, TS, duration=3.0)
    assert span is None
    assert boxes == {}
    assert bad >= 1


def test_parse_rejects_invalid_boxes() -> None:
    text = (
        "From 0.0s to 3.0s.\n"
        "<0.0s>: (300,200,100,400)\n"  # x2 < x1
        "<0.5s>: (0,0,1200,500)\n"  # off the grid
        "<7.0s>: (0,0,10,10)\n"  # no such frame
        "<1.0s>: (0,0,10,10)\n"  # ok
        "<1.0s>: (0,0,20,20)\n"  # duplicate frame
        "banana\n"
    )
    span, boxes, bad = parse_coupled_answer(text, TS, duration=3.0)
    assert span == (0.0, 3.0)
    assert sorted(boxes) == [2]
    np.testing.assert_allclose(boxes[2], [0.005, 0.005, 0.01, 0.01])
    assert bad == 5


def test_parse_boxes_without_span_line_and_span_clipping() -> None:
    span, boxes, bad = parse_coupled_answer("<1.0s>: (0,0,500,500)", TS, duration=3.0)
    assert span is None and sorted(boxes) == [2] and bad == 1
    span, _, _ = parse_coupled_answer("From 9.0s to 1.0s.", TS, duration=3.0)
    assert span == (1.0, 3.0)


@pytest.fixture(scope="module")
def coupled() -> tuple[BridgeSTGForVideoGrounding, BridgeSTGProcessor, object]:
    tok = build_compact_tokenizer(num_bridge_queries=4)
    config = BridgeSTGConfig(
        mllm_config=tiny_mllm_config("qwen2_5_vl", tok), bridge_token_ids=bridge_token_ids(tok, 4),
        grounding_mode="coupled", **tiny_bridge_kwargs(),
    )
    torch.manual_seed(0)
    model = BridgeSTGForVideoGrounding(config)
    processor = BridgeSTGProcessor.from_model_config(config, tok)
    clip = render_synthetic_clip(np.random.default_rng(3))
    return model, processor, clip


def _train_inputs(processor: BridgeSTGProcessor, clip) -> dict:
    return processor(
        videos=[clip.frames], text=[clip.query], video_fps=[clip.fps], target_spans=[(clip.tube_start, clip.tube_end)],
        target_boxes=[{"frame_ids": list(clip.frame_ids), "boxes": [list(b) for b in clip.boxes]}], training=True,
    )


def test_processor_builds_coupled_answer_and_round_trips(coupled, tmp_path) -> None:
    model, processor, clip = coupled
    assert processor.grounding_mode == "coupled"
    inputs = _train_inputs(processor, clip)
    ids = inputs["input_ids"][0]
    assert not torch.isin(ids, torch.tensor(processor.bridge_token_ids)).any()  # no bridge tokens in coupled mode
    answer = processor.tokenizer.decode(ids[inputs["labels"][0] != -100], skip_special_tokens=True)
    meta = inputs.video_metadata[0]
    ts = meta["timestamps"]
    span, boxes, bad = parse_coupled_answer(answer, ts, duration=meta["duration"])
    assert bad == 0
    fps = meta["fps"]
    assert span == pytest.approx(((clip.tube_start) / fps, clip.tube_end / fps), abs=0.051)
    mask = inputs["target_box_mask"][0]
    ids = meta["frame_ids"]
    expected = {k for k in range(len(ids)) if mask[k] and ids.index(ids[k]) == k}  # a repeated frame counts once
    assert set(boxes) == expected
    for k, box in boxes.items():  # 0-1000 grid: 1e-3 quantisation
        np.testing.assert_allclose(box, inputs["target_boxes"][0, k].numpy(), atol=2e-3)
    processor.save_pretrained(tmp_path)
    assert BridgeSTGProcessor.from_pretrained(tmp_path).grounding_mode == "coupled"


def test_coupled_model_trains_a_step_and_grounds(coupled) -> None:
    model, processor, clip = coupled
    model.train()
    inputs = _train_inputs(processor, clip)
    tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    optim = torch.optim.SGD(model.parameters(), lr=0.05)
    out = model(**tensors)
    assert torch.isfinite(out.loss) and out.loss.item() == pytest.approx(out.loss_lm.item())
    assert out.loss_l1.item() == 0.0
    out.loss.backward()
    assert model.mllm.lm_head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.qgsl.parameters())  # the decoder is not used
    optim.step()
    optim.zero_grad()
    assert model(**tensors).loss.item() < out.loss.item()
    model.eval()
    inf = processor(videos=[clip.frames], text=[clip.query], video_fps=[clip.fps])
    g = model.ground(**{k: v for k, v in inf.items() if isinstance(v, torch.Tensor)}, tokenizer=processor.tokenizer,
                     max_new_tokens=12)
    assert len(g.generated_text) == 1 and len(g.num_malformed) == 1
    assert g.span_source[0] in ("coupled", "coupled_boxes", "coupled_no_boxes", "unparsable")
    span, boxes, bad = parse_coupled_answer(g.generated_text[0], inf["frame_timestamps"][0].tolist(), None)
    assert g.num_malformed[0] == bad
    assert g.decoder_frame_mask[0].sum().item() == len(boxes)
    res = processor.post_process_grounding(g, inf.video_metadata)[0]
    if g.span_source[0] == "unparsable":
        assert res["boxes"] == []


def test_coupled_ground_parses_a_forced_answer(coupled, monkeypatch) -> None:
    """ground() maps a generated answer to the output tensors (generation replaced by a fixed text)."""
    model, processor, clip = coupled
    model.eval()
    inf = processor(videos=[clip.frames], text=[clip.query], video_fps=[clip.fps])
    ts = inf["frame_timestamps"][0].tolist()
    text = f"From {ts[1]:.1f}s to {ts[3]:.1f}s.\n<{ts[1]:.1f}s>: (100,100,300,500)\n<{ts[2]:.1f}s>: (200,1"
    tok = processor.tokenizer
    answer = tok(text, add_special_tokens=False)["input_ids"] + [processor.im_end_token_id]

    def fake_generate(input_ids, **kwargs):
        return torch.cat([input_ids, torch.tensor([answer] * input_ids.shape[0])], 1)

    monkeypatch.setattr(model.mllm, "generate", fake_generate)
    g = model.ground(**{k: v for k, v in inf.items() if isinstance(v, torch.Tensor)}, tokenizer=tok)
    assert g.span_source == ["coupled"] and g.num_malformed == [1]
    assert g.pred_span_frames[0].tolist() == [1, 3]
    assert g.decoder_frame_mask[0].nonzero().flatten().tolist() == [1]
    torch.testing.assert_close(g.pred_boxes[0, 1], torch.tensor([0.2, 0.3, 0.2, 0.4]))
    garbage = tok("HereHere", add_special_tokens=False)["input_ids"]
    monkeypatch.setattr(model.mllm, "generate", lambda input_ids, **kw: torch.cat(
        [input_ids, torch.tensor([garbage] * input_ids.shape[0])], 1))
    g = model.ground(**{k: v for k, v in inf.items() if isinstance(v, torch.Tensor)}, tokenizer=tok)
    assert g.span_source == ["unparsable"] and g.num_malformed[0] >= 1 and not g.decoder_frame_mask.any()
    assert processor.post_process_grounding(g, inf.video_metadata)[0]["boxes"] == []


@pytest.mark.parametrize("which", ["compact", "qwen"])
def test_default_generation_budget_fits_a_full_answer(which, compact_tokenizer, qwen_tokenizer) -> None:
    """The coupled model's default budget (config.max_new_tokens + COUPLED_TOKENS_PER_FRAME per sampled frame)
    holds a worst-case well-formed answer: 64 frames up to 31.5 s, every box with 4-digit coordinates."""
    from bridge_stg.coupled_bridge_stg import COUPLED_TOKENS_PER_FRAME, format_coupled_answer

    tok = compact_tokenizer if which == "compact" else qwen_tokenizer
    processor = BridgeSTGProcessor(tokenizer=tok, num_bridge_queries=4, grounding_mode="coupled")
    ts = [i * 0.5 for i in range(64)]
    answer = format_coupled_answer(processor, 10.5, 31.5, ts, [[0.5, 0.5, 1.0, 1.0]] * 64)
    n = len(tok(answer, add_special_tokens=False)["input_ids"]) + 1  # + <|im_end|>
    assert n <= BridgeSTGConfig().max_new_tokens + COUPLED_TOKENS_PER_FRAME * 64, n
