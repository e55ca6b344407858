"""Trainer helpers on the tiny model: parameter groups, BridgeSTGTrainer (component logs, resume), LoRA,
vision freezing, and evaluation through model.ground (Trainer compute_metrics == direct loop)."""

from __future__ import annotations

import glob
import math
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from transformers import Trainer, TrainingArguments

from bridge_stg import BridgeSTGConfig, BridgeSTGForVideoGrounding, BridgeSTGProcessor
from bridge_stg.evaluation import compute_stvg_metrics, flatten_results
from bridge_stg.processing.collator import BridgeSTGDataCollator
from bridge_stg.processing.synthetic import SyntheticSpec, write_synthetic_dataset
from bridge_stg.training.tiny import tiny_bridge_kwargs, tiny_mllm_config
from bridge_stg.training.lora import apply_lora, freeze_vision_encoder
from bridge_stg.training.predict import (
    evaluate_grounding,
    make_compute_metrics,
    predict_grounding,
    results_to_prediction_rows,
)
from bridge_stg.training.trainer import COMPONENT_LOSSES, BridgeSTGTrainer, build_optimizer_param_groups


@pytest.fixture(scope="module")
def setup(tmp_path_factory, compact_tokenizer):
    root = tmp_path_factory.mktemp("synth_train")
    write_synthetic_dataset(root, 10, seed=11, spec=SyntheticSpec(width=64, height=48, fps=10.0, num_frames=30),
                            progress=False)
    rows = [r for f in sorted(glob.glob(os.path.join(root, "data", "*.parquet"))) for r in pq.read_table(f).to_pylist()]
    # a multi-task mixture: two rows become tvg (span only)
    for r in rows[1:3]:
        r.update(task="tvg", frame_ids=[], boxes=[], query_type=None)
    config = BridgeSTGConfig(
        mllm_config=tiny_mllm_config("qwen2_5_vl", compact_tokenizer),
        bridge_token_ids=BridgeSTGProcessor(tokenizer=compact_tokenizer, num_bridge_queries=4).bridge_token_ids,
        **tiny_bridge_kwargs(),
    )
    processor = BridgeSTGProcessor.from_model_config(config, compact_tokenizer)
    return {"root": str(root), "rows": rows, "config": config, "processor": processor}


def _model(setup, seed: int = 0) -> BridgeSTGForVideoGrounding:
    torch.manual_seed(seed)
    return BridgeSTGForVideoGrounding(setup["config"])


def _args(out, **kw) -> TrainingArguments:
    base = dict(output_dir=str(out), per_device_train_batch_size=2, per_device_eval_batch_size=4, max_steps=3,
                learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                remove_unused_columns=False, seed=7, dataloader_num_workers=0, disable_tqdm=True)
    base.update(kw)
    return TrainingArguments(**base)


def test_param_groups(setup):
    model = _model(setup)
    freeze_vision_encoder(model)
    groups = build_optimizer_param_groups(model, mllm_lr=2e-5, head_lr=1e-4, weight_decay=0.05)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"mllm", "mllm_no_decay", "stg", "stg_no_decay"}
    assert by_name["mllm"]["lr"] == by_name["mllm_no_decay"]["lr"] == 2e-5
    assert by_name["stg"]["lr"] == by_name["stg_no_decay"]["lr"] == 1e-4
    assert by_name["mllm"]["weight_decay"] == by_name["stg"]["weight_decay"] == 0.05
    assert by_name["mllm_no_decay"]["weight_decay"] == by_name["stg_no_decay"]["weight_decay"] == 0.0
    ids = {name: {id(p) for p in g["params"]} for name, g in by_name.items()}
    all_ids = set().union(*ids.values())
    assert sum(len(v) for v in ids.values()) == len(all_ids)  # disjoint
    params = dict(model.named_parameters())
    trainable = {id(p) for p in params.values() if p.requires_grad}
    assert all_ids == trainable  # every trainable parameter once, no frozen one (vision tower)
    mllm = {id(p) for n, p in params.items() if n.startswith("mllm.") and p.requires_grad}
    assert ids["mllm"] | ids["mllm_no_decay"] == mllm
    inv = {id(p): n for n, p in params.items()}
    no_decay = {inv[i] for i in ids["mllm_no_decay"] | ids["stg_no_decay"]}
    decay = {inv[i] for i in ids["mllm"] | ids["stg"]}
    assert all(n.endswith(".bias") or "norm" in n or params[n].ndim < 2 for n in no_decay)
    assert "stsb.temporal_head.rel_alpha" in no_decay and "stsb.query_proj.0.weight" in no_decay  # LayerNorm
    assert "mllm.model.language_model.layers.0.input_layernorm.weight" in no_decay
    assert "mllm.model.language_model.layers.0.self_attn.q_proj.weight" in decay
    assert "qgsl.layers.0.self_attn.q_proj.weight" in decay
    assert not any(n.endswith(".bias") for n in decay)


