"""benchmarks/grpo.py --quick: GRPO runs for both variants from a tiny random text-mode checkpoint, the per-run JSONs
are written (with the git commit) and reused on a rerun, and the JSON last line holds the before / after summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "grpo.py"), *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]), proc.stdout


@pytest.mark.slow
def test_grpo_benchmark_quick(tmp_path) -> None:
    out, text = _run("--quick", "--out", str(tmp_path), "--jobs", "2")  # two workers share the prompts' video files
    assert out["benchmark"] == "grpo" and out["quick"] is True and not out["missing"]
    assert {"machine", "date", "command", "load_avg_start", "load_avg_end", "git"} <= set(out)
    assert out["variants"] == ["temporal", "tube"] and out["seeds"] == [0]
    runs = {r["variant"]: r for r in out["runs"]}
    assert runs["temporal"]["rewards"] == ["format", "temporal_iou"]
    assert runs["tube"]["rewards"] == ["format", "temporal_iou", "tube_viou"] and runs["tube"]["reward_weights"] == [0.5, 1.0, 1.0]
    families = out["options"]["families"]
    for r in runs.values():
        assert set(r["after"]["families"]) == set(families) and 0.0 <= r["after"]["all"]["m_vIoU"] <= 1.0
        assert [c["step"] for c in r["curve"]] == [0, 1, 2]  # the checkpoint, then every step (--eval-every 1)
        assert r["git"]["commit"] and r["checkpoint_span_source"] == "text"
    saved = json.loads((tmp_path / "tube_seed0.json").read_text())
    assert [h["step"] for h in saved["log"]] == [1, 2] and all("kl" in h and "rewards/tube_viou/mean" in h for h in saved["log"])
    assert (tmp_path / "tube_seed0" / "checkpoint" / "model.safetensors").is_file()
    summary = out["summary"]
    assert set(summary["variants"]) == {"temporal", "tube"} and "tube - temporal m_vIoU" in summary["checks"]
    assert "| before |" in text and "| GRPO tube (format+temporal_iou+tube_viou) |" in text
    # a rerun with the same options trains nothing: it reuses the runs and before.json
    again, text2 = _run("--quick", "--out", str(tmp_path))
    assert "reused temporal seed 0" in text2 and "reused tube seed 0" in text2
    assert again["summary"] == summary
