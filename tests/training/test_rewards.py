"""The GRPO rewards on hand-made cases: the answer format, the temporal IoU of the stated span (frames exactly as
post_process_grounding maps them), and the tube reward against the grounding path itself (model.ground with the same
answer forced, post_process_grounding, the metric)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch

from bridge_stg import BridgeSTGForVideoGrounding, BridgeSTGProcessor
from bridge_stg.errors_bridge_stg import BridgeSTGError
from bridge_stg.evaluation import compute_stvg_metrics
from bridge_stg.training.demo import TEST_STREAM, demo_checkpoint_path, reference_rows, render_clips
from bridge_stg.training.predict import predict_clips
from bridge_stg.training.rewards import (
    GroundingPrompts,
    GroundingVideo,
    TubeReward,
    answer_span_frames,
    build_reward_funcs,
    format_reward,
    temporal_iou_reward,
)

# an 8 s segment at 10 fps: frames [0, 80)
SEG = {"fps": 10.0, "segment_start": 0, "segment_end": 80}


def _cols(n: int, **row) -> dict:
    return {k: [v] * n for k, v in {**SEG, **row}.items()}


@pytest.mark.parametrize("text, expected", [
    ("From 3.0s to 7.5s.", 1.0),             # the processor's own template
    ("From 3s to 7.5s", 1.0),                 # integer, no final period
    ("  From 0.0 s to 8.0 s. ", 1.0),         # spaces; the whole segment
    ("The query happens From 3.0s to 7.5s.", 0.5),  # parses, but other words around it
    ("From 7.5s to 3.0s.", 0.5),              # reversed: parse_answer swaps it
    ("From 3.0s to 99.0s.", 0.5),             # past the end: clipped to 8 s
    ("from 3.0s to 7.5s.", 0.5),              # not the template's capital F
    ("From 3.0s to 3.0s.", 0.0),              # empty span
    ("From 9.0s to 12.0s.", 0.0),             # clipped to [8, 8): empty
    ("From 3.0s to", 0.0),                    # one number
    ("", 0.0),
    ("red square", 0.0),
])
def test_format_reward(text, expected) -> None:
    assert format_reward([text], **_cols(1)) == [expected]


def test_format_reward_checks_its_columns() -> None:
    with pytest.raises(BridgeSTGError, match="column 'fps' has 1 entries for 2 completions"):
        format_reward(["a", "b"], fps=[10.0], segment_start=[0, 0], segment_end=[80, 80])


@pytest.mark.parametrize("text, tube, expected", [
    ("From 3.0s to 7.5s.", (30, 75), 1.0),          # frames [30, 75): exact
    ("From 3.0s to 5.0s.", (30, 75), 20 / 45),      # [30, 50) inside the GT
    ("From 0.0s to 2.0s.", (30, 75), 0.0),          # disjoint
    ("From 7.5s to 3.0s.", (30, 75), 1.0),          # reversed numbers are swapped, as parse_answer does
    ("From 2.0s to 99s.", (30, 75), 45 / 60),       # clipped to the segment end [20, 80)
    ("From 0.25s to 1.0s.", (0, 10), 7 / 10),       # 2.5 frames round half up: [3, 10)
    ("nothing", (30, 75), 0.0),                     # no span: 0
])
def test_temporal_iou_reward(text, tube, expected) -> None:
    got = temporal_iou_reward([text], **_cols(1, tube_start=tube[0], tube_end=tube[1]))
    assert got == pytest.approx([expected])


def test_temporal_iou_reward_in_a_segment_that_does_not_start_at_zero() -> None:
    # seconds are from the segment start: 0.5 s into [100, 180) at 10 fps is frame 105
    cols = {"fps": [10.0], "segment_start": [100], "segment_end": [180], "tube_start": [100], "tube_end": [110]}
    assert answer_span_frames("From 0.5s to 1.0s.", 10.0, 100, 180) == (105, 110)
    assert temporal_iou_reward(["From 0.5s to 1.0s."], **cols) == pytest.approx([0.5])


def test_answer_span_frames_is_post_process_grounding(compact_tokenizer) -> None:
    """The reward's seconds -> frames mapping is the processor's post-processing, on random answers and segments."""
    processor = BridgeSTGProcessor(tokenizer=compact_tokenizer, num_bridge_queries=4)
    rng = np.random.default_rng(0)
    for _ in range(200):
        fps = float(rng.choice([5.0, 10.0, 24.0, 29.97, 30.0]))
        seg_start = int(rng.integers(0, 50))
        seg_end = seg_start + int(rng.integers(2, 300))
        a, b = sorted(rng.uniform(-1.0, (seg_end - seg_start) / fps + 2.0, size=2))
        text = processor.format_answer(a, b) if a >= 0 else f"From {a:.2f}s to {b:.2f}s."
        span = answer_span_frames(text, fps, seg_start, seg_end)
        parsed = BridgeSTGProcessor.parse_answer(text, duration=(seg_end - seg_start) / fps)
        meta = {"fps": fps, "segment": [seg_start, seg_end], "frame_ids": [seg_start, seg_start + 1], "width": 10,
                "height": 10}
        outputs = {"pred_span_seconds": np.array([parsed]), "pred_boxes": np.zeros((1, 2, 4)),
                   "presence_scores": np.ones((1, 2))}
        assert tuple(processor.post_process_grounding(outputs, [meta])[0]["span"]) == span, (text, fps, seg_start, seg_end)


def test_reward_names() -> None:
    assert [f.__name__ for f in build_reward_funcs(["temporal_iou", "format"])] == ["temporal_iou_reward", "format_reward"]
    with pytest.raises(ValueError, match="unknown"):
        build_reward_funcs(["format", "bleu"])
    with pytest.raises(ValueError, match="at most once"):
        build_reward_funcs(["format", "format"])
    with pytest.raises(ValueError, match="tube_viou needs the model"):
        build_reward_funcs(["tube_viou"])


# ------------------------------------------------------------------------------------------------ tube reward
@contextmanager
def forced_answers(model: BridgeSTGForVideoGrounding, answers: list[list[int]]):
    """``model.ground`` generates exactly ``answers[i]`` for sample i of each batch (then ``<|im_end|>``)."""
    original = model.mllm.generate
    im_end = model.im_end_token_id

    def generate(*args, **kwargs):
        start = kwargs["input_ids"].shape[1]

        def allowed(batch_id, ids):
            step = ids.shape[0] - start
            answer = answers[batch_id]
            return [answer[step]] if step < len(answer) else [im_end]

        return original(*args, prefix_allowed_tokens_fn=allowed, **kwargs)

    model.mllm.generate = generate
    try:
        yield
    finally:
        del model.mllm.generate  # the instance attribute shadowed the method


@pytest.fixture(scope="module")
def demo_text_mode():
    """The shipped demo checkpoint switched to text span mode, and three fresh test clips."""
    path = demo_checkpoint_path()
    model = BridgeSTGForVideoGrounding.from_pretrained(path, span_source="text").eval()
    processor = BridgeSTGProcessor.from_model_config(model.config, BridgeSTGProcessor.from_pretrained(path).tokenizer)
    clips = render_clips(TEST_STREAM, 0, 0, 3, families=("appearance",))
    return model, processor, clips


def test_tube_reward_is_the_metric_of_the_grounded_tube(demo_text_mode) -> None:
    """The tube reward of an answer equals the vIoU that model.ground + post_process_grounding + the metric give when
    the model itself writes that answer (the same sampled span, ETA frames, decoder and protocol)."""
    model, processor, clips = demo_text_mode
    tok = processor.tokenizer
    texts = [processor.format_answer(c.tube_start / c.fps + 0.3 * i, c.tube_end / c.fps) for i, c in enumerate(clips)]
    answers = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    with forced_answers(model, answers), torch.no_grad():
        rows, raw = predict_clips(model, processor, clips, "c", progress=False)
    assert [r["span_source"] for r in raw] == ["text"] * 3
    refs = reference_rows(clips, "c")
    expected = compute_stvg_metrics(refs, rows, protocol="tubedetr", return_per_query=True)["per_query"]
    assert max(expected["vIoU"]) > 0.05  # a real tube, not a vacuous 0 = 0

    batch = processor(videos=[c.frames for c in clips], text=[c.query for c in clips], video_fps=[c.fps for c in clips])
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    with torch.no_grad():
        features = model.encode_video(tensors["pixel_values_videos"], tensors["video_grid_thw"], tensors["frame_mask"])
    shared = GroundingPrompts(tensors, batch.video_metadata, features)
    columns = {k: [r[k] for r in refs] for k in refs[0]}
    im_end = model.im_end_token_id
    reward = TubeReward(model, processor, protocol="tubedetr", batch_size=2)  # two forward passes
    got = reward(completions=texts, completion_ids=[a + [im_end] for a in answers],
                 grounding_video=[GroundingVideo(shared, i) for i in range(3)], **columns)
    assert got == pytest.approx(expected["vIoU"], abs=1e-4)
    assert temporal_iou_reward(texts, **columns) == pytest.approx(expected["tIoU"], abs=1e-9)
    assert not model.training  # the reward leaves every module's mode as it found it


def test_tube_reward_edge_cases(demo_text_mode) -> None:
    model, processor, clips = demo_text_mode
    refs = reference_rows(clips[:2], "e")
    refs[1].update(task="tvg", frame_ids=[], boxes=[])  # a span-only row: no tube to score
    batch = processor(videos=[c.frames for c in clips[:2]], text=[c.query for c in clips[:2]], video_fps=[10.0, 10.0])
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    with torch.no_grad():
        features = model.encode_video(tensors["pixel_values_videos"], tensors["video_grid_thw"], tensors["frame_mask"])
    shared = GroundingPrompts(tensors, batch.video_metadata, features)
    columns = {k: [r[k] for r in refs] for k in refs[0]}
    ids = processor.tokenizer("no span here", add_special_tokens=False)["input_ids"]  # truncated: no <|im_end|>
    model.train()
    reward = TubeReward(model, processor)
    got = reward(completions=["no span here"] * 2, completion_ids=[ids, ids],
                 grounding_video=[GroundingVideo(shared, 0), GroundingVideo(shared, 1)], **columns)
    assert got == [0.0, None]  # no readable span: 0; tvg: not applicable
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    with pytest.raises(BridgeSTGError, match="grounding_video"):
        reward(completions=["x"], completion_ids=[ids], **{k: v[:1] for k, v in columns.items()})
