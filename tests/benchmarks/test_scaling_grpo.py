"""benchmarks/scaling_table.py, the GRPO rows: what each term depends on, and that the 7B GRPO LoRA recipe fits."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_benchmarks import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def table():
    return load_benchmark("scaling_table")


def test_grpo_memory_terms(table) -> None:
    import yaml

    name = "Qwen2.5-VL-7B-Instruct"
    cfg = table.build_mllm_config(name)
    p, seq = table.count_parameters(name), table.sequence(cfg)
    m = lambda strategy, tuning, n=1, **g: table.grpo_per_gpu(p, cfg, seq, strategy, tuning, n, {**table.GRPO, **g})  # noqa: E731
    lora, full = m("ZeRO-2", "lora"), m("ZeRO-2", "full")
    assert lora["reference_gib"] == 0.0 < full["reference_gib"]  # LoRA: the reference is the adapter-free base
    assert full["reference_gib"] == pytest.approx(2 * p["mllm"] / table.GIB)  # a bf16 copy of the MLLM
    assert m("DDP", "full")["reference_gib"] == pytest.approx(2 * full["reference_gib"])  # fp32 under DDP's AMP model
    assert lora["states_gib"] < full["states_gib"]
    # the phases scale with their own batch only
    assert m("ZeRO-2", "lora", generation_batch=16)["kv_cache_gib"] == pytest.approx(2 * lora["kv_cache_gib"])
    assert m("ZeRO-2", "lora", micro_batch=4)["train_activations_gib"] > 1.9 * lora["train_activations_gib"]
    assert m("ZeRO-2", "lora", tube_batch=8)["tube_reward_gib"] == pytest.approx(2 * lora["tube_reward_gib"])
    assert lora["total_gib"] == pytest.approx(lora["states_gib"] + max(lora["train_activations_gib"], lora["generation_gib"],
                                                                       lora["tube_reward_gib"]))
    # ZeRO-2 shards the optimizer: less per GPU on 8 GPUs than on 1
    assert m("ZeRO-2", "full", 8)["states_gib"] < full["states_gib"]
    # the shipped GRPO recipe: its batch settings are the table's, and it fits an 80 GB GPU
    recipe = yaml.safe_load((ROOT / "recipes" / "qwen2_5_vl_7b_vidstg_grpo_lora.yaml").read_text())
    assert recipe["per_device_train_batch_size"] == table.GRPO["micro_batch"]
    assert recipe["per_device_train_batch_size"] * recipe["steps_per_generation"] == table.GRPO["generation_batch"]
    assert recipe["num_generations"] == table.GRPO["num_generations"]
    assert recipe["max_completion_length"] == table.GRPO["completion_tokens"]
    assert recipe["tube_reward_batch_size"] == table.GRPO["tube_batch"]
    assert m("DDP", "lora")["total_gib"] <= table.HEADROOM * 80
