"""The method options measured on the synthetic benchmark (docs/method.md §3.16): each does what its config field says."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bridge_stg import BridgeSTGConfig, BridgeSTGForVideoGrounding, BridgeSTGProcessor
from bridge_stg.modeling_bridge_stg import sample_decoder_frames, span_seconds
from bridge_stg.processing.tokenizer import bridge_token_ids
from bridge_stg.training.tiny import tiny_bridge_kwargs, tiny_mllm_config


def _build(tok, **overrides):
    torch.manual_seed(0)
    config = BridgeSTGConfig(mllm_config=tiny_mllm_config("qwen2_5_vl", tok), bridge_token_ids=bridge_token_ids(tok, 4),
                             **tiny_bridge_kwargs(**overrides))
    return BridgeSTGForVideoGrounding(config), BridgeSTGProcessor.from_model_config(config, tok)


def _clip(num_frames=16, size=56, seed=0):
    """A white square moving right on a noisy dark background, with exact boxes."""
    rng = np.random.default_rng(seed)
    frames = (20 + rng.integers(0, 10, size=(num_frames, size, size, 3))).astype(np.uint8)
    side, boxes = size // 4, {}
    for f in range(num_frames):
        x = 2 + int((size - side - 4) * f / (num_frames - 1))
        frames[f, 18: 18 + side, x: x + side] = 235
        boxes[f] = [float(x), 18.0, float(x + side), 18.0 + side]
    return frames, boxes


def _train_batch(processor, query="the white square"):
    frames, boxes = _clip()
    return processor(videos=[frames], text=[query], video_fps=[4.0], target_spans=[(4, 12)],
                     target_boxes=[{f: boxes[f] for f in range(4, 12)}], training=True)


def test_bridge_query_norm_and_fusion_norm(compact_tokenizer):
    model, processor = _build(compact_tokenizer, bridge_query_norm=True, fusion_layer_norm=True)
    assert isinstance(model.stsb.query_proj[-1], torch.nn.LayerNorm)
    assert model.stsb.bridge_fusion.norms is not None and len(model.stsb.bridge_fusion.norms) == 2
    out = model(**_train_batch(processor))
    q = out.bridge_queries.detach()
    # normalised: each bridging query has zero mean and about unit variance over its features at initialisation
    # (LayerNorm's eps lowers it a little when the projection's output is tiny), far from the raw projection's scale
    torch.testing.assert_close(q.mean(-1), torch.zeros_like(q.mean(-1)), atol=1e-5, rtol=0)
    assert ((q.var(-1, unbiased=False) > 0.5) & (q.var(-1, unbiased=False) <= 1.0 + 1e-4)).all()
    out.loss.backward()
    assert model.stsb.bridge_fusion.norms[0].weight.grad is not None


def test_fan_in_init_and_relevance_bias(compact_tokenizer):
    normal, _ = _build(compact_tokenizer)
    fan_in, _ = _build(compact_tokenizer, decoder_init="fan_in", relevance_bias_init=0.0)
    w_normal = normal.qgsl.layers[0].cross_attn.q_proj.weight
    w = fan_in.qgsl.layers[0].cross_attn.q_proj.weight
    bound = 1 / math.sqrt(w.shape[1])
    assert w.abs().max() <= bound and w.std() > 0.5 * bound / math.sqrt(3)  # U(-b, b) has std b / sqrt(3)
    assert w_normal.std() < 0.03  # N(0, 0.02)
    assert float(fan_in.stsb.temporal_head.rel_beta) == 0.0 and float(normal.stsb.temporal_head.rel_beta) == -5.0


def test_reference_loss_supervises_where_the_box_head_looks(compact_tokenizer):
    model, processor = _build(compact_tokenizer, loss_reference_weight=1.0, max_pixels=16 * 28 * 28,
                              min_pixels=16 * 28 * 28)
    batch = _train_batch(processor)
    out = model(**batch)
    assert out.loss_reference > 0
    # the weighted sum includes it
    base = sum(getattr(model.config, f"{k}_weight") * getattr(out, k) for k in (
        "loss_lm", "loss_l1", "loss_giou", "loss_presence", "loss_relevance", "loss_contrastive", "loss_span"))
    torch.testing.assert_close(out.loss, base + out.loss_reference)
    out.loss_reference.backward()
    assert model.qgsl.heads.ref_key.weight.grad.abs().sum() > 0
    # off by default, and absent for the MLP box head
    off, p2 = _build(compact_tokenizer)
    assert float(off(**_train_batch(p2)).loss_reference) == 0.0
    mlp, p3 = _build(compact_tokenizer, box_head="mlp", loss_reference_weight=1.0)
    assert float(mlp(**_train_batch(p3)).loss_reference) == 0.0


def test_reference_learned_scale_sharpens_the_box_heads_softmax(compact_tokenizer):
    model, processor = _build(compact_tokenizer, reference_learned_scale=True, loss_reference_weight=1.0)
    heads = model.qgsl.heads
    assert float(heads.ref_log_scale) == 0.0  # scale 1 at init: the same box as without the option
    batch = _train_batch(processor)
    out = model(**batch)
    out.loss.backward()
    assert heads.ref_log_scale.grad is not None and float(heads.ref_log_scale.grad) != 0.0
    # a larger scale moves the box towards the highest-scoring token's box; the scores (what loss_reference reads)
    # do not change
    d = model.config.decoder_hidden_size
    x = torch.randn(1, 2, model.config.num_bridge_queries, d)
    from bridge_stg.modeling_bridge_stg import BridgeSTGSlotMemory
    mem = torch.randn(1, 2, 16, d)
    slot_group = torch.tensor([[0, 1]])
    memory = BridgeSTGSlotMemory(mem, torch.zeros_like(mem), torch.ones(1, 2, 16, dtype=torch.bool), slot_group)
    centres = torch.rand(1, 2, 16, 2)
    sizes = torch.full((1, 2, 2), 0.25)
    with torch.no_grad():
        box1, _, scores1 = heads(x, memory, centres, sizes)
        heads.ref_log_scale.fill_(3.0)
        box2, _, scores2 = heads(x, memory, centres, sizes)
    torch.testing.assert_close(scores1, scores2)
    assert not torch.allclose(box1, box2)
    # padded tokens stay out of the softmax at any scale
    memory_pad = BridgeSTGSlotMemory(mem, torch.zeros_like(mem), torch.arange(16).expand(1, 2, 16) < 4, slot_group)
    with torch.no_grad():
        box3, _, _ = heads(x, memory_pad, centres, sizes)
    assert torch.isfinite(box3).all()
    # checkpoints without the option have no such parameter
    plain, _ = _build(compact_tokenizer)
    assert plain.qgsl.heads.ref_log_scale is None
    with pytest.raises(ValueError, match="reference_learned_scale"):
        BridgeSTGConfig(mllm_config=tiny_mllm_config("qwen2_5_vl", compact_tokenizer),
                        **tiny_bridge_kwargs(reference_learned_scale="yes"))


def test_peak_readout_puts_the_box_on_one_of_two_distant_look_alikes(compact_tokenizer):
    """Two far-apart tokens score high: the mean readout's box falls between them, the peak readout's on the top one.
    `reference_readout` is the readout in eval mode; train mode follows `reference_readout_training` (default mean)."""
    from bridge_stg.modeling_bridge_stg import BridgeSTGSlotMemory

    boxes = {}
    for name, readout, training_readout, train_mode in (("mean", "mean", "mean", False), ("peak", "peak", "mean", False),
                                                         ("peak, training", "peak", "mean", True),
                                                         ("peak in training", "mean", "peak", True)):
        model, _ = _build(compact_tokenizer, reference_readout=readout, reference_readout_training=training_readout)
        model.train(train_mode)
        heads = model.qgsl.heads
        assert (heads.readout, heads.readout_training) == (readout, training_readout)
        d = model.config.decoder_hidden_size
        u = torch.zeros(d)
        u[0] = 1.0
        with torch.no_grad():  # scores = <ref_query(h), ref_key(memory)> / sqrt(d) = 40 * memory[..., 0] / sqrt(d)
            heads.ref_query.weight.zero_()
            heads.ref_query.bias.copy_(40.0 * u)
            heads.ref_key.weight.copy_(torch.eye(d))
            heads.ref_key.bias.zero_()
        mem = torch.zeros(1, 1, 16, d)
        mem[0, 0, 0] = 2.0 * u  # cell (0, 0): the top token
        mem[0, 0, 15] = 1.9 * u  # cell (3, 3): its look-alike, far away
        grid = (torch.arange(4) + 0.5) / 4
        centres = torch.stack(torch.meshgrid(grid, grid, indexing="ij")[::-1], -1).reshape(1, 1, 16, 2)
        memory = BridgeSTGSlotMemory(mem, torch.zeros_like(mem), torch.ones(1, 1, 16, dtype=torch.bool),
                                     torch.zeros(1, 1, dtype=torch.long))
        x = torch.zeros(1, 1, model.config.num_bridge_queries, d)
        with torch.no_grad():
            box, _, scores = heads(x, memory, centres, torch.full((1, 1, 2), 0.25))
        assert int(scores[0, 0].argmax()) == 0
        boxes[name] = box[0, 0]
    top = torch.tensor([0.125, 0.125])
    assert float((boxes["mean"][:2] - top).abs().max()) > 0.2  # pulled towards the look-alike at (0.875, 0.875)
    assert float((boxes["peak"][:2] - top).abs().max()) < 0.13  # within about half a cell of the top token
    torch.testing.assert_close(boxes["peak, training"], boxes["mean"])  # train mode: the training readout
    torch.testing.assert_close(boxes["peak in training"], boxes["peak"])
    for field in ("reference_readout", "reference_readout_training"):
        with pytest.raises(ValueError, match=field):
            BridgeSTGConfig(mllm_config=tiny_mllm_config("qwen2_5_vl", compact_tokenizer),
                            **tiny_bridge_kwargs(**{field: "max"}))


def test_contiguous_sampling_takes_a_run_and_its_nearest_negatives():
    labels = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, -100, -100]])
    mask = labels != -100
    for seed in range(20):
        scores = torch.rand(1, 16, generator=torch.Generator().manual_seed(seed))
        sel = sample_decoder_frames(labels, mask, torch.zeros(1, dtype=torch.long), 4, 2, scores=scores, contiguous=True)[0]
        pos = sel.nonzero().flatten()[(labels[0][sel] == 1)].tolist()
        neg = sel.nonzero().flatten()[(labels[0][sel] == 0)].tolist()
        assert len(pos) == 4 and pos == list(range(pos[0], pos[0] + 4)) and 3 <= pos[0] <= 5
        assert sorted(neg) == [2, 9]  # the negatives next to the span
    # random sampling draws any positives; tvg rows get none; without ETA every valid frame
    sel = sample_decoder_frames(labels, mask, torch.ones(1, dtype=torch.long), 4, 2)
    assert not sel.any()
    assert torch.equal(sample_decoder_frames(labels, mask, torch.zeros(1, dtype=torch.long), 4, 2, eta=False), mask)


def test_span_edges_read_a_frame_span_in_seconds(compact_tokenizer):
    times = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])  # 2 fps, the clip lasts 3 s
    assert span_seconds(times, 2, 4, 3.0) == (1.0, 2.0)  # frames 2, 3: from frame 2 to frame 4
    assert span_seconds(times, 2, 4, 3.0, "midpoint") == (0.75, 1.75)  # half-way to the frames outside
    assert span_seconds(times, 0, 6, 3.0, "midpoint") == (0.0, 3.0)  # the whole clip stays the whole clip
    assert span_seconds(times, 0, 1, 3.0, "midpoint") == (0.0, 0.25)
    assert span_seconds(times, 5, 6, 3.0, "midpoint") == (2.25, 3.0)
    with pytest.raises(ValueError, match="span_edges"):
        BridgeSTGConfig(span_edges="middle")
    # the model reads its frame-mode span with the config's rule, on the same frames
    model, processor = _build(compact_tokenizer)
    model.eval()
    frames, _ = _clip()
    inputs = processor(videos=[frames], text=["the white square"], video_fps=[4.0])
    tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    outs = {}
    for edges in ("sampled", "midpoint"):
        model.config.span_edges = edges
        outs[edges] = model.ground(**tensors, span_source="frame")
    assert torch.equal(outs["sampled"].pred_span_frames, outs["midpoint"].pred_span_frames)
    s, e = outs["sampled"].pred_span_frames[0].tolist()
    t, n = tensors["frame_timestamps"][0], int(tensors["frame_mask"][0].sum())
    assert (s, e) != (0, n)  # an inner edge, where the two rules differ
    duration = float(t[n - 1] - t[n - 2] + t[n - 1])
    for edges, out in outs.items():
        assert out.pred_span_seconds[0].tolist() == pytest.approx(span_seconds(t[:n], s, e, duration, edges))


def test_frame_evidence_lets_the_two_frames_of_a_group_differ(compact_tokenizer):
    model, processor = _build(compact_tokenizer, frame_evidence=True)
    model.eval()
    frames, _ = _clip()
    inputs = processor(videos=[frames], text=["the white square"], video_fps=[4.0])
    tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    out = model.ground(**tensors, span_source="frame")
    assert out.decoder_frame_mask.any()
    # the evidence of a frame is a function of that frame's pixels only: editing frame 2 changes the evidence of
    # slot 1 of group 0 and nothing else
    grid = [(int(h) // 2, int(w) // 2) for _, h, w in tensors["video_grid_thw"].tolist()]
    valid = torch.ones(1, len(grid), dtype=torch.bool)
    ev = model.qgsl.build_frame_evidence(tensors["pixel_values_videos"], grid, valid, grid[0][0] * grid[0][1], 2, 2)
    frames2 = frames.copy()
    frames2[2] = 255 - frames2[2]  # sampled frame 1 (2 fps of a 4 fps clip): slot 1 of group 0
    pv2 = processor(videos=[frames2], text=["the white square"], video_fps=[4.0])["pixel_values_videos"]
    ev2 = model.qgsl.build_frame_evidence(pv2, grid, valid, grid[0][0] * grid[0][1], 2, 2)
    changed = (ev - ev2).abs().flatten(3).sum(-1) > 1e-6  # (1, G, 2, M) -> any change per (group, slot, token)
    assert changed[0, 0, 1].any() and not changed[0, 0, 0].any() and not changed[0, 1:].any()
    batch = _train_batch(processor)
    features = model.mllm.model.get_video_features(batch["pixel_values_videos"], batch["video_grid_thw"], return_dict=True)
    with pytest.raises(ValueError, match="pixel_values_videos"):
        model._encode(batch["input_ids"], batch["attention_mask"], batch["mm_token_type_ids"], batch["video_grid_thw"],
                      batch["frame_timestamps"], batch["frame_mask"].bool(), video_features=features)


def test_motion_evidence_reads_each_tokens_neighbourhood_in_both_frames(compact_tokenizer):
    model, processor = _build(compact_tokenizer, motion_evidence=True)
    model.eval()
    motion = model.qgsl.motion_evidence
    cfg = model.config
    p, merge, t = cfg.patch_size, cfg.spatial_merge_size, cfg.temporal_patch_size
    # two groups of a 4x4 merged grid, rows in merge-block order: token i owns rows 4i .. 4i + 3 (merge² patches)
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(2 * 16 * merge**2, 3 * t * p * p, generator=gen)
    grid, valid = [(4, 4), (4, 4)], torch.ones(1, 2, dtype=torch.bool)
    with torch.no_grad():
        base = motion(pixels, grid, valid, 16, merge, t)
        assert base.shape == (1, 2, 16, cfg.decoder_hidden_size) and torch.isfinite(base).all()
        # the second frame of token 5 of group 0 (grid row 1, column 1) changes: only token 5 and its 8 neighbours
        # (rows 0-2, columns 0-2) of group 0 see it, group 1 does not
        edited = pixels.clone().view(-1, 3, t, p * p)
        edited[5 * merge**2: 6 * merge**2, :, 1] += 1.0
        out = motion(edited.view_as(pixels), grid, valid, 16, merge, t)
    changed = ((out - base).abs().sum(-1) > 1e-6)[0]  # (G, M)
    around = {r * 4 + c for r in range(3) for c in range(3)}
    assert set(torch.nonzero(changed[0]).flatten().tolist()) == around and not changed[1].any()
    # in the model: the feature is added to the decoder memory, trains, and needs the pixels
    batch = _train_batch(processor)
    model.train()
    out = model(**batch)
    out.loss.backward()
    assert motion.frame.weight.grad is not None and motion.frame.weight.grad.abs().sum() > 0
    model.eval()
    features = model.mllm.model.get_video_features(batch["pixel_values_videos"], batch["video_grid_thw"], return_dict=True)
    with pytest.raises(ValueError, match="motion_evidence.*pixel_values_videos"):
        model._encode(batch["input_ids"], batch["attention_mask"], batch["mm_token_type_ids"], batch["video_grid_thw"],
                      batch["frame_timestamps"], batch["frame_mask"].bool(), video_features=features)
    with pytest.raises(ValueError, match="motion_evidence"):
        _build(compact_tokenizer, motion_evidence="yes")


def _patch_rows(frames: torch.Tensor, merge: int, patch: int) -> torch.Tensor:
    """The processor's patch rows (merge-block order, values `(C, T, p, p)`) of one group's frames `(T, 3, H, W)`."""
    T, C, H, W = frames.shape
    gh, gw = H // (merge * patch), W // (merge * patch)
    x = frames.reshape(T, C, gh, merge, patch, gw, merge, patch).permute(2, 5, 3, 6, 1, 0, 4, 7)
    return x.reshape(gh * gw * merge * merge, C * T * patch * patch)


@pytest.mark.parametrize("move, axis, sign", [((6, 0), 0, 1.0), ((-6, 0), 0, -1.0), ((0, 6), 1, 1.0), ((0, -6), 1, -1.0)])
def test_flow_statistics_give_the_direction_of_a_move(move, axis, sign):
    from bridge_stg.modeling_bridge_stg import flow_statistics

    merge, patch, grid = 2, 8, 4
    side = grid * merge * patch  # 64 px, 16 px per token cell

    def frames(dx: int, dy: int, bright: bool) -> torch.Tensor:
        out = torch.full((2, 3, side, side), -1.0 if bright else 1.0)
        for t, (x, y) in enumerate([(20, 20), (20 + dx, 20 + dy)]):
            out[t, :, y: y + 20, x: x + 20] = 1.0 if bright else -1.0
        return out

    for bright in (True, False):  # the sign does not depend on the contrast
        stats = flow_statistics(_patch_rows(frames(*move, bright), merge, patch), [(grid, grid)], merge, 2, patch)
        assert stats.shape == (grid * grid, 4) and torch.isfinite(stats).all()
        moving = stats[:, 2] > 0.05  # tokens where something changes
        assert moving.any()
        along, across = stats[moving, axis] * sign, stats[moving, 1 - axis]
        assert (along > 0.3).all() and (across.abs() < along).all()
    still = flow_statistics(_patch_rows(frames(0, 0, True), merge, patch), [(grid, grid)], merge, 2, patch)
    assert still[:, :3].abs().max() == 0.0 and still[:, 3].max() > 0  # edges, nothing changes


def test_motion_flow_is_part_of_the_motion_evidence(compact_tokenizer):
    model, processor = _build(compact_tokenizer, motion_evidence=True, motion_flow=True)
    flow = model.qgsl.motion_evidence.flow
    assert flow is not None and _build(compact_tokenizer, motion_evidence=True)[0].qgsl.motion_evidence.flow is None
    out = model(**_train_batch(processor))
    out.loss.backward()
    assert flow.weight.grad is not None and flow.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="motion_flow.*motion_evidence"):
        BridgeSTGConfig(motion_flow=True)


def test_query_loss_reconstructs_the_prompts_words_from_the_bridge(compact_tokenizer):
    from bridge_stg.losses_bridge_stg import bag_of_words_loss

    # the unit: distinct masked tokens once each, mean -log p per sample, samples without tokens left out
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25, 1e-9], [0.25, 0.25, 0.25, 0.25]]))
    ids = torch.tensor([[0, 1, 1, 3], [2, 2, 3, 0]])
    mask = torch.tensor([[True, True, True, False], [False, False, False, False]])
    expected = -(math.log(0.5) + math.log(0.25)) / 2
    assert float(bag_of_words_loss(logits, ids, mask)) == pytest.approx(expected, rel=1e-5)
    assert float(bag_of_words_loss(logits, ids, torch.zeros_like(mask))) == 0.0

    model, processor = _build(compact_tokenizer, loss_query_weight=1.0)
    assert model.stsb.text_head is not None
    off, p2 = _build(compact_tokenizer)
    assert off.stsb.text_head is None and float(off(**_train_batch(p2)).loss_query.detach()) == 0.0
    batch = _train_batch(processor, query="the white square")
    out = model(**batch)
    # a fresh head is near uniform over the vocabulary
    vocab = model.mllm.get_input_embeddings().weight.shape[0]
    assert abs(float(out.loss_query) - math.log(vocab)) < 1.0
    model.zero_grad()
    out.loss_query.backward()
    assert model.stsb.text_head.weight.grad.abs().sum() > 0
    # the bag: the query's words are in it, the video / marker / bridge tokens and the answer are not
    captured = {}
    import bridge_stg.losses_bridge_stg as L

    real = L.bag_of_words_loss

    def spy(logits, token_ids, token_mask):
        captured["ids"], captured["mask"] = set(token_ids[token_mask].tolist()), token_mask.clone()
        return real(logits, token_ids, token_mask)

    L.bag_of_words_loss = spy
    try:
        model(**batch)
    finally:
        L.bag_of_words_loss = real
    tok = processor.tokenizer
    words = set(tok(" the white square", add_special_tokens=False)["input_ids"])  # as in "Query: the white square"
    cfg = model.config.mllm_config
    assert words <= captured["ids"]
    assert not captured["ids"] & {cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id,
                                  *model.config.bridge_token_ids}
    assert bool((batch["labels"] != -100).any())  # the training batch has an answer, and none of it is in the bag
    assert not bool((captured["mask"] & (batch["labels"] != -100)).any())
    # the weight enters the total loss
    with torch.no_grad():
        base = model(**batch)
    torch.testing.assert_close(base.loss, sum(getattr(model.config, f"{k}_weight") * getattr(base, k) for k in (
        "loss_lm", "loss_l1", "loss_giou", "loss_presence", "loss_relevance", "loss_contrastive", "loss_span",
        "loss_reference", "loss_query")))


def test_query_loss_distinct_tokens_keep_only_the_words_that_differ(compact_tokenizer):
    import bridge_stg.losses_bridge_stg as L

    model, processor = _build(compact_tokenizer, loss_query_weight=1.0, loss_query_tokens="distinct")
    frames, boxes = _clip()
    queries = ["the white square", "the white circle"]
    batch = processor(videos=[frames, frames], text=queries, video_fps=[4.0, 4.0], target_spans=[(4, 12)] * 2,
                      target_boxes=[{f: boxes[f] for f in range(4, 12)}] * 2, training=True)
    captured, real = {}, L.bag_of_words_loss

    def spy(logits, token_ids, token_mask):
        captured["rows"] = [set(token_ids[b][token_mask[b]].tolist()) for b in range(token_ids.shape[0])]
        return real(logits, token_ids, token_mask)

    L.bag_of_words_loss = spy
    try:
        out = model(**batch)
    finally:
        L.bag_of_words_loss = real
    tok = processor.tokenizer
    ids = [set(tok(" " + q, add_special_tokens=False)["input_ids"]) for q in queries]
    shared, own = ids[0] & ids[1], [ids[0] - ids[1], ids[1] - ids[0]]
    assert own[0] and own[1] and shared
    for b in range(2):  # each row's bag: its own words, nothing the two prompts share (template included)
        assert own[b] <= captured["rows"][b] and not captured["rows"][b] & shared
        assert not captured["rows"][b] & captured["rows"][1 - b]
    assert torch.isfinite(out.loss_query) and float(out.loss_query) > 0
    with pytest.raises(ValueError, match="loss_query_tokens"):
        _build(compact_tokenizer, loss_query_tokens="verbs")


def test_reference_query_pos_lets_the_query_positions_steer_the_box_head(compact_tokenizer):
    from bridge_stg.modeling_bridge_stg import BridgeSTGSlotMemory

    for on in (False, True):
        model, _ = _build(compact_tokenizer, reference_query_pos=on)
        heads, d = model.qgsl.heads, model.config.decoder_hidden_size
        gen = torch.Generator().manual_seed(0)
        B, S, K, M = 1, 2, 4, 16
        x, pos = torch.randn(B, S, K, d, generator=gen), torch.randn(B, S, K, d, generator=gen, requires_grad=True)
        memory = BridgeSTGSlotMemory(torch.randn(B, S, M, d, generator=gen), torch.zeros(B, S, M, d),
                                     torch.ones(B, S, M, dtype=torch.bool), torch.arange(S)[None])
        centres, cells = torch.rand(B, S, M, 2, generator=gen), torch.full((B, S, 2), 0.25)
        _, _, scores = heads(x, memory, centres, cells, None, pos)
        _, _, moved = heads(x, memory, centres, cells, None, pos + 1.0)
        assert torch.equal(scores, moved) != on  # the positions change the scores only with the option
        if on:
            scores.sum().backward()
            assert pos.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="reference_query_pos"):
        _build(compact_tokenizer, reference_query_pos=True, box_head="mlp")


@pytest.mark.parametrize("position", ["before_video", "after_video"])
def test_query_position(compact_tokenizer, position):
    """After the video, the frame states cannot see the query: only the bridging queries carry it."""
    model, processor = _build(compact_tokenizer, query_position=position)
    model.eval()
    prompt = processor.tokenizer.decode(_train_batch(processor)["input_ids"][0])
    assert (prompt.index("Query:") > prompt.index("<|vision_end|>")) == (position == "after_video")
    # the fused frame states at <|vision_end|> (read through a hook on the frame-state projection)
    seen, outs = [], []
    hook = model.stsb.frame_state_proj.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    with torch.no_grad():
        for query in ("the white square", "a red circle far away"):
            outs.append(model(**_train_batch(processor, query)))
    hook.remove()
    assert not torch.allclose(outs[0].bridge_queries, outs[1].bridge_queries)
    assert torch.allclose(seen[0], seen[1], atol=1e-6) == (position == "after_video")
    assert processor.query_position == position


def test_decoder_without_the_bridge_ignores_the_query_after_the_video(compact_tokenizer):
    """Ablation ``bridge_in_decoder=False`` with the query after the video: nothing query-dependent reaches the
    decoder, so its boxes are the same for any query; with the (normalised) bridge they differ."""
    diffs = {}
    for with_bridge in (False, True):
        model, processor = _build(compact_tokenizer, query_position="after_video", bridge_in_decoder=with_bridge,
                                  bridge_query_norm=True, decoder_init="fan_in")
        model.eval()
        every = torch.ones(1, 8, dtype=torch.bool)
        with torch.no_grad():
            a = model(**_train_batch(processor, "the white square"), decoder_frame_mask=every)
            b = model(**_train_batch(processor, "a red circle far away"), decoder_frame_mask=every)
        diffs[with_bridge] = float((a.pred_boxes - b.pred_boxes).abs().max())
    assert diffs[False] < 1e-5 and diffs[True] > 1e-3, diffs


@pytest.mark.parametrize("mode, answer", [("exact", "From 1.2s to 3.0s."), ("sampled", "From 1.5s to 3.0s.")])
def test_answer_timestamps(compact_tokenizer, mode, answer):
    """A tube of frames [5, 12) at 4 fps sampled at 2 fps (frames 0, 2, 4, …): the exact answer states the tube's
    bounds (1.25 s -> "1.2"), the sampled answer the first sampled frame inside it (frame 6, 1.5 s) and the next
    sampled frame after it (frame 12, 3.0 s), which map back to exactly the sampled frames inside the tube."""
    from bridge_stg.modeling_bridge_stg import frames_in_span

    model, processor = _build(compact_tokenizer, span_source="text", answer_timestamps=mode)
    assert processor.answer_timestamps == mode
    frames, boxes = _clip()
    batch = processor(videos=[frames], text=["the white square"], video_fps=[4.0], target_spans=[(5, 12)],
                      target_boxes=[{f: boxes[f] for f in range(5, 12)}], training=True)
    labels = batch["labels"][0]
    text = processor.tokenizer.decode(labels[labels >= 0][:-1])
    assert text == answer
    times = batch["frame_timestamps"][0]
    first, end = frames_in_span(times, *processor.parse_answer(text))
    inside = (batch["frame_labels"][0] == 1).nonzero().flatten()
    if mode == "sampled":
        assert (first, end) == (int(inside[0]), int(inside[-1]) + 1)
    with pytest.raises(ValueError, match="answer_timestamps"):
        BridgeSTGConfig(answer_timestamps="rounded")
