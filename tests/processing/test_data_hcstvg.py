"""HC-STVG v1 / v2 conversion on small hand-written files (1-based shift, caption keys, size fields)."""

from __future__ import annotations

import json
import math

import pytest

from bridge_stg.errors_bridge_stg import AnnotationError, UnsafePathError
from bridge_stg.commands.convert import main as convert_main
from bridge_stg.processing.hcstvg import convert_hcstvg

V1 = {
    "10__abc.mp4": {"bbox": [[10, 20, 30, 40], [11, 21, 30, 40], [12, 22, 30, 40]], "st_frame": 1, "ed_frame": 3,
                    "st_time": 0.0, "ed_time": 0.1, "img_num": 600, "caption": "the man in red walks", "width": 640, "height": 360},
    "11__def.mkv": {"bbox": [[0, 0, 5, 5]] * 4, "st_frame": 101, "st_time": 3.33, "ed_time": 3.5, "img_num": 500,
                    "caption": "a woman sits", "width": 320, "height": 240},
}
V2 = {
    "a.mp4": {"bbox": [[10, 10, 20, 20], [float("nan"), 10, 20, 20], [14, 10, 20, 20], [15, 10, -1, 20]],
              "st_frame": 5, "ed_frame": 8, "st_time": 0.2, "ed_time": 0.4, "img_num": 400, "English": "The man turns.",
              "img_size": [240, 320]},
    "b.mp4": {"bbox": [[300, 200, 50, 50], [301, 201, 50, 50]], "st_frame": 399, "ed_frame": 400, "st_time": 19.9, "ed_time": 20.0,
              "img_num": 400, "English": "A girl runs.", "img_size": [240, 320]},
}


def _write(tmp_path, name, data) -> str:
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return str(p)


def test_v1_one_based_shift_caption_and_size(tmp_path):
    rows, report = convert_hcstvg(_write(tmp_path, "v1.json", V1), 1, "test", progress=False)
    report.finalize({"test": rows})
    r = {x["query_id"]: x for x in rows}
    a = r["10__abc.mp4"]
    assert (a["tube_start"], a["tube_end"]) == (0, 3)  # st_frame 1 -> frame 0, half-open end = start + len(bbox)
    assert a["frame_ids"] == [0, 1, 2]
    assert a["boxes"][1] == [11.0, 21.0, 41.0, 61.0]  # [x, y, w, h] -> [x1, y1, x2, y2]
    assert (a["width"], a["height"], a["num_frames"], a["fps"]) == (640, 360, 600, 30.0)
    assert (a["segment_start"], a["segment_end"]) == (0, 600)
    assert a["query"] == "the man in red walks" and a["query_type"] is None and a["task"] == "stvg"
    assert a["video"] == "10__abc.mp4" and a["video_id"] == "10__abc"
    b = r["11__def.mkv"]
    assert (b["tube_start"], b["tube_end"], b["fps"]) == (100, 104, 25.0)
    d = report.to_dict()
    assert d["splits"]["test"]["rows"] == 2 and d["dropped_by_reason"] == {}
    # st_time 3.33 s vs (101 - 1) / 25 = 4.0 s: noted, not silently ignored
    assert d["notes_by_kind"] == {"st_time_mismatch": 1}


def test_v2_english_img_size_interpolation_and_clipping(tmp_path):
    rows, report = convert_hcstvg(_write(tmp_path, "v2.json", V2), 2, "val", progress=False)
    r = {x["query_id"]: x for x in rows}
    a = r["a.mp4"]
    assert (a["width"], a["height"]) == (320, 240)  # img_size is [height, width]
    assert a["query"] == "The man turns."
    assert (a["tube_start"], a["tube_end"]) == (4, 8)
    # NaN box at frame 5 interpolated between frames 4 and 6; the w = -1 box at the tube end has no right neighbour: removed
    assert a["frame_ids"] == [4, 5, 6]
    assert a["boxes"][1] == [12.0, 10.0, 32.0, 30.0]
    b = r["b.mp4"]
    assert (b["tube_start"], b["tube_end"]) == (398, 400)
    assert b["boxes"][0] == [300.0, 200.0, 320.0, 240.0]  # clipped to the 320x240 image
    report.finalize({"val": rows})
    d = report.to_dict()
    assert d["repaired_by_reason"] == {"boxes_clipped_to_image": 1, "boxes_interpolated": 1, "invalid_boxes_dropped": 1}
    assert all(math.isfinite(v) for row in rows for box in row["boxes"] for v in box)


