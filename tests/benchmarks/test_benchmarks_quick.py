"""benchmarks/eta_tokens.py, train_throughput.py, bridge_diagnostics.py, box_readout.py, transfer.py, twin_geometry.py and identity_probe.py with --quick: they run and their
JSON last line is sane."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers_benchmarks import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


def run_quick(script: str, *extra: str) -> tuple[dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *extra], capture_output=True, text=True, timeout=180,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) >= 2, proc.stdout  # human-readable lines, then the JSON
    return json.loads(lines[-1]), proc.stdout


def check_common(out: dict[str, Any], name: str) -> None:
    assert out["benchmark"] == name and out["quick"] is True
    assert {"machine", "date", "command", "load_avg_start", "load_avg_end"} <= set(out)
    assert name in out["command"] and "--quick" in out["command"]
    assert len(out["load_avg_start"]) == 3 and len(out["load_avg_end"]) == 3


def test_eta_tokens_quick() -> None:
    out, text = run_quick("eta_tokens.py")
    check_common(out, "eta_tokens")
    assert out["threads"] == 1 and out["repeats"] == 2
    assert 0.0 < out["span_fraction"] < 1.0 and out["span_fraction_source"]
    assert list(out["results"]) == ["16"]
    r = out["results"]["16"]
    assert r["frames"] == 16 and 1 <= r["eta_frames"] < 16
    assert r["eta_frames"] == min(max(1, round(out["span_fraction"] * 16)), 16)
    assert r["tokens_per_frame"] == 16  # 112×112 frames, patch 14, merge 2
    # the span is shorter than the clip, so ETA hands the decoder fewer visual tokens and fewer FLOPs
    assert 0 < r["eta_token_reads"] < r["no_eta_token_reads"] == 16 * r["tokens_per_frame"]
    assert r["eta_token_reads"] == r["eta_frames"] * r["tokens_per_frame"]
    assert 0 < r["eta_tokens_distinct"] <= r["no_eta_tokens_distinct"] == r["mllm_visual_tokens"]
    assert 0 < r["eta_mflops"] < r["no_eta_mflops"] and r["flops_ratio"] > 1.0
    assert r["eta_decoder_ms"] > 0 and r["no_eta_decoder_ms"] > 0 and r["no_eta_ground_ms"] > 0
    assert len(r["eta_decoder_runs_ms"]) == 2 and 0 < r["decoder_share_of_ground_no_eta"] < 1.5
    q = out["qwen2_5_vl_7b_computed"]
    assert "COMPUTED" in q["label"] and q["frames"] == 64 and 0 < q["tokens_per_frame"] <= q["tokens_per_frame_max"] == 256
    assert q["eta_token_reads"] < q["no_eta_token_reads"] == 64 * q["tokens_per_frame"]
    assert 0 < q["eta_gflops"] < q["no_eta_gflops"]
    assert "F=16" in text and "COMPUTED" in text


def test_train_throughput_quick() -> None:
    out, text = run_quick("train_throughput.py")
    check_common(out, "train_throughput")
    assert out["steps"] == 3 and out["threads"] == [1] and list(out["results"]) == ["1"]
    r = out["results"]["1"]
    assert r["batch_size"] == 8 and r["torch_threads_effective"] == 1 and len(r["step_runs_s"]) == 3
    assert 0 < r["s_per_step"] < 60 and abs(r["clips_per_s"] - 8 / r["s_per_step"]) < 0.01
    assert r["data_s"] > 0 and r["model_s"] > 0 and 0 < r["data_fraction"] < 1
    assert r["render_s"] > 0 and r["process_s"] > 0 and r["forward_s"] > 0 and r["backward_s"] > 0
    assert 0 < r["max_rss_mb_after_imports"] <= r["max_rss_mb_after_build"] <= r["peak_rss_mb"] < 16 * 1024
    assert r["parameters"] > 1e6 and r["state_mb"]["adamw"] > 0
    assert "threads=1" in text


def test_bridge_diagnostics_quick() -> None:
    """Zeroing / swapping the bridging queries or the frame states, per family, on the shipped checkpoint."""
    out, text = run_quick("bridge_diagnostics.py")
    check_common(out, "bridge_diagnostics")
    assert out["clips_per_family"] == 4 and len(out["families"]) == 5
    assert set(out["results"]) == {"none", "zero_bridge", "swap_bridge", "zero_frames", "swap_frames"}
    for name, per_family in out["results"].items():
        assert set(per_family) == {*out["families"], "all"}
        for family, r in per_family.items():
            assert 0.0 <= r["m_vIoU"] <= 1.0
            if family.startswith("twins"):
                assert r["identity_accuracy"] is None or 0.0 <= r["identity_accuracy"] <= 1.0
        # the span is held fixed: every change of the decoder's input leaves m_tIoU as it is
        assert per_family["all"]["m_tIoU"] == out["results"]["none"]["all"]["m_tIoU"]
    # the decoder reads its inputs: zeroing the frame states changes the boxes
    assert out["results"]["zero_frames"]["all"]["m_vIoU"] != out["results"]["none"]["all"]["m_vIoU"]
    assert "| none |" in text and "| gt_span |" in text
    # the oracle: the ground-truth span, so every clip's tIoU is 1; the decoder ran on other frames than in "none"
    assert set(out["oracles"]) == {"gt_span", "gt_frames_sampled", "gt_frames_midpoint"}
    oracle = out["oracles"]["gt_span"]
    assert set(oracle) == {*out["families"], "all"}
    assert oracle["all"]["m_tIoU"] == 1.0 and 0.0 < oracle["all"]["m_vIoU"] <= 1.0
    assert oracle["all"]["m_vIoU"] != out["results"]["none"]["all"]["m_vIoU"]
    # the true span's sampled frames read as a span, with the true boxes: vIoU about tIoU (the 5 fps grid against
    # every frame), short of 1 (2 fps of 10 fps)
    for edges in ("sampled", "midpoint"):
        r = out["oracles"][f"gt_frames_{edges}"]["all"]
        assert 0.5 < r["m_tIoU"] < 1.0 and abs(r["m_vIoU"] - r["m_tIoU"]) < 0.05
    # the predicted spans read with span_edges="midpoint": a reading of the same boxes
    assert set(out["readings"]) == {"span_edges_midpoint"} and "| span_edges_midpoint |" in text


def test_bridge_diagnostics_oracle_decodes_the_true_span() -> None:
    """The gt_span row runs the decoder on every sampled frame inside the true span (not only those the predicted
    span shares with it), and the true-frames rows read exactly those frames."""
    import numpy as np
    import torch
    from bridge_stg import BridgeSTGForVideoGrounding, BridgeSTGProcessor
    from bridge_stg.training.demo import TEST_STREAM, demo_checkpoint_path, render_clips

    mod = load_benchmark("bridge_diagnostics")
    model = BridgeSTGForVideoGrounding.from_pretrained(demo_checkpoint_path()).eval()
    processor = BridgeSTGProcessor.from_pretrained(demo_checkpoint_path())
    clips = render_clips(TEST_STREAM, 0, 0, 2, families=("twins_event",))
    masks = []
    decoder = model._run_decoder

    def record(enc, mask):
        masks.append(mask.clone())
        return decoder(enc, mask)

    model._run_decoder = record
    rows = mod.diagnose(model, processor, clips)
    expected = torch.zeros_like(masks[-1])
    for b, clip in enumerate(clips):
        ids = processor(videos=[clip.frames], text=[clip.query], video_fps=[clip.fps]).video_metadata[0]["frame_ids"]
        for k, f in enumerate(ids):
            expected[b, k] = clip.tube_start <= f < clip.tube_end
    assert expected.any(1).all() and torch.equal(masks[-1], expected)
    for b, clip in enumerate(clips):
        assert rows["gt_span"][b]["span"] == [clip.tube_start, clip.tube_end]
        inside = [f for f in rows["gt_frames_sampled"][b]["sampled_frame_ids"] if clip.tube_start <= f < clip.tube_end]
        assert rows["gt_frames_sampled"][b]["span"][0] == inside[0]  # from the first sampled frame inside
    # the midpoint reading is what the model returns with span_edges="midpoint"
    model._run_decoder = decoder
    model.config.span_edges = "midpoint"
    from bridge_stg.evaluation import tubedetr_grid
    from bridge_stg.training.predict import ground_batch

    inputs = processor(videos=[c.frames for c in clips], text=[c.query for c in clips], video_fps=[c.fps for c in clips])
    grounded, _ = ground_batch(model, processor, inputs, [tubedetr_grid(0, c.num_frames, c.fps).tolist() for c in clips],
                               query_ids=[r["query_id"] for r in rows["none"]])
    for got, want in zip(rows["span_edges_midpoint"], grounded):
        assert got["span"] == want["span"] and got["frame_ids"] == want["frame_ids"]
        assert np.allclose(got["boxes"], want["boxes"], atol=1e-3)


def test_box_readout_quick() -> None:
    """The shipped checkpoint scored with both readouts of the box head: same spans, boxes read two ways."""
    out, text = run_quick("box_readout.py")
    check_common(out, "box_readout")
    assert out["clips"] == 10 and len(out["families"]) == 5
    (per_readout,) = out["results"].values()
    assert set(per_readout) == {"mean", "peak"}
    # the readout changes the boxes only: the spans, and so m_tIoU, are the same
    assert per_readout["mean"]["m_tIoU"] == per_readout["peak"]["m_tIoU"]
    assert per_readout["mean"]["m_vIoU"] != per_readout["peak"]["m_vIoU"]
    for r in per_readout.values():
        assert 0.0 <= r["m_vIoU"] <= 1.0 and set(r["families"]) == set(out["families"])
    assert "| peak |" in text and "| mean |" in text


def test_transfer_quick(tmp_path) -> None:
    """The four configurations train (2 steps each) and are scored on the three tasks; one JSON per run; --table."""
    out, text = run_quick("transfer.py", "--out", str(tmp_path))
    check_common(out, "transfer")
    assert out["steps"] == 2 and out["seeds"] == [0] and out["clips_per_family"] == 1 and out["missing"] == []
    assert out["configs"] == ["stvg", "stvg+tvg", "stvg+rec", "stvg+tvg+rec"]
    runs = {r["config"]: r for r in out["runs"]}
    assert set(runs) == set(out["configs"]) and not any("error" in r for r in runs.values())
    for name, r in runs.items():
        saved = json.loads((tmp_path / f"{name}_seed0.json").read_text())
        assert saved["git"]["commit"] and saved["aux_tasks"] == r["aux_tasks"] == name.split("+")[1:]
        assert saved["demo_args"]["aux_tasks"] == r["aux_tasks"] and saved["steps"] == 2
        assert set(r["stvg"]["families"]) == set(out["families"]) and len(out["families"]) == 5
        assert 0.0 <= r["stvg"]["all"]["m_vIoU"] <= 1.0 and 0.0 <= r["tvg"]["all"]["m_tIoU"] <= 1.0
        assert 0.0 <= r["rec"]["all"]["accuracy@0.5"] <= 1.0 and r["rec"]["num_queries"] == 2 and r["tvg"]["num_queries"] == 4
    for key in ("stvg_m_vIoU", "stvg_m_tIoU", "aux_tasks"):
        assert "| stvg+tvg+rec |" in out["tables"][key] and "| trivial baseline |" in out["tables"][key]
    base = out["trivial_baseline"]  # the whole clip / a centred box on the same test items
    assert base["tvg"]["all"]["R@0.3"] >= base["tvg"]["all"]["R@0.5"] >= base["tvg"]["all"]["R@0.7"]
    assert 0.0 <= base["rec"]["all"]["m_IoU"] <= 1.0 and set(base["stvg"]["families"]) == set(out["families"])
    again, _ = run_quick("transfer.py", "--out", str(tmp_path), "--table", "--losses")  # tabulates, trains nothing
    assert {k: again["tables"][k] for k in out["tables"]} == out["tables"] and again["missing"] == []
    # the auxiliary tasks' held-out loss under each run's checkpoint
    assert set(again["aux_losses"]) == {f"{c} seed 0" for c in out["configs"]}
    assert all(0.0 < v < float("inf") for run in again["aux_losses"].values() for v in run.values())
    assert "| stvg+rec |" in again["tables"]["aux_losses"] and out["aux_losses"] is None


def test_twin_geometry_quick() -> None:
    """Where the look-alikes lie on the memory grid: every twin family measured, shares in [0, 1], the same-cell share
    never above the 3x3 share."""
    out, text = run_quick("twin_geometry.py")
    check_common(out, "twin_geometry")
    assert out["clips_per_family"] == 5 and set(out["results"]) == {"twins_motion", "twins_event", "relational"}
    for r in out["results"].values():
        assert r["frames"] > 0 and 0.0 <= r["same_cell"] <= r["within_3x3"] <= 1.0
        assert r["median_centre_distance_px"] > 0 and r["median_target_width_px"] > 0
    assert "| twins_event |" in text


def test_twin_geometry_counts_cells() -> None:
    """The cell arithmetic on hand-made boxes: same cell, neighbouring cells, far apart, absent frames skipped."""
    from types import SimpleNamespace

    mod = load_benchmark("twin_geometry")
    clip = SimpleNamespace(family="twins_event",
                           boxes=[[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]],
                           twin_boxes=[[14, 14, 24, 24], [30, 0, 40, 10], [80, 80, 90, 90], [0, 0, 0, 0]])
    r = mod.twin_geometry([clip], 28.0)
    assert r["frames"] == 3  # the last frame has no twin
    assert r["same_cell"] == 1 / 3 and r["within_3x3"] == 2 / 3
    assert r["median_centre_distance_px"] == 30.0 and r["median_target_width_px"] == 10.0


def test_identity_probe_quick() -> None:
    """The probes of every twin family, trained checkpoint and untrained twin, every stage; accuracies in [0, 1]."""
    out, text = run_quick("identity_probe.py")
    check_common(out, "identity_probe")
    assert out["train_clips_per_family"] == 6 and out["test_clips_per_family"] == 3
    assert set(out["results"]) == {"trained", "untrained"}
    for per_family in out["results"].values():
        assert set(per_family) == {"twins_motion", "twins_event", "relational"}
        for family, r in per_family.items():
            assert r["train_pairs"] > 0 and r["test_pairs"] > 0
            assert set(r["identity"]) == {"vision", "vision_3x3", "memory", "memory_3x3", "flow", "flow_3x3", "box_head"}
            assert all(0.0 <= v <= 1.0 for v in r["identity"].values())
            assert ("motion" in r) == (family == "twins_motion")
            # the query's deciding word, or on twins_event the target's side of its twin
            assert set(r["query_word"]) == {"bridge", "frame_state", "decoder_query"}
            assert all(0.0 <= q["accuracy"] <= 1.0 and q["clips"] == 3 for q in r["query_word"].values())
    assert "| relational |" in text and "box_head" in text
    # the flow statistics need no weights: the trained and the untrained model read the same ones
    for key in ("identity", "motion"):
        for stage in ("flow", "flow_3x3"):
            trained, untrained = (out["results"][m]["twins_motion"][key][stage] for m in ("trained", "untrained"))
            assert trained == untrained


def test_identity_probe_helpers() -> None:
    """The probe finds a target that differs along one feature, stays near chance when nothing differs; cells,
    neighbourhoods and motion labels on hand-made inputs."""
    import numpy as np
    import torch

    mod = load_benchmark("identity_probe")
    rng = np.random.default_rng(0)

    def records(n: int, signal: float) -> list[dict]:
        out = []
        for _ in range(n):
            t, w = rng.normal(size=8), rng.normal(size=8)
            t[0] += signal
            out.append({"memory": (t, w)})
        return out

    assert mod.identity_probe(records(300, 6.0), records(200, 6.0), "memory") > 0.95
    assert 0.35 < mod.identity_probe(records(300, 0.0), records(200, 0.0), "memory") < 0.65
    assert mod.identity_probe([], records(5, 0.0), "memory") is None
    words = ["left", "right", "up"]
    clips = [{"word": words[i % 3], "bridge": np.eye(3)[i % 3] * 5 + rng.normal(size=3) * 0.1} for i in range(60)]
    q = mod.query_probe(clips[:40], clips[40:], "bridge")
    assert q["accuracy"] == 1.0 and q["clips"] == 20 and 0.3 <= q["majority"] <= 0.4
    # what decides between the twins: the query's word, or on twins_event the target's side of its twin in the span
    from types import SimpleNamespace

    event = SimpleNamespace(family="twins_event", details={}, boxes=[[50, 0, 60, 10], [52, 0, 62, 10]],
                            twin_boxes=[[20, 30, 30, 40], [22, 30, 32, 40]])
    assert mod.deciding_word(event) == "right"
    event.boxes, event.twin_boxes = event.twin_boxes, event.boxes
    assert mod.deciding_word(event) == "left"
    assert mod.deciding_word(SimpleNamespace(family="relational", details={"relation": "above"})) == "above"
    assert mod._cell([0, 0, 10, 10], 112, 112, 4, 4) == 0 and mod._cell([100, 100, 112, 112], 112, 112, 4, 4) == 15
    assert mod._cell([28, 56, 40, 60], 112, 112, 4, 4) == 2 * 4 + 1
    assert mod._motion([0, 0, 10, 10], [5, 1, 15, 11]) == "right" and mod._motion([0, 0, 10, 10], [0, -4, 10, 6]) == "up"
    assert mod._motion([0, 0, 10, 10], [0.5, 0, 10.5, 10]) == "still"
    grid = torch.arange(16, dtype=torch.float32).reshape(16, 1)  # token i has feature i
    assert mod._around(grid, 0, 4, 4).tolist() == [0, 0, 0, 0, 0, 1, 0, 4, 5]
    assert mod._around(grid, 5, 4, 4).tolist() == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    # a head that prefers whichever twin moves: right when the twin stands still, wrong when the target does
    moves = [("left", "still", 2.0, 1.0), ("still", "up", 1.0, 2.0), ("left", "right", 2.0, 1.0), ("up", "down", 1.0, 2.0)]
    split = mod.box_head_by_motion([{"motion": (a, b), "box_head": (t, w)} for a, b, t, w in moves] + [{"box_head": (1, 0)}])
    assert split == {"target_still": {"accuracy": 0.0, "pairs": 1}, "twin_still": {"accuracy": 1.0, "pairs": 1},
                     "both_moving": {"accuracy": 0.5, "pairs": 2}}
