"""A depth-faithful real-scale smoke test: the Qwen2.5-VL-7B's depth and attention layout at a small width, 64 frames
of a 640x360 clip (about 8k visual tokens), in bf16: ``ground()`` and one training step run; the answer and bridge
tokens get the positions of the training forward; the bridge fuses the last 4 of the 28 layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Qwen2_5_VLConfig

from bridge_stg import BridgeSTGConfig, BridgeSTGForVideoGrounding, BridgeSTGProcessor
from bridge_stg.processing.tokenizer import bridge_token_ids
from bridge_stg.training.tiny import special_token_ids

pytestmark = pytest.mark.slow


def _seven_b_layout(tokenizer) -> Qwen2_5_VLConfig:
    """Qwen2.5-VL-7B's text depth (28 layers), heads (28 query / 4 key-value heads), vision patch / merge / temporal
    patch / window and full-attention blocks, with the M-RoPE sections in the 7B's 16:24:24 proportion, at head
    dim 16 (width 448) instead of 128, a small FFN and a 4-block vision tower."""
    ids = special_token_ids(tokenizer)
    text = dict(hidden_size=448, intermediate_size=512, num_hidden_layers=28, num_attention_heads=28,
                num_key_value_heads=4, vocab_size=len(tokenizer), max_position_embeddings=32768,
                bos_token_id=ids["pad_token_id"], eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"],
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]})
    vision = dict(depth=4, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=448, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1, 3],
                  tokens_per_second=2)
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["image_token_id"],
                              video_token_id=ids["video_token_id"], vision_start_token_id=ids["vision_start_token_id"],
                              vision_end_token_id=ids["vision_end_token_id"])
    config.eos_token_id, config.pad_token_id = ids["eos_token_id"], ids["pad_token_id"]
    return config


def test_real_scale_ground_and_training_step_in_bf16(compact_tokenizer):
    torch.manual_seed(0)
    config = BridgeSTGConfig(
        mllm_config=_seven_b_layout(compact_tokenizer), bridge_token_ids=bridge_token_ids(compact_tokenizer, 4),
        num_bridge_queries=4, bridge_num_layers=4, decoder_layers=2, decoder_hidden_size=64, decoder_heads=4,
        decoder_ffn_dim=128, span_source="text", max_new_tokens=8,
    )
    model = BridgeSTGForVideoGrounding(config).to(torch.bfloat16)
    processor = BridgeSTGProcessor.from_model_config(config, compact_tokenizer)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (64, 360, 640, 3), dtype=np.uint8)  # 64 frames of 640x360, sampled at 2 fps
    inputs = processor(videos=[frames], text=["the person in the red shirt"], video_fps=[2.0])
    n_visual = int((inputs["input_ids"] == config.mllm_config.video_token_id).sum())
    assert inputs["frame_mask"].sum() == 64 and 7000 <= n_visual <= 8192, n_visual
    t = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    t["pixel_values_videos"] = t["pixel_values_videos"].to(torch.bfloat16)

    # the positions generation gives the answer tokens are those of the training forward over the same sequence
    seen_positions = []
    lm = model.mllm.model.language_model
    hook = lm.register_forward_pre_hook(lambda m, a, kw: seen_positions.append(kw.get("position_ids")), with_kwargs=True)
    fused_layers = []
    model.stsb.bridge_fusion.register_forward_hook(lambda m, a, o: fused_layers.append(len(a[0])))
    with torch.no_grad():
        out = model.ground(**t, tokenizer=compact_tokenizer)
    hook.remove()
    assert fused_layers == [4] and model.stsb.bridge_fusion.layer_logits.numel() == 4
    assert out.pred_span_seconds.dtype == torch.float32 and out.decoder_frame_mask.any()
    prompt_len = t["input_ids"].shape[1]
    answer = [tok for tok in compact_tokenizer(out.generated_text[0], add_special_tokens=False)["input_ids"]]
    ids, mask, types = model._append_bridge_tokens(t["input_ids"], t["attention_mask"], t["mm_token_type_ids"],
                                                   [answer + [model.im_end_token_id]])
    full = model.mllm.model.compute_3d_position_ids(input_ids=ids, inputs_embeds=None, image_grid_thw=None,
                                                    video_grid_thw=t["video_grid_thw"], cache=None, attention_mask=mask,
                                                    mm_token_type_ids=types)
    model.mllm.model.rope_deltas = None
    # (the language model may also receive a row of plain text positions first: compare the 3 M-RoPE rows)
    decode_steps = [p for p in seen_positions[1:-1] if p is not None]  # one token each, the answer's
    for step, pos in enumerate(decode_steps[: len(answer)]):
        assert torch.equal(pos[-3:, :, -1].cpu(), full[..., prompt_len + step].cpu()), step
    assert torch.equal(seen_positions[-1][-3:, :, -4:].cpu(), full[..., -4:].cpu())  # the bridge tokens

    # one training step in bf16 with float32 trainables for the bridge and decoder
    boxes = {f: [100.0, 80.0, 300.0, 260.0] for f in range(64)}
    train = processor(videos=[frames], text=["the person in the red shirt"], video_fps=[2.0], target_spans=[(10, 40)],
                      target_boxes=[boxes], training=True)
    tt = {k: v for k, v in train.items() if isinstance(v, torch.Tensor)}
    tt["pixel_values_videos"] = tt["pixel_values_videos"].to(torch.bfloat16)
    model.train()
    result = model(**tt)
    assert torch.isfinite(result.loss) and result.loss_giou.dtype == torch.float32
    result.loss.backward()
    assert model.stsb.bridge_fusion.layer_logits.grad is not None
    assert model.qgsl.layers[0].cross_attn.q_proj.weight.grad.abs().sum() > 0
