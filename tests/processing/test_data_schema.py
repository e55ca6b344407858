"""Canonical row validator, safe video paths, TVG / REC converters, report accounting."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge_stg.errors_bridge_stg import AnnotationError, UnsafePathError
from bridge_stg.processing.multitask import convert_rec, convert_tvg
from bridge_stg.processing.paths import check_relative_path, resolve_video_path
from bridge_stg.processing.report import ConversionReport
from bridge_stg.processing.schema import FEATURES, validate_row
from bridge_stg.processing.synthetic import write_mp4
from bridge_stg.processing.writer import rows_to_table

ROW = {
    "query_id": "0", "video_id": "v", "video": "a/v.mp4", "query": "the dog", "query_type": "declarative", "task": "stvg",
    "fps": 25.0, "num_frames": 100, "width": 64, "height": 48, "segment_start": 10, "segment_end": 90,
    "tube_start": 20, "tube_end": 23, "frame_ids": [20, 22], "boxes": [[1.0, 2.0, 3.0, 4.0], [1, 2, 3, 4]],
}


def test_valid_row_and_table_roundtrip():
    validate_row(ROW)
    t = rows_to_table([ROW])
    assert t.schema.names == list(FEATURES)
    back = t.to_pylist()[0]
    assert back["video_bytes"] is None and back["target_id"] is None and back["boxes"][1] == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize(
    "change,field",
    [
        ({"tube_end": 91}, "tube_start/tube_end"),
        ({"tube_start": 23}, "tube_start/tube_end"),
        ({"segment_end": 101}, "segment_start/segment_end"),
        ({"frame_ids": [22, 20]}, "frame_ids"),
        ({"frame_ids": [20, 23]}, "frame_ids"),
        ({"boxes": [[1.0, 2.0, 3.0, 4.0]]}, "boxes"),
        ({"boxes": [[1.0, 2.0, 3.0, float("nan")], [1, 2, 3, 4]]}, "boxes"),
        ({"boxes": [[5.0, 2.0, 3.0, 4.0], [1, 2, 3, 4]]}, "boxes"),
        ({"query": "  "}, "query"),
        ({"query_type": "question"}, "query_type"),
        ({"task": "vqa"}, "task"),
        ({"fps": 0.0}, "fps"),
        ({"num_frames": 100.0}, "num_frames"),
        ({"extra": 1}, "extra"),
    ],
)
def test_invalid_rows_name_the_field(change, field):
    with pytest.raises(AnnotationError, match=rf"src: record 7: field '{field}'"):
        validate_row({**ROW, **change}, source="src", record=7)


def test_tvg_and_rec_shapes():
    validate_row({**ROW, "task": "tvg", "frame_ids": [], "boxes": [], "query_type": None})
    with pytest.raises(AnnotationError, match="tvg rows carry no boxes"):
        validate_row({**ROW, "task": "tvg"})
    with pytest.raises(AnnotationError, match="rec rows are a single frame"):
        validate_row({**ROW, "task": "rec"})


def test_resolve_video_path(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    assert resolve_video_path(root, "a/v.mp4", 3) == (root / "a" / "v.mp4").resolve()
    assert resolve_video_path(root, "a/../b.mp4", 3) == (root / "b.mp4").resolve()
    for bad in ("../../etc/passwd", "/etc/passwd", "a/../../x.mp4", "C:\\x.mp4", "", "."):
        with pytest.raises(UnsafePathError, match="row 3"):
            resolve_video_path(root, bad, 3)
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", root / "a" / "escape")
    with pytest.raises(UnsafePathError, match="row 3: .*outside the video root"):
        resolve_video_path(root, "a/escape/v.mp4", 3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["..", ".", "a", "b", "c.mp4"]), min_size=1, max_size=6))
def test_relative_paths_never_escape(parts):
    path = "/".join(parts)
    depth, escapes = 0, False
    for p in parts:
        depth += -1 if p == ".." else (0 if p == "." else 1)
        escapes |= depth < 0
    if escapes:
        with pytest.raises(UnsafePathError):
            check_relative_path(path, "r")
    else:
        assert check_relative_path(path, "r") == path


def test_report_must_balance():
    rep = ConversionReport("x")
    rep.add_inputs("test", 3)
    rep.drop("test", 0, "why")
    with pytest.raises(RuntimeError, match="does not balance"):
        rep.finalize({"test": [ROW]})
    rep.finalize({"test": [ROW, {**ROW, "query_id": "1"}]})
    assert rep.to_dict()["splits"]["test"]["dropped"] == 1


def test_tvg_lines_use_video_headers(tmp_path):
    root = tmp_path / "videos"
    write_mp4(root / "v1.mp4", np.full((30, 32, 48, 3), 120, np.uint8), fps=10)
    (root / "broken.mp4").parent.mkdir(exist_ok=True)
    (root / "broken.mp4").write_bytes(b"not a video")
    ann = tmp_path / "tvg.txt"
    ann.write_text("v1 0.5 1.24##a person opens a door\n\nv1 2.0 9.0##he leaves\nmissing 0 1##x\nbroken 0 1##y\nv1 5 6##too late\n")
    rows, report = convert_tvg(ann, "train", video_root=root, progress=False)
    report.finalize({"train": rows})
    assert [(r["tube_start"], r["tube_end"]) for r in rows] == [(5, 12), (20, 30)]
    r = rows[0]
    assert (r["fps"], r["num_frames"], r["width"], r["height"], r["task"]) == (10.0, 30, 48, 32, "tvg")
    assert r["frame_ids"] == [] and r["query"] == "a person opens a door"
    d = report.to_dict()
    assert d["splits"]["train"]["inputs"] == 5
    assert d["dropped_by_reason"] == {"missing_video_file": 1, "tube_outside_segment": 1, "unreadable_video": 1}
    assert d["repaired_by_reason"] == {"tube_clipped_to_segment": 1}
    ann.write_text("v1 0.5##no end\n")
    with pytest.raises(AnnotationError, match=r"tvg.txt: record line 1: field 'VIDEO_ID START END'"):
        convert_tvg(ann, "train", video_root=root, progress=False)


def test_rec_records(tmp_path):
    ann = tmp_path / "rec.json"
    ann.write_text(json.dumps([
        {"image": "coco/1.jpg", "width": 100, "height": 50, "sentence": "left dog", "bbox": [10, 5, 20, 10]},
        {"image": "coco/2.jpg", "width": 100, "height": 50, "sentence": "big cat", "bbox": [90, 40, 20, 20]},
        {"image": "coco/3.jpg", "width": 100, "height": 50, "sentence": "nothing", "bbox": [120, 5, 20, 10]},
    ]))
    rows, report = convert_rec(ann, "train", progress=False)
    report.finalize({"train": rows})
    assert rows[0]["boxes"] == [[10.0, 5.0, 30.0, 15.0]] and rows[0]["frame_ids"] == [0] and rows[0]["task"] == "rec"
    assert rows[1]["boxes"] == [[90.0, 40.0, 100.0, 50.0]]
    d = report.to_dict()
    assert d["dropped_by_reason"] == {"invalid_box": 1} and d["repaired_by_reason"] == {"boxes_clipped_to_image": 1}
    for r in rows:
        validate_row(r)
    ann.write_text(json.dumps([{"image": "/etc/passwd", "width": 1, "height": 1, "sentence": "x", "bbox": [0, 0, 1, 1]}]))
    with pytest.raises(UnsafePathError, match="field 'image'"):
        convert_rec(ann, "train", progress=False)
