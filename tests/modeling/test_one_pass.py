"""``ground()`` in one pass: one vision-encoder call and one prefill per query, in both span modes; the bridge
states from the generation's cache equal a full re-encode; batches equal singles; several queries share a video."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch

from bridge_stg import BridgeSTGConfig, BridgeSTGForVideoGrounding, BridgeSTGProcessor
from bridge_stg.processing.tokenizer import bridge_token_ids
from bridge_stg.training.tiny import tiny_bridge_kwargs, tiny_mllm_config

BACKBONES = ["qwen2_5_vl", "qwen3_vl"]


def _build(tok, backbone="qwen2_5_vl", **overrides):
    torch.manual_seed(0)
    config = BridgeSTGConfig(mllm_config=tiny_mllm_config(backbone, tok), bridge_token_ids=bridge_token_ids(tok, 4),
                             **tiny_bridge_kwargs(**overrides))
    return BridgeSTGForVideoGrounding(config).eval(), BridgeSTGProcessor.from_model_config(config, tok)


def _video(num_frames=16, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (num_frames, 56, 56, 3), dtype=np.uint8)


@contextmanager
def encoder_output(model):
    """Yields a dict whose ``"enc"`` is the encoder output the model hands its decoder (the last call's)."""
    seen = {}
    original = model._run_decoder

    def capture(enc, mask):
        seen["enc"] = enc
        return original(enc, mask)

    model._run_decoder = capture
    try:
        yield seen
    finally:
        model._run_decoder = original


class Counter:
    """Counts vision-encoder calls and LLM forwards (with the number of tokens each one processes)."""

    def __init__(self, model):
        self.vision, self.llm = 0, []
        self.handles = [
            model.mllm.model.visual.register_forward_hook(lambda *a: setattr(self, "vision", self.vision + 1)),
            model.mllm.model.language_model.register_forward_pre_hook(self._llm, with_kwargs=True),
        ]

    def _llm(self, module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        self.llm.append(int(embeds.shape[1]))

    def close(self):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("source", ["text", "frame"])
def test_one_vision_call_and_one_prefill(compact_tokenizer, backbone, source):
    model, processor = _build(compact_tokenizer, backbone, span_source=source)
    inputs = processor(videos=[_video()], text=["the red square"], video_fps=[4.0])
    tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    prompt_len = tensors["input_ids"].shape[1]
    counter = Counter(model)
    try:
        model.ground(**tensors, tokenizer=compact_tokenizer, max_new_tokens=6)
    finally:
        counter.close()
    assert counter.vision == 1
    K = model.config.num_bridge_queries
    if source == "text":
        # the prompt once, then one token per generation step, then <|im_end|> + bridge tokens on top of the cache
        assert counter.llm[0] == prompt_len and all(n == 1 for n in counter.llm[1:-1]) and counter.llm[-1] == K + 2
        assert sum(n >= prompt_len for n in counter.llm) == 1
    else:
        assert counter.llm == [prompt_len + K]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_text_mode_bridge_states_equal_a_full_re_encode(compact_tokenizer, backbone):
    """The one-pass text path gives the encoder output that one forward over prompt + answer + <|im_end|> + bridge
    tokens gives (the training layout), for a left-padded batch of two with answers of different lengths."""
    model, processor = _build(compact_tokenizer, backbone, span_source="text")
    inputs = processor(videos=[_video(), _video(12, seed=1)], text=["the red square", "a blue circle on the left"],
                       video_fps=[4.0, 4.0])
    t = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    with torch.no_grad(), encoder_output(model) as seen:
        model.ground(**t, tokenizer=compact_tokenizer, max_new_tokens=7)
    # the same generation, then one forward over the training layout (the re-encode the one pass replaces)
    gen_tokens = []
    with torch.no_grad():
        video_features = model.encode_video(t["pixel_values_videos"], t["video_grid_thw"], t["frame_mask"])
        gen = model.mllm.generate(input_ids=t["input_ids"], attention_mask=t["attention_mask"],
                                  mm_token_type_ids=t["mm_token_type_ids"], video_grid_thw=t["video_grid_thw"],
                                  mm_encoder_outputs={"video": video_features}, max_new_tokens=7, do_sample=False,
                                  eos_token_id=model.im_end_token_id, suppress_tokens=list(model.config.bridge_token_ids),
                                  pad_token_id=model.config.mllm_config.get_text_config().pad_token_id)
        model.mllm.model.rope_deltas = None
        for row in gen[:, t["input_ids"].shape[1]:].tolist():
            end = row.index(model.im_end_token_id) if model.im_end_token_id in row else None
            gen_tokens.append(row[: end + 1] if end is not None else row + [model.im_end_token_id])
        ids, mask, types = model._append_bridge_tokens(t["input_ids"], t["attention_mask"], t["mm_token_type_ids"], gen_tokens)
        ref = model._encode(ids, mask, types, t["video_grid_thw"], t["frame_timestamps"], t["frame_mask"].bool(),
                            pixel_values_videos=t["pixel_values_videos"], video_features=video_features)
    enc = seen["enc"]
    for name in ("bridge_queries", "frame_states", "span_start_logits", "relevance_logits", "memory"):
        torch.testing.assert_close(getattr(enc, name), getattr(ref, name), atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("source", ["text", "frame"])
def test_batch_of_two_equals_two_singles(compact_tokenizer, source):
    model, processor = _build(compact_tokenizer, span_source=source)
    videos, queries = [_video(), _video(12, seed=1)], ["the red square", "a blue circle on the left of it"]
    batch = processor(videos=videos, text=queries, video_fps=[4.0, 4.0])
    with torch.no_grad():
        both = model.ground(**{k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}, tokenizer=compact_tokenizer,
                            max_new_tokens=7)
        for i in range(2):
            one = processor(videos=[videos[i]], text=[queries[i]], video_fps=[4.0])
            single = model.ground(**{k: v for k, v in one.items() if isinstance(v, torch.Tensor)},
                                  tokenizer=compact_tokenizer, max_new_tokens=7)
            n = one["frame_mask"].shape[1]
            assert both.generated_text[i] == single.generated_text[0]
            torch.testing.assert_close(both.pred_span_seconds[i], single.pred_span_seconds[0])
            assert torch.equal(both.decoder_frame_mask[i, :n], single.decoder_frame_mask[0])
            torch.testing.assert_close(both.pred_boxes[i, :n], single.pred_boxes[0], atol=1e-5, rtol=1e-4)


def test_several_queries_on_one_video_run_the_vision_encoder_once(compact_tokenizer):
    """In one batch (ground) and across batches (the pipeline's list of queries, batch_size 1)."""
    from bridge_stg import VideoGroundingPipeline

    model, processor = _build(compact_tokenizer, span_source="frame")
    video = _video()
    queries = [f"query number {i}" for i in range(8)]
    batch = processor(videos=[video] * 4, text=queries[:4], video_fps=[4.0] * 4)
    counter = Counter(model)
    try:
        with torch.no_grad():
            out = model.ground(**{k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})
        assert counter.vision == 1
        counter.vision = 0
        pipe = VideoGroundingPipeline(model=model, processor=processor, device="cpu", batch_size=1)
        results = pipe(video, text=queries, video_fps=4.0)
        assert counter.vision == 1 and len(results) == 8
    finally:
        counter.close()
    # the shared features change nothing: the same query alone gives the same answer
    alone = pipe(video, text=queries[0], video_fps=4.0)
    assert alone["span"] == results[0]["span"] and alone["tube"] == results[0]["tube"]
    assert out.decoder_frame_mask.shape[0] == 4


def test_bf16_model_keeps_times_spans_and_box_losses_in_float32(compact_tokenizer):
    """At real scale the model runs in bf16: a timestamp of 33.3 s must not become 33.25 s before the time
    embedding, and the box targets and GIoU must not be rounded to bf16."""
    from bridge_stg.modeling_bridge_stg import sine_embedding

    model, processor = _build(compact_tokenizer, span_source="frame")
    model = model.to(torch.bfloat16)
    frames = np.random.default_rng(0).integers(0, 255, (8, 56, 56, 3), dtype=np.uint8)
    boxes = {f: [10.0, 12.0, 30.0, 40.0] for f in range(8)}
    batch = processor(videos=[frames], text=["the square"], video_fps=[4.0], target_spans=[(0, 8)],
                      target_boxes=[boxes], training=True)
    t = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    t["pixel_values_videos"] = t["pixel_values_videos"].to(torch.bfloat16)
    t["frame_timestamps"] = t["frame_timestamps"] + 33.3  # a clip starting 33.3 s into its segment
    with torch.no_grad(), encoder_output(model) as seen:
        out = model(**t)
    times = seen["enc"].time_embeddings[0, 0]
    stsb = model.stsb
    exact = stsb.time_proj(sine_embedding(torch.tensor([33.3]), stsb.hidden, scale=4.0).to(torch.bfloat16))[0]
    rounded = stsb.time_proj(sine_embedding(torch.tensor([33.3]).to(torch.bfloat16), stsb.hidden, scale=4.0)
                             .to(torch.bfloat16))[0]
    assert torch.equal(times, exact) and not torch.equal(exact, rounded)
    for name in ("loss_l1", "loss_giou", "loss_presence", "loss_span"):
        assert getattr(out, name).dtype == torch.float32, name
    inputs = processor(videos=[frames], text=["the square"], video_fps=[4.0])
    g = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    g["pixel_values_videos"] = g["pixel_values_videos"].to(torch.bfloat16)
    with torch.no_grad():
        grounded = model.ground(**g)
    assert grounded.pred_span_seconds.dtype == torch.float32


def _after_video_batch(tok, backbone, source):
    """A model with the query after the video, and a batch of 4 queries on one video + 1 on another; returns the
    model, the tensors and each sample's prefix length (tokens up to its last ``<|vision_end|>``)."""
    model, processor = _build(tok, backbone, span_source=source, query_position="after_video")
    video, other = _video(), _video(12, seed=1)
    queries = ["the red square", "a blue circle on the left of the green one", "it", "the yellow triangle"]
    batch = processor(videos=[video] * 4 + [other], text=queries + ["the red square"], video_fps=[4.0] * 5)
    t = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    mask = t["attention_mask"].bool()
    vision_end = model.config.mllm_config.vision_end_token_id
    prefix = [int(torch.nonzero(t["input_ids"][i][mask[i]] == vision_end)[-1]) + 1 for i in range(5)]
    return model, t, prefix


@contextmanager
def unshared(model):
    """Ground every query over its full prompt (no prefix sharing): the reference the shared paths must equal."""
    original = model._shared_prefixes
    model._shared_prefixes = lambda *a, **k: None
    try:
        yield
    finally:
        model._shared_prefixes = original


@pytest.mark.parametrize("backbone", BACKBONES)
def test_queries_after_one_video_share_its_prefill(compact_tokenizer, backbone):
    """With the query after the video, queries on one video prefill the video prefix once (its cache repeated for
    each query) and give what one forward per query gives; a query on another video in the batch is unaffected."""
    model, t, prefix = _after_video_batch(compact_tokenizer, backbone, "frame")
    counter = Counter(model)
    owners, compare_videos = [], model._video_owners

    def counting(*args):
        result = compare_videos(*args)
        owners.append(result[3])
        return result

    model._video_owners = counting
    try:
        with torch.no_grad():
            shared = model.ground(**t)
    finally:
        counter.close()
        del model._video_owners
    # the batch's videos are compared once (pixels), for the encoder and for the prefix groups alike
    assert owners == [[0, 0, 0, 0, 1]]
    K = model.config.num_bridge_queries
    lengths = t["attention_mask"].sum(1).tolist()
    # one prefill per distinct video prefix, then each group's suffixes (query + bridge tokens) in one batch
    assert counter.vision == 1
    assert counter.llm == [prefix[0], max(lengths[i] - prefix[i] for i in range(4)) + K, prefix[4], lengths[4] - prefix[4] + K]
    with torch.no_grad(), unshared(model):
        full = model.ground(**t)
    torch.testing.assert_close(shared.pred_span_seconds, full.pred_span_seconds)
    assert torch.equal(shared.decoder_frame_mask, full.decoder_frame_mask)
    torch.testing.assert_close(shared.pred_boxes, full.pred_boxes, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(shared.presence_scores, full.presence_scores, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(shared.relevance_scores, full.relevance_scores, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_text_mode_queries_after_one_video_share_its_prefill(compact_tokenizer, backbone):
    """Text span mode, the query after the video: queries on one video prefill the video prefix once, ``generate``
    continues its repeated cache with each query, and the answers, spans and boxes are those of one generation per
    query; a query on another video in the batch is unaffected."""
    model, t, prefix = _after_video_batch(compact_tokenizer, backbone, "text")
    counter = Counter(model)
    try:
        with torch.no_grad(), encoder_output(model) as seen:
            shared = model.ground(**t, tokenizer=compact_tokenizer, max_new_tokens=7)
    finally:
        counter.close()
    suffix = max(int(t["attention_mask"][i].sum()) - prefix[i] for i in range(4))
    assert counter.vision == 1
    # per distinct video: its prefix once, then the group's queries (one block), then one token per step
    assert counter.llm[:2] == [prefix[0], suffix]
    assert [n for n in counter.llm if n > suffix] == [prefix[0], prefix[4]]  # no other pass over a video
    with torch.no_grad(), unshared(model), encoder_output(model) as ref:
        full = model.ground(**t, tokenizer=compact_tokenizer, max_new_tokens=7)
    assert shared.generated_text == full.generated_text
    torch.testing.assert_close(shared.pred_span_seconds, full.pred_span_seconds)
    assert torch.equal(shared.decoder_frame_mask, full.decoder_frame_mask)
    torch.testing.assert_close(shared.pred_boxes, full.pred_boxes, atol=1e-5, rtol=1e-4)
    for name in ("bridge_queries", "frame_states", "relevance_logits", "memory"):
        torch.testing.assert_close(getattr(seen["enc"], name), getattr(ref["enc"], name), atol=1e-5, rtol=1e-4, msg=name)
