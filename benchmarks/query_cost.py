"""What one grounding query costs at Qwen2.5-VL-7B size, before and after one-pass inference (COMPUTED, nothing run).

    python benchmarks/query_cost.py [--quick] [--queries 8] [--source "16:9 640x360 (typical VidSTG/VidOR)"]

The sizes are those of `benchmarks/scaling_table.py` (the published 7B config, the package's video processor and
default pixel/token budgets, 64 frames at 2 fps, the same text-token allowance), so this table and docs/scaling.md's
memory tables describe the same sequence. Per query it counts:

* **vision-encoder passes and ViT patches**: before one pass, text span mode ran the encoder twice per query (once
  in `generate`, once in the bridge forward that re-encoded the prompt); now `encode_video` runs it once per
  *distinct video*, so N queries on one video share one pass (1/N per query).
* **LLM tokens processed**: before, `generate` prefilled the prompt, decoded the answer, and the bridge forward
  re-encoded prompt + answer + `<|im_end|>` + the K bridge tokens; now the bridge tokens are fed on the
  generation's cache (prompt once, answer, then 1 + K tokens). Frame span mode: one forward of prompt + K tokens
  in both.
* **FLOPs**: LLM = 2 x (parameters of the decoder layers) per token plus causal attention (4 x position x hidden per
  token and layer); ViT = 2 x (block parameters) per patch plus attention inside each temporal group (full
  attention in the `fullatt_block_indexes` blocks, 112-pixel windows elsewhere) and the merger; spatial decoder =
  `FlopCounterMode` on meta tensors of the default decoder over the ETA span (`benchmarks/eta_tokens.py`), with the
  memory projections per decoded frame (before) or per temporal group (now). The LM head runs on the answer
  tokens only (2 x vocab x hidden each).

The ETA span is the mean VidSTG tube fraction (0.40 of the clip unless `BRIDGE_STG_VIDSTG_DIR` names the real
annotations, as in `eta_tokens.py`). Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import eta_tokens  # noqa: E402
from _common import run_record  # noqa: E402
import scaling_table  # noqa: E402

MODEL = "Qwen2.5-VL-7B-Instruct"
ANSWER_TOKENS = 14  # "From 12.5s to 27.0s." + <|im_end|> with the Qwen tokenizer (digits are single tokens)
#: with the query after the video, what follows the last <|vision_end|>: the query (~20 tokens), the question (~15),
#: the turn's end and the assistant header (~5) -- the parts of scaling_table.TEXT_TOKENS_FIXED that come after the video
AFTER_VIDEO_SUFFIX_TOKENS = 40


def llm_flops(params_per_layer: int, layers: int, hidden: int, start: int, count: int) -> float:
    """FLOPs of `count` tokens at positions `start…start+count-1` through the decoder layers (causal attention)."""
    linear = 2.0 * params_per_layer * layers * count
    attention = 4.0 * hidden * layers * sum(range(start + 1, start + count + 1))
    return linear + attention


def vit_flops(spec: dict[str, Any], p: dict[str, Any], groups: int, rh: int, rw: int) -> float:
    """ViT + merger FLOPs of one pass over a clip: `groups` temporal groups of `rh x rw` pixels."""
    patch, hidden = spec["patch_size"], spec["hidden_size"]
    per_group = (rh // patch) * (rw // patch)
    window = (spec["window_size"] // patch) ** 2
    full = len(spec["fullatt_block_indexes"])
    linear = 2.0 * p["vision_block"] * spec["depth"] * per_group * groups
    attention = 4.0 * hidden * groups * per_group * (full * per_group + (spec["depth"] - full) * min(window, per_group))
    merger = 2.0 * p["vision_merger"] * per_group * groups / spec["spatial_merge_size"] ** 2
    return linear + attention + merger


def query_costs(source: str, queries: int) -> dict[str, Any]:
    cfg = scaling_table.build_mllm_config(MODEL)
    p = scaling_table.count_parameters(MODEL)
    seq = scaling_table.sequence(cfg)
    s = seq["sources"][source]
    text, vision = scaling_table.QWEN25_VL_CONFIGS[MODEL]["text"], scaling_table.QWEN25_VL_CONFIGS[MODEL]["vision"]
    L, h = text["num_hidden_layers"], text["hidden_size"]
    K = p["decoder_settings"]["num_bridge_queries"]
    prompt = s["seq_len"] - K - ANSWER_TOKENS  # the sequence of scaling_table holds the answer and the bridge tokens
    fraction, fraction_source = eta_tokens.vidstg_span_fraction()
    dec = eta_tokens.qwen7b_computed(fraction, frames=seq["frames"], height=s["source_hw"][0], width=s["source_hw"][1])
    vit = vit_flops(vision, p, seq["groups"], *s["resized_hw"])
    head = 2.0 * text["vocab_size"] * h * ANSWER_TOKENS
    prefix = prompt - AFTER_VIDEO_SUFFIX_TOKENS  # the video prefix of the after-video layout (shared by its queries)
    lf = lambda start, count: llm_flops(p["llm_layer"], L, h, start, count)  # noqa: E731
    rows = {
        "text span, before (2 encoder passes, prompt re-encoded)": dict(
            vit_passes=2.0, llm_tokens=prompt + ANSWER_TOKENS + (prompt + ANSWER_TOKENS + K),
            llm_flops=lf(0, prompt) + lf(prompt, ANSWER_TOKENS) + lf(0, prompt + ANSWER_TOKENS + K) + head,
            decoder_gflops=dec["eta_gflops_per_frame_memory"]),
        "text span, one pass": dict(
            vit_passes=1.0, llm_tokens=prompt + ANSWER_TOKENS + K,
            llm_flops=lf(0, prompt) + lf(prompt, ANSWER_TOKENS) + lf(prompt + ANSWER_TOKENS, K) + head,
            decoder_gflops=dec["eta_gflops"]),
        f"text span, one pass, {queries} queries on one video (per query)": dict(
            vit_passes=1.0 / queries, llm_tokens=prompt + ANSWER_TOKENS + K,
            llm_flops=lf(0, prompt) + lf(prompt, ANSWER_TOKENS) + lf(prompt + ANSWER_TOKENS, K) + head,
            decoder_gflops=dec["eta_gflops"]),
        "frame span, before": dict(
            vit_passes=1.0, llm_tokens=prompt + K, llm_flops=lf(0, prompt + K),
            decoder_gflops=dec["eta_gflops_per_frame_memory"]),
        "frame span, one pass": dict(
            vit_passes=1.0, llm_tokens=prompt + K, llm_flops=lf(0, prompt + K), decoder_gflops=dec["eta_gflops"]),
        f"text span, query after the video, {queries} queries share its prefill (per query)": dict(
            vit_passes=1.0 / queries, llm_tokens=round(prefix / queries) + AFTER_VIDEO_SUFFIX_TOKENS + ANSWER_TOKENS + K,
            llm_flops=lf(0, prefix) / queries + lf(prefix, AFTER_VIDEO_SUFFIX_TOKENS) + lf(prompt, ANSWER_TOKENS)
            + lf(prompt + ANSWER_TOKENS, K) + head,
            decoder_gflops=dec["eta_gflops"]),
        f"frame span, query after the video, {queries} queries share its prefill (per query)": dict(
            vit_passes=1.0 / queries, llm_tokens=round(prefix / queries) + AFTER_VIDEO_SUFFIX_TOKENS + K,
            llm_flops=lf(0, prefix) / queries + lf(prefix, AFTER_VIDEO_SUFFIX_TOKENS + K), decoder_gflops=dec["eta_gflops"]),
    }
    for r in rows.values():
        r["vit_patches"] = int(r["vit_passes"] * s["vit_patches"])
        r["vit_tflops"] = round(r["vit_passes"] * vit / 1e12, 2)
        r["llm_tflops"] = round(r.pop("llm_flops") / 1e12, 2)
        r["total_tflops"] = round(r["vit_tflops"] + r["llm_tflops"] + r["decoder_gflops"] / 1e3, 2)
    return {
        "model": MODEL, "source": source, "resized_hw": s["resized_hw"], "frames": seq["frames"],
        "video_tokens": s["video_tokens"], "prompt_tokens": prompt, "answer_tokens": ANSWER_TOKENS, "K": K,
        "eta_frames": dec["eta_frames"], "span_fraction": fraction, "span_fraction_source": fraction_source,
        "rows": rows,
    }


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"{res['model']}, {res['frames']} frames of {res['source']} -> {res['resized_hw'][0]}x{res['resized_hw'][1]}, "
        f"{res['video_tokens']} video tokens, prompt {res['prompt_tokens']} tokens, answer {res['answer_tokens']}, "
        f"K = {res['K']}, ETA span {res['eta_frames']} frames:",
        "",
        "| per query | ViT passes | ViT patches | LLM tokens | ViT TFLOPs | LLM TFLOPs | decoder GFLOPs | total TFLOPs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["rows"].items():
        lines.append(f"| {name} | {r['vit_passes']:g} | {r['vit_patches']:,} | {r['llm_tokens']:,} | {r['vit_tflops']} | "
                     f"{r['llm_tflops']} | {r['decoder_gflops']} | {r['total_tflops']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the 16:9 source only (the computation is fast either way)")
    ap.add_argument("--queries", type=int, default=8)
    args = ap.parse_args(argv)
    started, load_start = time.perf_counter(), list(os.getloadavg())
    sources = list(scaling_table.SOURCE_SIZES)
    if args.quick:
        sources = [s for s in sources if s.startswith("16:9")]
    results = [query_costs(s, args.queries) for s in sources]
    for res in results:
        print(markdown(res) + "\n")
    out = {**run_record("query_cost", args.quick, started, load_start, argv), "label": "COMPUTED (nothing measured)",
           "results": results}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
