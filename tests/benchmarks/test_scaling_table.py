"""benchmarks/scaling_table.py --quick, in-process: exact 7B parameter count and the ordering of the memory estimates."""

from __future__ import annotations

import json

import pytest
from helpers_benchmarks import load_benchmark


@pytest.fixture(scope="module")
def quick():
    return load_benchmark("scaling_table")


def test_scaling_table_quick(quick, capsys) -> None:
    result = quick.main(["--quick"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert json.loads(printed[-1])["benchmark"] == "scaling_table"  # JSON is the last stdout line
    assert "| tuning | grad ckpt | DDP | FSDP | ZeRO-2 | ZeRO-3 |" in printed

    m = result["models"]["Qwen2.5-VL-7B-Instruct"]
    p = m["params"]
    assert abs(p["mllm"] / 8.29e9 - 1) < 0.01
    assert p["llm_layer"] * 28 == p["llm_layers"] and not p["tied_embeddings"]
    assert 0 < p["stg_total"] < 0.01 * p["mllm"]
    assert p["lora_target_modules"] == 7 * 28
    assert m["sequence"]["sources"][m["sequence"]["main"]]["video_tokens"] == 8192  # 32 groups x 16 x 16

    mem = m["memory"]
    for ckpt in ("ckpt", "no_ckpt"):
        for strat in ("DDP", "FSDP", "ZeRO-2", "ZeRO-3"):
            assert mem[f"8gpu/lora/{ckpt}/{strat}"]["states_gib"] < mem[f"8gpu/full/{ckpt}/{strat}"]["states_gib"]
        for tuning in ("full", "lora"):
            t = lambda s: mem[f"8gpu/{tuning}/{ckpt}/{s}"]["total_gib"]  # noqa: E731
            assert t("ZeRO-3") < t("ZeRO-2") < t("DDP")
            assert t("FSDP") < t("DDP")
            # sharding buys nothing on one GPU
            assert mem[f"1gpu/{tuning}/{ckpt}/ZeRO-3"]["total_gib"] == mem[f"1gpu/{tuning}/{ckpt}/ZeRO-2"]["total_gib"]
    for tuning in ("full", "lora"):
        a = m["activations"]
        assert a[f"{tuning}/ckpt"]["llm"] < 0.2 * a[f"{tuning}/no_ckpt"]["llm"]
        assert mem[f"8gpu/{tuning}/ckpt/ZeRO-2"]["total_gib"] < mem[f"8gpu/{tuning}/no_ckpt/ZeRO-2"]["total_gib"]
    assert result["recipe"]["8gpu/lora/ckpt/ZeRO-2"]["total_gib"] <= result["fit_budget_gib"]


def test_query_cost_quick(capsys) -> None:
    """benchmarks/query_cost.py: one pass halves a text-span query's encoder passes and LLM tokens; N queries on one
    video share the encoder; the decoder's memory projections once per group cost less than once per frame."""
    out = load_benchmark("query_cost").main(["--quick"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["benchmark"] == "query_cost"
    (res,) = out["results"]
    rows = list(res["rows"].values())
    before, one, shared, frame_before, frame_one, text_prefix, frame_prefix = rows
    assert res["resized_hw"] == [336, 588] and res["video_tokens"] == 8064
    assert before["vit_passes"] == 2 and one["vit_passes"] == 1 and shared["vit_passes"] == 1 / 8
    assert before["llm_tokens"] == 2 * res["prompt_tokens"] + 2 * res["answer_tokens"] + res["K"]
    assert one["llm_tokens"] == res["prompt_tokens"] + res["answer_tokens"] + res["K"]
    assert before["total_tflops"] > 1.9 * one["total_tflops"] > one["total_tflops"] > shared["total_tflops"]
    assert frame_one["decoder_gflops"] < frame_before["decoder_gflops"] and frame_one["llm_tokens"] == frame_before["llm_tokens"]
    # the query after the video: 8 queries share the video prefix's prefill, so each pays about 1/8 of it
    assert frame_prefix["vit_passes"] == 1 / 8 and frame_prefix["llm_tokens"] < frame_one["llm_tokens"] / 4
    assert frame_prefix["total_tflops"] < shared["total_tflops"] / 4
    # text span mode after the video: the same sharing plus the answer's decoding steps
    assert text_prefix["llm_tokens"] == frame_prefix["llm_tokens"] + res["answer_tokens"]
    assert frame_prefix["total_tflops"] < text_prefix["total_tflops"] < shared["total_tflops"] / 4
