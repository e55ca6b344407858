"""VidSTG converters on the real sentence annotations with stand-in VidOR trajectories."""

from __future__ import annotations

import copy
import json
import os
from collections import Counter
from pathlib import Path

import datasets
import pytest

from bridge_stg.errors_bridge_stg import AnnotationError, UnsafePathError
from bridge_stg.processing.vidstg import convert_stcat, convert_tubedetr, convert_vidstg
from bridge_stg.processing.writer import write_dataset

import helpers_vidor as H

from conftest import VIDSTG_DIR as DATA, VIDSTG_SKIP_REASON

needs_data = pytest.mark.skipif(not (DATA / "test_annotations.json").exists(), reason=VIDSTG_SKIP_REASON)


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    """The real test sentences + full stand-in VidOR trajectories, converted once per module."""
    root = tmp_path_factory.mktemp("vidstg_test")
    entries = H.load_entries(DATA / "test_annotations.json")
    vidor = H.write_standin_vidor(entries, root / "vidor")
    rows, report = convert_vidstg(DATA / "test_annotations.json", vidor, "test", progress=False)
    return entries, vidor, rows, report, root


@needs_data
@pytest.mark.slow  # the module fixture converts the full test split (about 30 s)
def test_test_split_counts_and_report(test_split):
    entries, _, rows, report, _ = test_split
    assert len(rows) == 10303
    qt = Counter(r["query_type"] for r in rows)
    assert qt == {"declarative": 4610, "interrogative": 5693}
    report.finalize({"test": rows})
    s = report.to_dict()["splits"]["test"]
    assert (s["inputs"], s["rows"], s["dropped"], s["repaired_rows"]) == (10303, 10303, 0, 0)
    assert report.to_dict()["notes_by_kind"] == {"duplicate_entry": 223}
    # TubeDETR order and ids
    assert [r["query_id"] for r in rows] == [str(i) for i in range(10303)]
    e0 = entries[0]
    assert rows[0]["query"] == e0["questions"][0]["description"] and rows[0]["query_type"] == "interrogative"
    assert rows[1]["query"] == e0["captions"][0]["description"] and rows[1]["query_type"] == "declarative"


@needs_data
@pytest.mark.slow  # the module fixture converts the full test split (about 30 s)
def test_test_split_frame_conventions_and_boxes(test_split):
    entries, _, rows, _, _ = test_split
    by_q, i = {}, 0
    for k, e in enumerate(entries):
        for s in e["questions"] + e["captions"]:
            by_q[str(i)] = (k, e, s)
            i += 1
    at_end = set()
    for r in rows:
        k, e, s = by_q[r["query_id"]]
        assert r["segment_start"] == e["used_segment"]["begin_fid"]
        assert r["segment_end"] == e["used_segment"]["end_fid"] + 1
        assert (r["tube_start"], r["tube_end"]) == (e["temporal_gt"]["begin_fid"], e["temporal_gt"]["end_fid"])
        assert r["frame_ids"] == list(range(r["tube_start"], r["tube_end"]))
        assert r["target_id"] == s["target_id"] and r["target_type"] == s["type"] and r["video_id"] == e["vid"]
        assert r["video"] == f"{H.folder_of(e['vid'])}/{e['vid']}.mp4"
        if r["tube_end"] == r["segment_end"]:
            at_end.add(k)
    assert len(at_end) == 768  # entries whose tube ends exactly at the (half-open) segment end
    for r in rows[::997]:
        for f, b in zip(r["frame_ids"][::37], r["boxes"][::37]):
            assert b == H.standin_box(r["video_id"], r["target_id"], f, r["width"], r["height"])


