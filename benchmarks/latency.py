"""Tube-completion latency per query: Bridge-STG vs the coupled text-box baseline, same tiny backbone.

    python benchmarks/latency.py [--quick] [--frames 16,32,64] [--repeats 5] [--threads 2]

Both models are built from the same demo-sized tiny Qwen2.5-VL config (``DemoModelArguments``) and the same
seed, so the backbone weights are identical; only ``grounding_mode`` differs. One random 112×112 video of F
frames (2 fps) and one query are processed once; the timed call is ``model.ground(...)`` (vision encoder +
generation + [bridge forward + decoder] + parsing), i.e. query -> complete tube.

Fairness: the models are untrained, so generation length is forced to what a trained model would write:
Bridge-STG generates exactly the token count of the formatted span answer ("From A s to B s."), the coupled
baseline exactly the token count of its formatted answer with one box line per sampled frame (the tube
covers the whole clip), via ``min_new_tokens = max_new_tokens = n``. After one warm-up call per model and F,
each call is repeated (Bridge-STG and coupled calls alternating, so load changes hit both) and the median
reported; the number of new tokens of every timed generation is checked against the forced length. Last
stdout line: one JSON object. Use ``--threads 1`` on a shared machine (2 threads oversubscribe the cores).

Multi-query mode (``--queries 1,4,8``, on by default with F = 64; ``--quick``: 1,2 on 16 frames): N different
queries on one video through the ``video-grounding`` pipeline (the video decoded once, the vision encoder run once
and shared by every query), with ``batch_size`` 1 (one ``ground()`` per query) and ``batch_size`` N (one batched
``ground()``); the number of vision-encoder calls and of tokens the LLM processed (the prefill and every decoding
step) are counted with forward hooks, and the times are medians like above.

``--quick``: frames 16,32 only, 2 repeats (a smoke test, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import numpy as np
import torch

from bridge_stg import BridgeSTGConfig, BridgeSTGForVideoGrounding, BridgeSTGProcessor
from bridge_stg.coupled_bridge_stg import format_coupled_answer
from bridge_stg.training.demo import DemoModelArguments, build_demo_model
from _common import run_record  # benchmarks/ is on sys.path when a script runs


def build_pair(frames: int, seed: int = 0) -> tuple[BridgeSTGForVideoGrounding, BridgeSTGForVideoGrounding, BridgeSTGProcessor, BridgeSTGProcessor]:
    """The demo-sized Bridge-STG (text span mode) and the coupled baseline with the same backbone weights."""
    args = DemoModelArguments(max_frames=frames)
    bridge, _ = build_demo_model(args, seed=seed)
    cfg = bridge.config.to_dict()
    cfg.pop("model_type", None)
    cfg["span_source"] = "text"
    bridge_cfg = BridgeSTGConfig(**cfg)
    cfg["grounding_mode"] = "coupled"
    coupled_cfg = BridgeSTGConfig(**cfg)
    state = bridge.state_dict()
    models = []
    for c in (bridge_cfg, coupled_cfg):
        m = BridgeSTGForVideoGrounding(c)
        m.load_state_dict(state)
        models.append(m.eval())
    _, tok_proc = build_demo_model(args, seed=seed)
    tok = tok_proc.tokenizer
    return (models[0], models[1], BridgeSTGProcessor.from_model_config(bridge_cfg, tok),
            BridgeSTGProcessor.from_model_config(coupled_cfg, tok))


def answer_lengths(proc_b: BridgeSTGProcessor, proc_c: BridgeSTGProcessor, timestamps: list[float], duration: float) -> tuple[int, int]:
    """Token counts of a well-formed span answer and of a coupled answer with one box per sampled frame."""
    rng = np.random.default_rng(0)
    span = proc_b.format_answer(0.0, duration)
    boxes = [[*rng.uniform(0.3, 0.7, 2), *rng.uniform(0.1, 0.4, 2)] for _ in timestamps]
    coupled = format_coupled_answer(proc_c, 0.0, duration, timestamps, boxes)
    tok = proc_b.tokenizer
    return len(tok(span, add_special_tokens=False)["input_ids"]), len(tok(coupled, add_special_tokens=False)["input_ids"])


def time_interleaved(fns: dict[str, Any], repeats: int) -> dict[str, list[float]]:
    """Wall-clock seconds of ``repeats`` calls of each function after one warm-up call each; the calls alternate
    (a, b, a, b, ...) so a change of machine load during the run hits both sides alike."""
    for fn in fns.values():
        fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return out


class GenerationCounter:
    """Wraps ``model.mllm.generate`` and records how many new tokens each call produced (the check that the forced
    generation length really was generated)."""

    def __init__(self, model: BridgeSTGForVideoGrounding) -> None:
        self.counts: list[int] = []
        self._generate = model.mllm.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            out = self._generate(*args, **kwargs)
            prompt = kwargs["input_ids"].shape[1] if "input_ids" in kwargs else args[0].shape[1]
            seq = out.sequences if hasattr(out, "sequences") else out
            self.counts.append(int(seq.shape[1] - prompt))
            return out

        model.mllm.generate = generate


class CallCounter:
    """Counts vision-encoder calls and the tokens of every LLM forward (prefill and decoding steps)."""

    def __init__(self, model: BridgeSTGForVideoGrounding) -> None:
        self.vision, self.llm_tokens = 0, []
        self.handles = [
            model.mllm.model.visual.register_forward_hook(lambda *a: setattr(self, "vision", self.vision + 1)),
            model.mllm.model.language_model.register_forward_pre_hook(
                lambda m, a, kw: self.llm_tokens.append(int(kw["inputs_embeds"].shape[0] * kw["inputs_embeds"].shape[1])),
                with_kwargs=True),
        ]

    def reset(self) -> None:
        self.vision, self.llm_tokens = 0, []

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def multi_query(frames: int, counts: list[int], repeats: int, span_source: str = "text",
                query_position: str = "before_video") -> dict[str, Any]:
    """N queries on one video through the pipeline, batch_size 1 and N: times, vision calls, LLM tokens.

    ``span_source`` / ``query_position``: the model's span mode and prompt layout (with ``"after_video"`` in frame mode
    the queries of one batch share one prefill of the video prefix)."""
    from bridge_stg import VideoGroundingPipeline

    bridge, _, proc_b, _ = build_pair(frames)
    bridge.config.span_source, bridge.config.query_position = span_source, query_position
    proc_b = BridgeSTGProcessor.from_model_config(bridge.config, proc_b.tokenizer)
    video = np.random.default_rng(frames).integers(0, 255, (frames, 112, 112, 3), dtype=np.uint8)
    answer = proc_b.tokenizer(proc_b.format_answer(0.0, frames / 2.0), add_special_tokens=False)["input_ids"]
    bridge.mllm.generation_config.min_new_tokens = len(answer)  # an untrained model: force a trained answer's length
    bridge.config.max_new_tokens = len(answer)
    queries = [f"the {c} square moves" for c in ("red", "green", "blue", "yellow", "cyan", "magenta", "white", "black")]
    out: dict[str, Any] = {}
    counter = CallCounter(bridge)
    try:
        for n in counts:
            for batch in sorted({1, n}):
                pipe = VideoGroundingPipeline(model=bridge, processor=proc_b, device="cpu", batch_size=batch)
                fn = lambda: pipe(video, text=queries[:n], video_fps=2.0)  # noqa: E731
                with torch.inference_mode():
                    times = time_interleaved({"run": fn}, repeats)["run"]
                    counter.reset()
                    fn()
                out[f"{n}_queries_batch_{batch}"] = {
                    "queries": n, "batch_size": batch, "seconds": round(statistics.median(times), 4),
                    "runs_s": [round(x, 4) for x in times], "vision_encoder_calls": counter.vision,
                    "llm_forwards": len(counter.llm_tokens), "llm_tokens": sum(counter.llm_tokens),
                }
                print(f"F={frames}, {n} queries, batch_size {batch}: {statistics.median(times):.3f} s, vision encoder "
                      f"calls {counter.vision}, LLM tokens {sum(counter.llm_tokens)}", flush=True)
    finally:
        counter.close()
    one = out["1_queries_batch_1"]["seconds"]
    for entry in out.values():
        entry["cost_vs_one_query"] = round(entry["seconds"] / one, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--frames", default="16,32,64", help="tube latency vs the coupled baseline at these frame counts "
                    "('' to skip: multi-query mode only)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--queries", default="1,4,8", help="multi-query mode: query counts on one video ('' to skip)")
    ap.add_argument("--queries-frames", type=int, default=64, help="multi-query mode: frames of the video")
    ap.add_argument("--multi-span-source", choices=("text", "frame"), default="text",
                    help="multi-query mode: the span mode (default: %(default)s)")
    ap.add_argument("--multi-query-position", choices=("before_video", "after_video"), default="before_video",
                    help="multi-query mode: the prompt layout; after_video + frame shares the video's prefill "
                         "(default: %(default)s)")
    args = ap.parse_args()
    started, load_start = time.perf_counter(), list(os.getloadavg())
    torch.set_num_threads(args.threads)
    frames_list = [16, 32] if args.quick else [int(x) for x in args.frames.split(",") if x.strip()]
    repeats = 2 if args.quick else args.repeats
    results: dict[str, Any] = {}
    for F in frames_list:
        bridge, coupled, proc_b, proc_c = build_pair(F)
        video = np.random.default_rng(F).integers(0, 255, (F, 112, 112, 3), dtype=np.uint8)
        inputs = proc_b(videos=video, text="the red square moves", video_fps=2.0, frame_ids=[list(range(F))])
        tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        ts = inputs.video_metadata[0]["timestamps"]
        n_span, n_coupled = answer_lengths(proc_b, proc_c, ts, F / 2.0)
        bridge.mllm.generation_config.min_new_tokens = n_span

        def run_bridge() -> Any:
            return bridge.ground(**tensors, tokenizer=proc_b.tokenizer, max_new_tokens=n_span)

        def run_coupled() -> Any:
            return coupled.ground(**tensors, tokenizer=proc_c.tokenizer, max_new_tokens=n_coupled, min_new_tokens=n_coupled)

        count_b, count_c = GenerationCounter(bridge), GenerationCounter(coupled)
        with torch.inference_mode():
            times = time_interleaved({"bridge": run_bridge, "coupled": run_coupled}, repeats)
        tb, tc = times["bridge"], times["coupled"]
        if set(count_b.counts) != {n_span} or set(count_c.counts) != {n_coupled}:
            raise RuntimeError(f"F={F}: generated {sorted(set(count_b.counts))} / {sorted(set(count_c.counts))} new tokens, "
                               f"expected {n_span} / {n_coupled}")
        mb, mc = statistics.median(tb), statistics.median(tc)
        results[str(F)] = {
            "bridge_s": round(mb, 4), "coupled_s": round(mc, 4), "ratio": round(mc / mb, 2),
            "span_tokens": n_span, "coupled_tokens": n_coupled,
            "generated_tokens_checked": {"bridge": sorted(set(count_b.counts)), "coupled": sorted(set(count_c.counts))},
            "bridge_runs_s": [round(x, 4) for x in tb], "coupled_runs_s": [round(x, 4) for x in tc],
        }
        print(f"F={F}: bridge {mb:.3f} s ({n_span} tokens) | coupled {mc:.3f} s ({n_coupled} tokens) | ratio {mc / mb:.1f}x",
              flush=True)
    multi: dict[str, Any] = {}
    if args.queries:
        counts = [1, 2] if args.quick else [int(x) for x in args.queries.split(",")]
        multi = multi_query(16 if args.quick else args.queries_frames, counts, repeats, args.multi_span_source,
                            args.multi_query_position)
        multi["layout"] = {"span_source": args.multi_span_source, "query_position": args.multi_query_position}
    print(json.dumps({
        **run_record("latency", args.quick, started, load_start),
        "multi_query": multi, "threads": args.threads, "repeats": repeats, "results": results,
    }))


if __name__ == "__main__":
    main()