def test_freeze_vision_encoder(setup):
    model = _model(setup)
    n = freeze_vision_encoder(model)
    visual = model.mllm.model.visual
    assert n == sum(p.numel() for p in visual.parameters()) > 0
    assert not any(p.requires_grad for p in visual.parameters())
    assert all(p.requires_grad for name, p in model.named_parameters() if not name.startswith("mllm.model.visual."))


def test_trainer_trains_both_groups_and_logs_components(setup, tmp_path):
    model = _model(setup)
    freeze_vision_encoder(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    collator = BridgeSTGDataCollator(setup["processor"], setup["root"])
    trainer = BridgeSTGTrainer(model=model, args=_args(tmp_path, gradient_accumulation_steps=2), train_dataset=setup["rows"],
                               data_collator=collator, mllm_lr=1e-4, head_lr=1e-3)
    assert trainer.model_accepts_loss_kwargs is False  # forward(**kwargs) must not disable GA loss scaling
    trainer.train()
    lrs = sorted({g["initial_lr"] for g in trainer.optimizer.param_groups})
    assert lrs == [1e-4, 1e-3]
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3
    for h in logs:
        for key in COMPONENT_LOSSES:
            assert key in h and math.isfinite(h[key]), (key, h)
        assert h["loss_l1"] > 0 and h["loss_presence"] > 0
    assert any(h["loss_lm"] > 0 for h in logs)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert any(n.startswith("mllm.model.language_model.") for n in changed)
    assert any(n.startswith("qgsl.") for n in changed) and any(n.startswith("stsb.") for n in changed)
    assert not any(n.startswith("mllm.model.visual.") for n in changed)


def test_plain_trainer_still_works(setup, tmp_path):
    model = _model(setup)
    collator = BridgeSTGDataCollator(setup["processor"], setup["root"])
    trainer = Trainer(model=model, args=_args(tmp_path, max_steps=1), train_dataset=setup["rows"], data_collator=collator)
    out = trainer.train()
    assert math.isfinite(out.training_loss) and out.training_loss > 0


def test_resume_from_checkpoint_gives_the_same_losses(setup, tmp_path):
    collator = BridgeSTGDataCollator(setup["processor"], setup["root"])

    def run(out, resume=None):
        model = _model(setup, seed=0)
        trainer = BridgeSTGTrainer(model=model, args=_args(out, max_steps=4, save_strategy="steps", save_steps=2),
                                   train_dataset=setup["rows"], data_collator=collator, head_lr=2e-3)
        trainer.train(resume_from_checkpoint=resume)
        return {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}

    full = run(tmp_path / "full")
    assert sorted(full) == [1, 2, 3, 4]
    resumed = run(tmp_path / "resumed", resume=str(tmp_path / "full" / "checkpoint-2"))
    assert sorted(resumed) == [1, 2, 3, 4]  # steps 1-2 come from the checkpoint's trainer_state
    for step in (3, 4):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6), (step, resumed, full)
    assert full[3] != full[4]  # the comparison is not between constants