def test_tube_outside_and_duplicates_are_counted(tmp_path):
    p = tmp_path / "dup.json"
    p.write_text('{"x.mp4": {"bbox": [[1,1,2,2]], "st_frame": 2, "img_num": 10, "caption": "first", "width": 8, "height": 8},'
                 ' "x.mp4": {"bbox": [[1,1,2,2]], "st_frame": 3, "img_num": 10, "caption": "second", "width": 8, "height": 8},'
                 ' "y.mp4": {"bbox": [[1,1,2,2]], "st_frame": 50, "img_num": 10, "caption": "late", "width": 8, "height": 8}}')
    rows, report = convert_hcstvg(p, 1, "train", progress=False)
    report.finalize({"train": rows})
    d = report.to_dict()
    assert [r["query"] for r in rows] == ["second"]
    assert d["splits"]["train"]["inputs"] == 3
    assert d["dropped_by_reason"] == {"duplicate_id": 1, "tube_outside_segment": 1}


def test_wrong_version_and_bad_fields_name_file_record_field(tmp_path):
    v2 = _write(tmp_path, "v2.json", V2)
    with pytest.raises(AnnotationError, match=r"v2.json: record 'a.mp4': field 'caption': missing .*HC-STVG v2"):
        convert_hcstvg(v2, 1, "test", progress=False)
    bad = dict(V1)
    bad["10__abc.mp4"] = dict(V1["10__abc.mp4"], st_frame="1")
    with pytest.raises(AnnotationError, match=r"bad.json: record '10__abc.mp4': field 'st_frame': expected int, got str"):
        convert_hcstvg(_write(tmp_path, "bad.json", bad), 1, "test", progress=False)
    bad["10__abc.mp4"] = dict(V1["10__abc.mp4"], bbox=[[1, 2, 3]])
    with pytest.raises(AnnotationError, match=r"field 'bbox\[0\]'"):
        convert_hcstvg(_write(tmp_path, "bad.json", bad), 1, "test", progress=False)
    with pytest.raises(UnsafePathError):
        convert_hcstvg(_write(tmp_path, "evil.json", {"../../etc/passwd": V1["10__abc.mp4"]}), 1, "test", progress=False)
    with pytest.raises(AnnotationError, match="version"):
        convert_hcstvg(v2, 3, "test", progress=False)


def test_cli_hcstvg_and_errors(tmp_path, capsys):
    import datasets

    out = tmp_path / "hc"
    assert convert_main(["hcstvg", "--annotations", _write(tmp_path, "v2.json", V2), "--version", "2", "--split", "val",
                         "--out", str(out), "--no-progress"]) == 0
    ds = datasets.load_dataset(str(out))
    assert ds["val"].num_rows == 2
    rep = json.loads((out / "conversion_report.json").read_text())
    assert rep["runs"][0]["report"]["source_format"] == "hcstvg-v2"
    assert "hcstvg-v2" in capsys.readouterr().out
    # a second split into the same folder is added beside the first
    assert convert_main(["hcstvg", "--annotations", _write(tmp_path, "v1.json", V1), "--version", "1", "--split", "test",
                         "--out", str(out), "--no-progress"]) == 0
    ds = datasets.load_dataset(str(out))
    assert sorted(ds) == ["test", "val"]
    assert convert_main(["hcstvg", "--annotations", _write(tmp_path, "v2b.json", V2), "--version", "1", "--split", "val",
                         "--out", str(tmp_path / "x")]) == 2
    assert "field 'caption'" in capsys.readouterr().err
    assert convert_main(["nope"]) == 2


def test_check_videos_reports_header_mismatch_and_unreadable(tmp_path):
    import numpy as np

    from bridge_stg.processing.synthetic import write_mp4

    root = tmp_path / "videos"
    write_mp4(root / "a.mp4", np.full((12, 32, 32, 3), 100, np.uint8), fps=20)  # 12 frames vs img_num 400, 32x32 vs 320x240
    (root / "b.mp4").write_bytes(b"\x00" * 100)
    rows, report = convert_hcstvg(_write(tmp_path, "v2.json", V2), 2, "val", video_root=root, check_video_headers=True, progress=False)
    report.finalize({"val": rows})
    d = report.to_dict()
    assert [r["query_id"] for r in rows] == ["a.mp4"]
    assert d["dropped_by_reason"] == {"unreadable_video": 1}
    (note,) = [n for n in d["notes"] if n["kind"] == "video_header_mismatch"]
    assert "frames 12 vs 400" in note["detail"] and "size 32x32 vs 320x240" in note["detail"]
    # without --check-videos only existence is checked: a missing file is dropped and counted
    (root / "b.mp4").unlink()
    rows, report = convert_hcstvg(_write(tmp_path, "v2.json", V2), 2, "val", video_root=root, progress=False)
    assert [d["reason"] for d in report.dropped] == ["missing_video_file"]
