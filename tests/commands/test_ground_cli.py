"""`bridge-stg ground`: summary on stdout, a playable annotated mp4 / gif (re-decoded here), valid JSON, and
one-line errors with exit code 2 for missing / corrupt videos, empty queries and bad options."""

from __future__ import annotations

import json
import os

import av
import numpy as np
import pytest
from PIL import Image

from bridge_stg.commands import cli
from bridge_stg.evaluation.visualize import GAP, ROW, annotate_frame, box_at
from bridge_stg.model_cards.hub import save_for_hub
from helpers_grounding import check_result, synthetic_clip, tiny_model_and_processor


@pytest.fixture(scope="module")
def checkpoint(compact_tokenizer, tmp_path_factory):
    model, processor = tiny_model_and_processor(compact_tokenizer, seed=2)
    return save_for_hub(model, processor, tmp_path_factory.mktemp("cli") / "ckpt")


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli_clip") / "clip.mp4"
    return str(path), synthetic_clip(path, seed=7)


def _decode(path: str) -> list[np.ndarray]:
    with av.open(path) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and err[0].startswith("bridge-stg ground: error: ")
    return err[0]


def test_ground_writes_annotated_mp4_and_json(checkpoint, clip_file, tmp_path, capsys):
    path, clip = clip_file
    out, js = tmp_path / "annotated.mp4", tmp_path / "result.json"
    rc = cli.main(["ground", path, clip.query, "--model", checkpoint, "--output", str(out), "--json", str(js),
                   "--no_progress"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert f"query: {clip.query!r}" in stdout and "span: frames" in stdout and "tube:" in stdout
    payload = json.loads(js.read_text())
    assert payload["video_info"]["num_frames"] == clip.num_frames and payload["demo_checkpoint"] is False
    (res,) = payload["results"]
    check_result(res, clip.num_frames, clip.width, clip.height, clip.fps, clip.query)
    # playable: every source frame re-decodes, with the timeline panel below the picture
    frames = _decode(str(out))
    assert len(frames) == clip.num_frames
    assert frames[0].shape == (clip.height + GAP + ROW + GAP + (clip.height + 2 * GAP + ROW) % 2, clip.width, 3)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    # the picture itself is the source video (H.264 twice: loose tolerance) away from the drawings
    src = _decode(path)
    bottom = slice(clip.height - 30, clip.height - 2)  # below the query text; boxes may cross it, so use the median
    assert np.median(np.abs(frames[0][bottom].astype(int) - src[0][bottom].astype(int))) < 12
    # timeline: the span is drawn in the query colour, outside it the bar is grey
    s, e = res["span"][0], res["span"][1]
    row = frames[0][clip.height + GAP + ROW // 2].astype(int)
    x_in = int((s + e) / 2 / clip.num_frames * clip.width)
    assert row[x_in, 0] > 180 and row[x_in, 2] < 120, row[x_in]  # red


def test_ground_gif_and_several_queries(checkpoint, clip_file, tmp_path, capsys):
    path, clip = clip_file
    out = tmp_path / "annotated.gif"
    rc = cli.main(["ground", path, clip.query, "the blue circle", "--model", checkpoint, "--output", str(out),
                   "--no_progress", "--threshold", "0.0", "--batch_size", "2"])
    assert rc == 0
    assert capsys.readouterr().out.count("query: ") == 2
    with Image.open(out) as im:
        assert im.n_frames == clip.num_frames


def test_real_sample_video(checkpoint, sample_video_dir, tmp_path, capsys):
    path = os.path.join(sample_video_dir, "carphone_pristine.mp4")
    out = tmp_path / "carphone.mp4"
    assert cli.main(["ground", path, "the man", "--model", checkpoint, "--output", str(out), "--no_progress"]) == 0
    frames = _decode(str(out))
    assert len(frames) == 120 and frames[0].shape[1] == 176


@pytest.mark.parametrize("case", ["missing", "corrupt", "empty_query", "bad_output", "bad_model", "no_folder", "bad_fps",
                                  "odd_max_frames", "bad_threshold"])
def test_errors_are_one_line_with_exit_code_2(case, checkpoint, clip_file, tmp_path, capsys):
    path, _ = clip_file
    argv = ["ground", path, "the square", "--model", checkpoint, "--no_progress"]
    expect = None
    if case == "missing":
        argv[1], expect = str(tmp_path / "nope.mp4"), "nope.mp4: no such file"
    elif case == "corrupt":
        bad = tmp_path / "broken.mp4"
        bad.write_bytes(open(path, "rb").read()[:300])
        argv[1], expect = str(bad), "broken.mp4"
    elif case == "empty_query":
        argv[2], expect = "  ", "query 1 is empty"
    elif case == "bad_output":
        argv += ["--output", str(tmp_path / "out.avi")]
        expect = "use .mp4 or .gif"
    elif case == "bad_model":
        argv[4], expect = str(tmp_path), "no config.json"
    elif case == "bad_fps":
        argv, expect = argv + ["--sample_fps", "0"], "--sample_fps must be a positive number"
    elif case == "odd_max_frames":
        argv, expect = argv + ["--max_frames", "7"], "--max_frames must be an even integer >= 2, got 7"
    elif case == "bad_threshold":
        argv, expect = argv + ["--threshold", "1.5"], "--threshold must be a score in [0, 1]"
    else:
        argv += ["--json", str(tmp_path / "missing_dir" / "r.json")]
        expect = "does not exist"
    assert cli.main(argv) == 2
    assert expect in _one_error_line(capsys)
    assert not (tmp_path / "out.avi").exists()


def test_without_model_uses_the_demo_checkpoint_and_says_so(checkpoint, clip_file, monkeypatch, capsys):
    path, clip = clip_file
    from bridge_stg.training import demo

    monkeypatch.setattr(demo, "demo_checkpoint_path", lambda: checkpoint)
    assert cli.main(["ground", path, clip.query, "--no_progress"]) == 0
    captured = capsys.readouterr()
    assert "demo checkpoint" in captured.err and "synthetic shapes only" in captured.err
    assert "span: frames" in captured.out


def test_without_model_and_without_demo_is_a_clear_error(clip_file, monkeypatch, capsys):
    from bridge_stg.errors_bridge_stg import MissingAssetError
    from bridge_stg.training import demo

    def missing():
        raise MissingAssetError("the demo checkpoint is not installed (x); pass --model DIR")

    monkeypatch.setattr(demo, "demo_checkpoint_path", missing)
    assert cli.main(["ground", clip_file[0], "the square", "--no_progress"]) == 2
    assert "demo checkpoint is not installed" in _one_error_line(capsys)


def test_box_interpolation_and_frame_drawing():
    res = {"query": "q", "span": [2, 9], "span_seconds": [0.2, 0.9],
           "tube": [{"frame": 2, "time": 0.2, "score": 0.5, "box": {"xmin": 0, "ymin": 0, "xmax": 10, "ymax": 10}},
                    {"frame": 6, "time": 0.6, "score": 0.9, "box": {"xmin": 20, "ymin": 0, "xmax": 30, "ymax": 10}}]}
    assert box_at(res, 1) is None and box_at(res, 9) is None
    assert box_at(res, 2) == ([0, 0, 10, 10], 0.5, True)
    box, score, exact = box_at(res, 4)
    assert box == pytest.approx([10, 0, 20, 10]) and score == pytest.approx(0.7) and not exact
    assert box_at(res, 8)[0] == pytest.approx([20, 0, 30, 10])  # nearest after the last predicted frame
    res["tube"][0]["box"] = {"xmin": 40, "ymin": 40, "xmax": 60, "ymax": 55}
    img = annotate_frame(np.zeros((61, 81, 3), np.uint8), 2, [res], num_frames=10)
    assert img.shape == (61 + GAP + ROW + GAP + 1, 82, 3)  # panel below, padded to even sides
    assert tuple(img[54, 50]) == (255, 64, 64)  # bottom edge of the box (solid: a predicted frame)
    assert tuple(img[47, 50]) == (0, 0, 0)  # inside the box: untouched
    y = 61 + GAP + 2  # timeline: the span [2, 9) of 10 frames covers x 16..72 of 81
    assert tuple(img[y, 40]) == (255, 64, 64)
    assert tuple(img[y, 8]) == (70, 70, 70) and tuple(img[y, 78]) == (70, 70, 70)