@needs_data
@pytest.mark.slow  # the module fixture converts the full test split (about 30 s)
def test_written_folder_loads_with_load_dataset(test_split, tmp_path):
    _, _, rows, report, _ = test_split
    sub = rows[:300]
    rep = copy.deepcopy(report)
    rep.input_counts["test"] = 300  # a subset: declare its inputs so the report balances
    write_dataset(tmp_path / "out", {"test": sub}, rep, title="t")
    ds = datasets.load_dataset(str(tmp_path / "out"))
    assert list(ds) == ["test"] and ds["test"].num_rows == 300
    got = ds["test"][5]
    assert {k: got[k] for k in sub[5]} == sub[5]
    ds2 = datasets.load_dataset("parquet", data_files={"test": str(tmp_path / "out" / "data" / "test-*.parquet")})
    assert ds2["test"].num_rows == 300
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| test | vidstg | 300 | 300 | 0 |" in card and "segment_end" in card


@needs_data
@pytest.mark.slow  # the module fixture converts the full test split (about 30 s)
def test_tubedetr_and_stcat_formats_give_identical_rows(test_split, tmp_path):
    entries, vidor, rows, _, _ = test_split
    n_entries = 250
    sub_entries = entries[:n_entries]
    n_rows = sum(len(e["questions"]) + len(e["captions"]) for e in sub_entries)
    td = H.write_tubedetr(sub_entries, vidor, tmp_path / "test.json")
    rows_td, rep = convert_tubedetr(td, "test", progress=False)
    assert rows_td == rows[:n_rows]
    st = H.write_stcat(sub_entries, vidor, tmp_path / "vstg.json")
    rows_st, _ = convert_stcat(st, "test", bbox_annos=vidor, progress=False)
    key = lambda r: (r["video_id"], r["tube_start"], r["query"], r["query_type"], r["target_id"])  # noqa: E731
    strip = lambda r: {k: v for k, v in r.items() if k != "query_id"}  # noqa: E731
    assert sorted(map(strip, rows_st), key=key) == sorted(map(strip, rows[:n_rows]), key=key)
    # without the VidOR files STCAT's frame_count is the segment length: num_frames falls back to segment_end, reported
    rows_st2, rep2 = convert_stcat(st, "test", progress=False)
    assert all(r["num_frames"] == r["segment_end"] for r in rows_st2)
    assert any("num_frames = segment_end" in c for c in rep2.conventions)


@needs_data
@pytest.mark.slow
def test_tubedetr_format_full_test_split_identical(test_split, tmp_path):
    entries, vidor, rows, _, _ = test_split
    td = H.write_tubedetr(entries, vidor, tmp_path / "test.json")
    rows_td, rep = convert_tubedetr(td, "test", progress=False)
    assert rows_td == rows
    rep.finalize({"test": rows_td})
    assert rep.to_dict()["splits"]["test"]["by_query_type"] == {"declarative": 4610, "interrogative": 5693}


@needs_data
def test_val_counts_with_sparse_trajectories(tmp_path):
    """Val: 8,956 = 3,996 + 4,960 rows even when most tube frames lack boxes; every gap is reported."""
    entries = H.load_entries(DATA / "val_annotations.json")
    vidor = H.write_standin_vidor(entries, tmp_path / "vidor", stride=50, extra_frames=0)
    rows, report = convert_vidstg(DATA / "val_annotations.json", vidor, "val", progress=False)
    assert len(rows) == 8956
    assert Counter(r["query_type"] for r in rows) == {"declarative": 3996, "interrogative": 4960}
    report.finalize({"val": rows})
    d = report.to_dict()
    assert d["splits"]["val"]["dropped"] == 0
    gaps = d["repaired_by_reason"]["missing_tube_boxes"]
    assert gaps == sum(1 for r in rows if len(r["frame_ids"]) < r["tube_end"] - r["tube_start"])
    assert gaps > 8000
    assert d["notes_by_kind"] == {"duplicate_entry": 180}


def _mini(entries, k=3):
    return copy.deepcopy(entries[:k])


