"""`bridge-stg evaluate` (in process and once as a subprocess), the readers, and the `evaluate` module."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bridge_stg.commands.cli import main as cli_main
from bridge_stg.evaluation import METRIC_PATH, compute_stvg_metrics
from bridge_stg.evaluation.io import read_references

B = [0.0, 0.0, 10.0, 10.0]
TOL = 1e-9


def canonical_rows():
    """Example 7 of docs/evaluation.md §5: q1 Ex 1, q3 Ex 3 (declarative); q2 Ex 2, q4 Ex 4, q5 Ex 5 (interrogative)."""
    def ref(qid, seg, tube, qtype):
        return {"query_id": qid, "video_id": "v", "video": "v.mp4", "query": "x", "query_type": qtype, "task": "stvg",
                "fps": 25.0, "num_frames": seg[1], "width": 100, "height": 100, "segment_start": seg[0], "segment_end": seg[1],
                "tube_start": tube[0], "tube_end": tube[1], "frame_ids": list(range(*tube)), "boxes": [B] * (tube[1] - tube[0])}

    def pred(qid, span, boxes):
        fr = sorted(boxes)
        return {"query_id": qid, "span": list(span), "frame_ids": fr, "boxes": [boxes[f] for f in fr]}

    full = {f: B for f in range(0, 300)}
    refs = [ref("q1", (3, 54), (10, 30), "declarative"), ref("q2", (0, 51), (10, 20), "interrogative"),
            ref("q3", (0, 51), (10, 30), "declarative"), ref("q4", (0, 51), (10, 30), "interrogative"),
            ref("q5", (0, 1501), (100, 200), "interrogative")]
    preds = [pred("q1", (20, 40), {10: B, 15: B, 20: B, 25: [5, 0, 15, 10], 30: B, 35: B}),
             pred("q2", (30, 40), full), pred("q3", (0, 51), full),
             pred("q4", (10, 30), {10: B, 20: [5, 5, 5, 5], 25: [0, 0, 20, 10]}),
             pred("q5", (150, 250), full)]
    return refs, preds


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_json(capsys, *args) -> dict:
    assert cli_main(["evaluate", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_json_table_csv_plot(tmp_path, capsys):
    refs, preds = canonical_rows()
    r = write_jsonl(tmp_path / "refs.jsonl", refs)
    p = write_jsonl(tmp_path / "preds.jsonl", preds)
    csv_path, png = tmp_path / "pq.csv", tmp_path / "hist.png"
    out = run_json(capsys, "--references", r, "--predictions", p, "--per-query", csv_path, "--plot", png)
    assert out["protocol"] == "tubedetr" and set(out) >= {"all", "declarative", "interrogative", "avg_m_vIoU"}
    assert set(out["all"]) == {"m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5", "m_sIoU", "num_queries"}
    assert abs(out["avg_m_vIoU"] - 199 / 720) <= TOL
    assert abs(out["declarative"]["m_vIoU"] - 14 / 45) <= TOL and abs(out["interrogative"]["m_vIoU"] - 29 / 120) <= TOL
    assert out["references"]["format"] == "canonical-jsonl"
    assert out == {**compute_stvg_metrics(refs, preds), "references": out["references"]}
    rows = list(csv.DictReader(csv_path.open()))
    assert [row["query_id"] for row in rows] == ["q1", "q2", "q3", "q4", "q5"]
    assert abs(float(rows[0]["vIoU"]) - 2 / 9) <= TOL and rows[3]["missing_boxes"] == "1"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    # readable table
    assert cli_main(["evaluate", "--references", str(r), "--predictions", str(p)]) == 0
    table = capsys.readouterr().out
    assert "average m_vIoU" in table and "27.64" in table and "declarative" in table


def test_cli_protocols_and_parquet(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    refs, preds = canonical_rows()
    rp = tmp_path / "refs.parquet"
    pq.write_table(pa.Table.from_pylist(refs), rp)
    p = write_jsonl(tmp_path / "preds.jsonl", preds)
    td = run_json(capsys, "--references", rp, "--predictions", p)
    dense = run_json(capsys, "--references", rp, "--predictions", p, "--protocol", "dense")
    assert td["references"]["format"] == "canonical-parquet"
    assert dense["protocol"] == "dense" and dense["all"]["m_vIoU"] != td["all"]["m_vIoU"]
    assert dense == {**compute_stvg_metrics(refs, preds, "dense"), "references": dense["references"]}


def test_cli_tubedetr_format_references(tmp_path, capsys):
    # two queries on one video, TubeDETR layout: end_frame is inclusive, boxes are [x, y, w, h]
    traj = {str(f): {"bbox": [0, 0, 10, 10]} for f in range(0, 60)}
    videos = [
        {"video_id": 7, "original_video_id": "1000/abc", "target_id": 3, "qtype": "declarative", "fps": 25.0,
         "frame_count": 100, "width": 100, "height": 100, "start_frame": 3, "end_frame": 53,
         "tube_start_frame": 10, "tube_end_frame": 30, "caption": "x", "type": "person", "video_path": "1000/abc.mp4"},
        {"video_id": 8, "original_video_id": "1000/abc", "target_id": 3, "qtype": "interrogative", "fps": 25.0,
         "frame_count": 100, "width": 100, "height": 100, "start_frame": 0, "end_frame": 50,
         "tube_start_frame": 10, "tube_end_frame": 20, "caption": "y", "type": "person", "video_path": "1000/abc.mp4"},
    ]
    rf = tmp_path / "test.json"
    rf.write_text(json.dumps({"videos": videos, "trajectories": {"1000/abc": {"3": traj}}}))
    rows, info = read_references(rf)
    assert info["format"] == "tubedetr"
    assert (rows[0]["query_id"], rows[0]["segment_start"], rows[0]["segment_end"]) == ("7", 3, 54)
    assert rows[0]["boxes"][0] == B and rows[0]["frame_ids"] == list(range(10, 30))
    p = write_jsonl(tmp_path / "p.jsonl", [
        {"query_id": "7", "span": [20, 40], "frame_ids": [10, 15, 20, 25, 30, 35], "boxes": [B, B, B, [5, 0, 15, 10], B, B]},
        {"query_id": "8", "span": [30, 40], "frame_ids": list(range(0, 51)), "boxes": [B] * 51},
    ])
    out = run_json(capsys, "--references", rf, "--predictions", p)
    assert abs(out["declarative"]["m_vIoU"] - 2 / 9) <= TOL and abs(out["declarative"]["m_sIoU"] - 5 / 6) <= TOL
    assert out["interrogative"]["m_vIoU"] == 0.0 and out["interrogative"]["m_sIoU"] == 1.0
    assert abs(out["avg_m_vIoU"] - 1 / 9) <= TOL


def test_cli_raw_hcstvg_references(tmp_path, capsys):
    # Example 6: img_num 500 (fps 25), 1-based st_frame 101, 100 boxes → tube [100, 200)
    raw = {"v1.mp4": {"st_frame": 101, "ed_frame": 200, "img_num": 500, "caption": "x", "width": 100, "height": 100,
                      "bbox": [[0, 0, 10, 10]] * 100}}
    rf = tmp_path / "test_v1.json"
    rf.write_text(json.dumps(raw))
    p = write_jsonl(tmp_path / "p.jsonl", [{"query_id": "v1.mp4", "span": [150, 250], "frame_ids": list(range(100, 250)), "boxes": [B] * 150}])
    out = run_json(capsys, "--references", rf, "--predictions", p)
    assert out["references"]["format"] == "hcstvg"
    assert abs(out["all"]["m_tIoU"] - 1 / 3) <= TOL and abs(out["all"]["m_vIoU"] - 1 / 3) <= TOL
    assert out["declarative"]["num_queries"] == 0 and out["avg_m_vIoU"] is None
    p2 = write_jsonl(tmp_path / "p2.jsonl", [{"query_id": "v1.mp4", "span": [150, 250], "frame_ids": list(range(150, 250)), "boxes": [B] * 100}])
    script = run_json(capsys, "--references", rf, "--predictions", p2, "--protocol", "hcstvg")
    assert abs(script["all"]["m_tIoU"] - 50 / 150) <= TOL and abs(script["all"]["m_vIoU"] - 1 / 3) <= TOL


def test_cli_errors_exit_2_and_name_the_query(tmp_path, capsys):
    refs, preds = canonical_rows()
    r = write_jsonl(tmp_path / "refs.jsonl", refs)
    bad = write_jsonl(tmp_path / "bad.jsonl", preds + [dict(preds[0], query_id="zzz")])
    assert cli_main(["evaluate", "--references", str(r), "--predictions", str(bad)]) == 2
    assert "zzz" in capsys.readouterr().err
    nan = write_jsonl(tmp_path / "nan.jsonl", [dict(preds[0], boxes=[[0, 0, float("nan"), 1]] + preds[0]["boxes"][1:])])
    assert cli_main(["evaluate", "--references", str(r), "--predictions", str(nan)]) == 2
    err = capsys.readouterr().err
    assert "q1" in err and "non-finite" in err
    assert cli_main(["evaluate", "--references", str(tmp_path / "missing.json"), "--predictions", str(bad)]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_subprocess_reports_missing_predictions(tmp_path):
    refs, preds = canonical_rows()
    r = write_jsonl(tmp_path / "refs.jsonl", refs)
    p = write_jsonl(tmp_path / "preds.jsonl", preds[:3])
    proc = subprocess.run([sys.executable, "-m", "bridge_stg.commands.cli", "evaluate", "--references", str(r),
                           "--predictions", str(p), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["missing_predictions"] == {"count": 2, "first_ids": ["q4", "q5"]}
    assert out["all"]["num_queries"] == 5


def test_evaluate_module_matches_core(tmp_path):
    evaluate = pytest.importorskip("evaluate")
    refs, preds = canonical_rows()
    repo_dir = Path(__file__).resolve().parents[2] / "evaluation" / "stvg"
    want = compute_stvg_metrics(refs, preds)
    for path in (str(repo_dir), METRIC_PATH):
        metric = evaluate.load(path)
        assert metric.compute(predictions=preds, references=refs) == want
    # batches, a missing prediction (span None) and a null query type give the same as the core
    refs2 = [dict(refs[0], query_type=None)] + refs[1:]
    preds2 = [dict(preds[0], span=None)] + preds[1:]
    metric.add_batch(predictions=preds2[:2], references=refs2[:2])
    metric.add_batch(predictions=preds2[2:], references=refs2[2:])
    got = metric.compute(protocol="dense")
    assert got == compute_stvg_metrics(refs2, [p for p in preds2 if p["span"] is not None], "dense")
    flat = metric.compute(predictions=preds, references=refs, flat=True)
    assert flat["m_vIoU"] == want["all"]["m_vIoU"] and flat["avg_m_vIoU"] == want["avg_m_vIoU"]
    assert flat["declarative/m_vIoU"] == want["declarative"]["m_vIoU"]
