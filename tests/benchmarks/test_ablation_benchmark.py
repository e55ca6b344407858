"""benchmarks/ablations.py --quick: trains and scores two variants (one decoupled, the coupled baseline), JSON last."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bridge_stg.training.demo import DemoModelArguments, build_demo_model

ROOT = Path(__file__).resolve().parents[2]


def test_config_overrides_reach_the_config_and_default_is_the_recipe() -> None:
    base, _ = build_demo_model(DemoModelArguments())
    assert base.config.span_source == "frame" and base.config.eta is True and base.config.bridge_num_layers == 2
    assert base.config.num_negative_frames == 2 and base.config.grounding_mode == "decoupled"
    over, proc = build_demo_model(DemoModelArguments(config_overrides={"eta": False, "grounding_mode": "coupled"}))
    assert over.config.eta is False and over.config.grounding_mode == "coupled" and proc.grounding_mode == "coupled"
    assert over.config.span_source == "frame" and over.config.max_frames == base.config.max_frames


@pytest.mark.slow
def test_ablation_quick_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ablations.py"), "--quick", "--variants", "no_eta,coupled",
         "--jobs", "1", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["benchmark"] == "ablations" and out["quick"] is True and out["steps"] == 3 and out["seeds"] == [0]
    assert {"machine", "date", "command", "load_avg_start", "load_avg_end", "tables"} <= set(out)
    runs = {r["variant"]: r for r in out["runs"]}
    assert set(runs) == {"no_eta", "coupled"} and not any("error" in r for r in runs.values())
    for r in runs.values():
        assert r["steps"] == 3 and r["num_test_clips"] == 5
        assert all(0.0 <= r["metrics"][k] <= 1.0 for k in ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5"))
    assert runs["no_eta"]["config_overrides"] == {"eta": False} and "coupled" not in runs["no_eta"]
    c = runs["coupled"]["coupled"]
    # budget: at least a full answer (span + 16 box lines of ~25 tokens with the compact tokenizer)
    assert c["max_new_tokens"] > 16 * 16
    assert 0 <= c["unparsable"] <= c["generations_with_malformed_lines"] <= runs["coupled"]["num_test_clips"]
    assert "| coupled |" in out["tables"]["seed 0"] and "| no_eta |" in out["tables"]["seed 0"]
    assert (tmp_path / "coupled_seed0" / "ablation_result.json").is_file()
    assert json.loads((tmp_path / "coupled_seed0" / "config.json").read_text())["grounding_mode"] == "coupled"
    # --resume --report-only: tabulates the finished runs, trains nothing, names the missing ones
    again = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ablations.py"), "--quick", "--variants", "no_eta,coupled,full",
         "--out-dir", str(tmp_path), "--resume", "--report-only"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    rep = json.loads(again.stdout.strip().splitlines()[-1])
    assert rep["missing"] == ["full seed 0"] and {r["variant"] for r in rep["runs"]} == {"no_eta", "coupled"}
    assert rep["runs"][0]["metrics"] == runs[rep["runs"][0]["variant"]]["metrics"]