@needs_data
def test_drops_and_repairs_are_reported(tmp_path):
    entries = _mini(H.load_entries(DATA / "test_annotations.json"), 4)
    e0, e1, e2, e3 = entries
    # entry 0: tube entirely outside its segment
    e0["temporal_gt"] = {"begin_fid": e0["used_segment"]["end_fid"] + 5, "end_fid": e0["used_segment"]["end_fid"] + 9}
    e0["used_relation"]["begin_fid"], e0["used_relation"]["end_fid"] = e0["temporal_gt"]["begin_fid"], e0["temporal_gt"]["end_fid"]
    e0["frame_count"] = max(e0["frame_count"], e0["temporal_gt"]["end_fid"] + 1)
    # entry 1: tube starting before the segment -> clipped
    e1["used_segment"]["begin_fid"] = e1["temporal_gt"]["begin_fid"] + 2
    vid2, tid2 = e2["vid"], e2["captions"][0]["target_id"]
    b2 = e2["temporal_gt"]["begin_fid"]
    path = tmp_path / "s.json"
    path.write_text(json.dumps(entries))
    vidor = H.write_standin_vidor(
        entries, tmp_path / "vidor",
        omit={(vid2, tid2): {b2 + 1, b2 + 2}},
        override={(vid2, tid2, b2 + 3): [float("nan"), 1.0, 5.0, 5.0], (vid2, tid2, b2 + 4): [-5.0, -5.0, 20.0, 20.0]},
    )
    os.remove(next(vidor.rglob(f"{e3['vid']}.json")))  # entry 3: no VidOR file
    rows, report = convert_vidstg(path, vidor, "test", progress=False)
    n_in = sum(len(e["questions"]) + len(e["captions"]) for e in entries)
    report.finalize({"test": rows})
    d = report.to_dict()
    assert d["splits"]["test"]["inputs"] == n_in == len(rows) + len(report.dropped)
    n0, n3 = (len(e["questions"]) + len(e["captions"]) for e in (e0, e3))
    assert d["dropped_by_reason"] == {"tube_outside_segment": n0, "missing_vidor_annotation": n3}
    rep = d["repaired_by_reason"]
    assert rep["tube_clipped_to_segment"] == len(e1["questions"]) + len(e1["captions"])
    assert rep["missing_tube_boxes"] >= 1 and rep["invalid_boxes_dropped"] >= 1 and rep["boxes_clipped_to_image"] >= 1
    r2 = next(r for r in rows if r["video_id"] == vid2 and r["target_id"] == tid2)
    assert b2 + 1 not in r2["frame_ids"] and b2 + 3 not in r2["frame_ids"]
    assert r2["boxes"][r2["frame_ids"].index(b2 + 4)] == [0.0, 0.0, 20.0, 20.0]
    r1 = next(r for r in rows if r["video_id"] == e1["vid"])
    assert r1["tube_start"] == r1["segment_start"] == e1["used_segment"]["begin_fid"]
    # STCAT semantics on request: incomplete tubes dropped, and counted
    rows_d, rep_d = convert_vidstg(path, vidor, "test", drop_incomplete_tubes=True, progress=False)
    rep_d.finalize({"test": rows_d})
    assert rep_d.to_dict()["dropped_by_reason"]["incomplete_tube"] >= 1
    assert len(rows_d) + len(rep_d.dropped) == n_in


