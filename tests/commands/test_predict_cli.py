"""``bridge-stg predict``: ``synth`` + ``predict`` + ``evaluate`` give exactly what grounding the same rows in Python
gives; resuming after an interruption or a bad video; rows of other data or another protocol refused; and the demo's
numbers reproduced from files (the demo's test clips written losslessly, so both paths see the same pixels)."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from bridge_stg.commands.cli import main as cli
from bridge_stg.commands.predict import partial_path
from bridge_stg.training.demo import demo_checkpoint_path

CHECKPOINT = demo_checkpoint_path()
#: 10 clips of 30 frames: train 1, validation 1, test 8
SYNTH = ["--num-videos", "10", "--seed", "5", "--num-frames", "30", "--train_fraction", "0.1",
         "--validation_fraction", "0.1", "--no-progress"]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _error_lines(capsys) -> list[str]:
    return [x for x in capsys.readouterr().err.strip().splitlines()
            if x.startswith("bridge-stg predict:")]


def _evaluate_json(capsys, references: Path, predictions: Path, *extra: str) -> dict:
    capsys.readouterr()
    assert cli(["evaluate", "--references", str(references), "--predictions", str(predictions), "--json", *extra]) == 0
    result = json.loads(capsys.readouterr().out)
    result.pop("references")
    return result


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("predict") / "synth"
    assert cli(["synth", "--out", str(out), *SYNTH]) == 0
    return out


@pytest.fixture(scope="module")
def direct(synth) -> dict:
    """The test split grounded in Python, the way ``bridge-stg train`` evaluates: the demo checkpoint, an inference
    collator over the folder, ``predict_grounding`` / ``evaluate_grounding`` (4 queries per call)."""
    from bridge_stg import BridgeSTGForVideoGrounding, BridgeSTGProcessor
    from bridge_stg.evaluation.io import read_dataset_split
    from bridge_stg.processing.collator import BridgeSTGDataCollator
    from bridge_stg.training.predict import evaluate_grounding, predict_grounding

    _, rows = read_dataset_split(synth, "test")
    model = BridgeSTGForVideoGrounding.from_pretrained(CHECKPOINT).eval()
    collator = BridgeSTGDataCollator(BridgeSTGProcessor.from_pretrained(CHECKPOINT), synth, training=False)
    return {"rows": rows, "predictions": predict_grounding(model, collator, rows, batch_size=4, protocol="tubedetr"),
            "metrics": evaluate_grounding(model, collator, rows, batch_size=4, protocol="tubedetr")}


def _predict(synth: Path, out: Path, *extra: str) -> int:
    return cli(["predict", "--dataset", str(synth), "--split", "test", "--model", CHECKPOINT, "--out", str(out),
                "--batch_size", "4", "--no_progress", *extra])


def test_synth_predict_evaluate_equals_direct_grounding(synth, direct, tmp_path, capsys):
    out = tmp_path / "preds.jsonl"
    assert _predict(synth, out) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "8 predictions (8 new, 0 kept)" in printed and "--protocol tubedetr" in printed
    assert _read_jsonl(out) == direct["predictions"]  # the rows, in dataset order, exactly
    assert not partial_path(out).exists()
    got = _evaluate_json(capsys, synth, out, "--split", "test")
    assert got == direct["metrics"]
    assert got["all"]["num_queries"] == 8 and got["missing_predictions"]["count"] == 0
    assert 0 < got["all"]["m_tIoU"] < 1  # a trained checkpoint: the numbers compared are not trivial
    # boxes on every frame the protocol scores inside the predicted span
    from bridge_stg.training.predict import eval_frame_ids_for

    for row, grid in zip(_read_jsonl(out), eval_frame_ids_for(direct["rows"], "tubedetr")):
        assert row["frame_ids"] == [f for f in grid if row["span"][0] <= f < row["span"][1]]


def test_predict_resumes_after_an_interruption(synth, direct, tmp_path, capsys, monkeypatch):
    from bridge_stg.training import predict as predict_module

    real, calls = predict_module.predict_grounding, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "preds.jsonl"
    monkeypatch.setattr(predict_module, "predict_grounding", interrupted)
    assert _predict(synth, out) == 130
    assert any("interrupted: 4 of 8 queries are saved" in x for x in _error_lines(capsys))
    assert not out.exists() and _read_jsonl(partial_path(out)) == direct["predictions"][:4]
    monkeypatch.setattr(predict_module, "predict_grounding", real)
    assert _predict(synth, out) == 0
    assert "8 predictions (4 new, 4 kept)" in capsys.readouterr().out
    assert _read_jsonl(out) == direct["predictions"] and not partial_path(out).exists()
    before = out.stat().st_mtime_ns
    assert _predict(synth, out) == 0  # complete: nothing to do, the file is left alone
    assert "already holds the predictions of all 8 queries" in capsys.readouterr().out
    assert out.stat().st_mtime_ns == before


def test_predict_stops_at_an_unreadable_video_and_continues_once_fixed(synth, direct, tmp_path, capsys):
    data = tmp_path / "synth"
    shutil.copytree(synth, data)
    bad = direct["rows"][5]
    video = data / bad["video"]
    good = video.read_bytes()
    video.write_bytes(good[:200])  # truncated: no decodable frame, never replaced by blank frames
    out = tmp_path / "preds.jsonl"
    assert _predict(data, out) == 2
    (line,) = _error_lines(capsys)
    assert bad["query_id"] in line and "4 of 8 queries are saved in" in line and "Traceback" not in line
    assert _read_jsonl(partial_path(out)) == direct["predictions"][:4]
    video.write_bytes(good)
    assert _predict(data, out) == 0
    assert _read_jsonl(out) == direct["predictions"]


def test_predict_never_follows_a_video_out_of_the_data_root(synth, direct, tmp_path, capsys):
    data = tmp_path / "synth"
    shutil.copytree(synth, data)
    bad = direct["rows"][0]
    outside = tmp_path / "elsewhere.mp4"
    (data / bad["video"]).rename(outside)
    (data / bad["video"]).symlink_to(outside)  # inside the folder, pointing out of it
    out = tmp_path / "preds.jsonl"
    assert _predict(data, out) == 2
    (line,) = _error_lines(capsys)
    assert bad["query_id"] in line and "outside the video root" in line
    assert not out.exists() and not partial_path(out).exists()  # nothing grounded, nothing left behind
    assert _predict(data, out, "--model", str(tmp_path)) == 2  # the last --model wins: not a checkpoint
    assert "no config.json" in _error_lines(capsys)[0]


def test_predict_refuses_rows_of_other_data_or_protocol(synth, direct, tmp_path, capsys):
    out = tmp_path / "preds.jsonl"
    foreign = dict(direct["predictions"][0], query_id="someone_else")
    out.write_text(json.dumps(foreign) + "\n")
    assert _predict(synth, out) == 2
    (line,) = _error_lines(capsys)
    assert "line 1: query_id 'someone_else' is not a query of" in line and "--overwrite" in line
    assert _read_jsonl(out) == [foreign]  # untouched
    moved = json.loads(json.dumps(direct["predictions"][0]))
    moved["frame_ids"][0] += 1  # a frame the 5 fps grid does not hold: written for another protocol
    out.write_text(json.dumps(moved) + "\n")
    assert _predict(synth, out) == 2
    assert "another --protocol" in _error_lines(capsys)[0]
    assert _predict(synth, out, "--overwrite") == 0
    assert _read_jsonl(out) == direct["predictions"]


def test_predict_never_writes_onto_its_input(synth, tmp_path, capsys):
    shard = synth / "data" / "test-00000-of-00001.parquet"
    before = shard.read_bytes()
    assert _predict(synth, shard, "--overwrite") == 2
    assert "is an input" in _error_lines(capsys)[0]
    assert _predict(synth, tmp_path) == 2
    assert "is a folder" in _error_lines(capsys)[0]
    assert cli(["predict", "--dataset", str(synth), "--model", CHECKPOINT, "--out", str(tmp_path / "p.jsonl")]) == 2
    assert "choose one with --split" in _error_lines(capsys)[0]
    assert shard.read_bytes() == before


def _write_lossless_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """RGB frames as lossless H.264 (libx264rgb, qp 0): decoding gives the same pixels back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264rgb", rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        s.options = {"qp": "0", "preset": "ultrafast"}
        for img in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def test_predict_reproduces_the_demo_from_files(tmp_path, capsys):
    """`bridge-stg demo` grounds clips rendered in memory; written as a dataset folder with the same pixels (lossless
    video: synth's H.264 would change them) and the demo's own reference rows, `predict` + `evaluate` give the demo's
    predictions and metrics exactly, with the same checkpoint."""
    from bridge_stg.processing.report import ConversionReport
    from bridge_stg.processing.writer import write_dataset
    from bridge_stg.training.demo import DEMO_FAMILIES, TEST_STREAM, reference_rows, render_clips

    n = 4
    demo_out = tmp_path / "demo_out"
    assert cli(["demo", "--out", str(demo_out), "--num-clips", str(n), "--threads", "1", "--no-progress"]) == 0
    clips = render_clips(TEST_STREAM, 0, 0, n, families=DEMO_FAMILIES)  # the clips run_demo renders (seed 0)
    refs = reference_rows(clips, "test")
    assert _read_jsonl(demo_out / "references.jsonl") == refs
    data = tmp_path / "demo_clips"
    report = ConversionReport("demo-test-stream", {"seed": 0, "num_clips": n})
    for clip, ref in zip(clips, refs):
        _write_lossless_mp4(data / ref["video"], clip.frames, clip.fps)
        report.add_inputs("test")
    write_dataset(data, {"test": refs}, report, title="the demo's test clips")
    preds = tmp_path / "preds.jsonl"
    assert cli(["predict", "--dataset", str(data), "--model", CHECKPOINT, "--out", str(preds), "--batch_size", "16",
                "--no_progress"]) == 0
    assert _read_jsonl(preds) == _read_jsonl(demo_out / "predictions.jsonl")
    got = _evaluate_json(capsys, data, preds)
    want = json.loads((demo_out / "metrics.json").read_text())
    want.pop("dataset")
    want.pop("families", None)
    assert got == want