def test_lora_trains_only_adapters_and_stg_modules_and_merges(setup, tmp_path):
    model = _model(setup)
    with pytest.raises(ValueError, match="suffix"):
        apply_lora(_model(setup), r=4, alpha=8, modules_to_save=["layers"])
    peft_model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable
    for n in trainable:
        is_lora = "lora_" in n and ".language_model." in n and any(t in n for t in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
        is_saved = "modules_to_save" in n and any(f".{m}." in n for m in ("stsb", "qgsl"))
        assert is_lora or is_saved, n
    assert not any("visual" in n or "qgsl.layers.0.self_attn.q_proj.lora" in n for n in trainable)
    for m in ("stsb", "qgsl"):
        assert any(f".{m}.modules_to_save." in n for n in trainable), m
    assert sum("lora_A" in n for n in trainable) == 2 * 7  # 2 LLM layers x 7 projections
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    collator = BridgeSTGDataCollator(setup["processor"], setup["root"])
    trainer = BridgeSTGTrainer(model=peft_model, args=_args(tmp_path, max_steps=2), train_dataset=setup["rows"],
                               data_collator=collator)
    trainer.train()
    changed = {n for n, p in peft_model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and changed <= set(trainable)
    assert any("lora_B" in n for n in changed) and any("modules_to_save" in n for n in changed)
    # merge: a plain BridgeSTGForVideoGrounding with the same outputs
    batch = collator(setup["rows"][:2])
    batch["decoder_frame_mask"] = batch["frame_mask"].clone()
    peft_model.eval()
    with torch.no_grad():
        ref = peft_model(**batch)
    merged = peft_model.merge_and_unload()
    assert type(merged) is BridgeSTGForVideoGrounding
    assert not any("lora_" in n or "modules_to_save" in n for n, _ in merged.named_parameters())
    merged.eval()
    with torch.no_grad():
        got = merged(**batch)
    torch.testing.assert_close(got.loss, ref.loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.pred_boxes, ref.pred_boxes, rtol=1e-4, atol=1e-5)


def test_results_to_prediction_rows():
    results = [{"span": [3, 9], "span_seconds": [0.3, 0.9], "frames": [4, 6], "boxes": [[1, 2, 3, 4], [2, 3, 4, 5]],
                "scores": [0.5, 0.7], "span_source": "frame", "eval_frame_ids": [4, 6, 8],
                "eval_boxes": [[1, 2, 3, 4], [2, 3, 4, 5], [2, 3, 4, 5]], "eval_scores": [0.5, 0.7, 0.7]}]
    meta = [{"query_id": "q", "frame_ids": [0, 4, 6, 6]}]
    rows = results_to_prediction_rows(results, meta)
    assert rows == [{"query_id": "q", "span": [3, 9], "frame_ids": [4, 6, 8],
                     "boxes": [[1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0], [2.0, 3.0, 4.0, 5.0]],
                     "scores": [0.5, 0.7, 0.7], "sampled_frame_ids": [0, 4, 6], "span_source": "frame"}]
    del results[0]["eval_frame_ids"]
    assert results_to_prediction_rows(results, meta)[0]["frame_ids"] == [4, 6]


def test_trainer_compute_metrics_matches_direct_grounding(setup, tmp_path):
    # frame mode: the random tiny LM may generate a bridge token in text mode (reported to the model owner)
    ground_kwargs = {"span_source": "frame"}
    model = _model(setup)
    refs = [r for r in setup["rows"] if r["task"] == "stvg"][:5]
    infer = BridgeSTGDataCollator(setup["processor"], setup["root"], training=False)
    trainer = BridgeSTGTrainer(
        model=model, args=_args(tmp_path), data_collator=BridgeSTGDataCollator(setup["processor"], setup["root"]),
        eval_data_collator=infer, processor=setup["processor"], ground_kwargs=ground_kwargs,
        compute_metrics=make_compute_metrics(setup["processor"], refs),
    )
    metrics = trainer.evaluate(eval_dataset=refs)
    direct = evaluate_grounding(model, infer, refs, batch_size=3, ground_kwargs=ground_kwargs)
    assert direct["protocol"] == "tubedetr" and direct["all"]["num_queries"] == len(refs)
    flat = flatten_results(direct)
    for key in ("m_tIoU", "m_vIoU", "vIoU@0.3", "m_sIoU"):
        assert 0.0 <= metrics[f"eval_{key}"] <= 1.0
        assert metrics[f"eval_{key}"] == pytest.approx(flat[key], abs=1e-6), key
    # the prediction rows are scored on the tubedetr grid and carry the sampled frames
    preds = predict_grounding(model, infer, refs[:2], batch_size=2, **ground_kwargs)
    assert [p["query_id"] for p in preds] == [r["query_id"] for r in refs[:2]]
    for p, r in zip(preds, refs):
        assert p["sampled_frame_ids"] == [0, 5, 10, 15, 20, 25]
        assert all(p["span"][0] <= f < p["span"][1] for f in p["frame_ids"])
        assert len(p["boxes"]) == len(p["frame_ids"])
    # a perfect prediction row scores 1 through the same converter path
    perfect = [{"query_id": r["query_id"], "span": [r["tube_start"], r["tube_end"]], "frame_ids": r["frame_ids"],
                "boxes": r["boxes"]} for r in refs]
    assert compute_stvg_metrics(refs, perfect, protocol="tubedetr")["all"]["m_vIoU"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="inference collator"):
        predict_grounding(model, BridgeSTGDataCollator(setup["processor"], setup["root"]), refs)