@needs_data
def test_bad_input_errors_name_file_record_field(tmp_path):
    entries = _mini(H.load_entries(DATA / "test_annotations.json"), 2)
    vidor = H.write_standin_vidor(entries, tmp_path / "vidor")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"vid": ')
    with pytest.raises(AnnotationError, match="bad.json: malformed JSON"):
        convert_vidstg(bad, vidor, "test", progress=False)
    e = copy.deepcopy(entries)
    del e[1]["temporal_gt"]
    bad.write_text(json.dumps(e))
    with pytest.raises(AnnotationError, match=r"bad.json: record 1 .*field 'temporal_gt': missing"):
        convert_vidstg(bad, vidor, "test", progress=False)
    e = copy.deepcopy(entries)
    e[0]["captions"][0]["target_id"] = "0"
    bad.write_text(json.dumps(e))
    with pytest.raises(AnnotationError, match=r"captions\[0\]: field 'target_id': expected int, got str"):
        convert_vidstg(bad, vidor, "test", progress=False)
    # a malformed VidOR box names the VidOR file and the trajectory entry
    vf = next(vidor.rglob(f"{entries[0]['vid']}.json"))
    doc = json.loads(vf.read_text())
    f = entries[0]["temporal_gt"]["begin_fid"]
    doc["trajectories"][f][0]["bbox"]["xmax"] = "12"
    vf.write_text(json.dumps(doc))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(entries))
    with pytest.raises(AnnotationError, match=rf"{vf.name}: record trajectories\[{f}\]\[0\].bbox: field 'xmax'"):
        convert_vidstg(good, vidor, "test", progress=False)


@needs_data
def test_unsafe_and_missing_video_paths(tmp_path):
    entries = _mini(H.load_entries(DATA / "test_annotations.json"), 2)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(entries))
    vidor = H.write_standin_vidor(entries, tmp_path / "vidor")
    vf = next(vidor.rglob(f"{entries[0]['vid']}.json"))
    doc = json.loads(vf.read_text())
    for evil in ("../../etc/passwd", "/etc/passwd"):
        doc["video_path"] = evil
        vf.write_text(json.dumps(doc))
        with pytest.raises(UnsafePathError, match="passwd"):
            convert_vidstg(path, vidor, "test", progress=False)
    # a symlink inside the root that points outside it is rejected too, naming the row
    root = tmp_path / "videos"
    (root / "0000").mkdir(parents=True)
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"x")
    (root / "0000" / "link.mp4").symlink_to(outside)
    doc["video_path"] = "0000/link.mp4"
    vf.write_text(json.dumps(doc))
    with pytest.raises(UnsafePathError, match=r"row 0: .*outside the video root"):
        convert_vidstg(path, vidor, "test", video_root=root, progress=False)
    # a missing video file drops its rows, counted
    doc["video_path"] = "0000/absent.mp4"
    vf.write_text(json.dumps(doc))
    rows, report = convert_vidstg(path, vidor, "test", video_root=root, progress=False)
    n0 = len(entries[0]["questions"]) + len(entries[0]["captions"])
    n1 = len(entries[1]["questions"]) + len(entries[1]["captions"])
    assert len(rows) == 0 and Counter(d["reason"] for d in report.dropped) == {"missing_video_file": n0 + n1}


@needs_data
def test_cli_convert_vidstg_and_tubedetr(tmp_path, capsys):
    from bridge_stg.commands.cli import main as cli_main

    entries = _mini(H.load_entries(DATA / "test_annotations.json"), 5)
    path = tmp_path / "test_annotations.json"
    path.write_text(json.dumps(entries))
    vidor = H.write_standin_vidor(entries, tmp_path / "vidor")
    n = sum(len(e["questions"]) + len(e["captions"]) for e in entries)
    assert cli_main(["convert", "vidstg", "--sentences", str(path), "--vidor", str(vidor), "--split", "test",
                     "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    assert f"test: {n} inputs -> {n} rows" in capsys.readouterr().out
    td = H.write_tubedetr(entries, vidor, tmp_path / "test.json")
    assert cli_main(["convert", "tubedetr", "--annotations", str(td), "--split", "test", "--out", str(tmp_path / "b"),
                     "--no-progress"]) == 0
    a, b = datasets.load_dataset(str(tmp_path / "a")), datasets.load_dataset(str(tmp_path / "b"))
    assert a["test"].num_rows == n and a["test"].to_list() == b["test"].to_list()
    # missing required option and an unsafe video root path give exit code 2 with a message
    assert cli_main(["convert", "vidstg", "--sentences", str(path), "--split", "test", "--out", str(tmp_path / "c")]) == 2
    assert "--vidor is required" in capsys.readouterr().err
