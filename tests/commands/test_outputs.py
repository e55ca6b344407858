"""What a command may write where (``bridge_stg.commands.common``, docs/bad_input.md): never onto an input, never over
someone else's file or non-empty folder without ``--overwrite``, a folder of the same command refreshed (and said so),
temporary names renamed at the end; and ``bridge-stg train`` without the ``[train]`` extra."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bridge_stg.commands.cli import main as cli
from bridge_stg.commands.common import (
    OutputFolder, atomic_output_file, check_not_an_input, check_output_file, folder_holds_only, plan_output_folder,
    staged_folder,
)
from bridge_stg.errors_bridge_stg import BridgeSTGError, OutputExistsError
from bridge_stg.training.demo import demo_checkpoint_path


def _one_error_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith(("Loading weights", "Skipping"))]
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: "), err
    return err[0]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _ours(folder: Path) -> bool:
    return folder_holds_only(folder, ("a.txt", "b"), "a.txt")


# ------------------------------------------------------------------------------------------------ the helpers
def test_plan_output_folder(tmp_path):
    plan = plan_output_folder(tmp_path / "new", False, "--out", "prog", _ours)
    assert plan.action == "create" and plan.describe("prog") is None
    (tmp_path / "empty").mkdir()
    assert plan_output_folder(tmp_path / "empty", False, "--out", "prog", _ours).action == "create"
    mine = tmp_path / "mine"
    (mine / "b").mkdir(parents=True)
    (mine / "a.txt").write_text("x")
    plan = plan_output_folder(mine, False, "--out", "prog", _ours)
    assert (plan.action, plan.replaces) == ("refresh", ["a.txt", "b"])
    assert "written by an earlier `prog`" in plan.describe("prog") and "a.txt, b" in plan.describe("prog")
    (mine / "user.txt").write_text("keep me")  # something the command did not write: no longer ours
    with pytest.raises(OutputExistsError, match="not empty and was not written by `prog`.*'a.txt' and 2 more.*--overwrite"):
        plan_output_folder(mine, False, "--out", "prog", _ours)
    assert plan_output_folder(mine, True, "--out", "prog", _ours).action == "overwrite"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="not a folder"):
        plan_output_folder(tmp_path / "file", True, "--out", "prog", _ours)


def test_never_onto_an_input(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "in.json").write_text("{}")
    for out in (data / "sub" / "in.json", data, data / "sub", tmp_path):  # the input itself, or a folder holding it
        with pytest.raises(OutputExistsError, match="input of this command"):
            check_not_an_input(out, [data / "sub" / "in.json"], "--out")
        with pytest.raises(OutputExistsError):  # --overwrite does not change that
            plan_output_folder(out, True, "--out", "prog", _ours, inputs=[data / "sub" / "in.json"]) if out.is_dir() \
                else check_output_file(out, True, "--out", inputs=[data / "sub" / "in.json"])
    link = tmp_path / "link.json"
    link.symlink_to(data / "sub" / "in.json")
    with pytest.raises(OutputExistsError, match="input"):  # through a link too
        check_output_file(link, True, "--out", inputs=[data / "sub" / "in.json"])
    check_not_an_input(data / "sub" / "out.json", [data / "sub" / "in.json", None], "--out")  # beside it is fine


def test_check_output_file(tmp_path):
    (tmp_path / "x.json").write_text("old")
    with pytest.raises(OutputExistsError, match="x.json: exists; pass --overwrite"):
        check_output_file(tmp_path / "x.json", False, "--json")
    assert check_output_file(tmp_path / "x.json", True, "--json") == tmp_path / "x.json"
    with pytest.raises(BridgeSTGError, match="does not exist"):
        check_output_file(tmp_path / "nowhere" / "x.json", True, "--json")
    with pytest.raises(OutputExistsError, match="is a folder"):
        check_output_file(tmp_path, True, "--json")


def test_temporary_names_leave_the_old_output_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output_file(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".txt" and tmp.name.startswith(".out.txt.tmp-")
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with atomic_output_file(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # replaced only at the end
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]

    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.txt").write_text("old")
    plan = OutputFolder(folder, "refresh", ["a.txt"])
    with pytest.raises(RuntimeError):
        with staged_folder(plan, "prog") as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("killed")
    assert _tree(folder) == {"a.txt": b"old"} and sorted(p.name for p in tmp_path.iterdir()) == ["f", "out.txt"]
    with staged_folder(plan, "prog") as tmp:
        (tmp / "b").mkdir()
        (tmp / "a.txt").write_text("new")
    assert _tree(folder) == {"a.txt": b"new"} and (folder / "b").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "out.txt"]


# ------------------------------------------------------------------------------------------------ synth / convert
SYNTH = ["--num-videos", "3", "--num-frames", "10", "--width", "32", "--height", "32", "--no-progress"]


def test_synth_twice_refreshes_and_refuses_a_foreign_folder(tmp_path, capsys, caplog):
    import datasets

    import pyarrow.parquet as pq

    out = tmp_path / "synth"
    assert cli(["synth", "--out", str(out), "--seed", "1", *SYNTH]) == 0
    first, first_rows = _tree(out), datasets.load_dataset(str(out))["train"]["query_id"]
    with caplog.at_level(logging.WARNING):
        assert cli(["synth", "--out", str(out), "--seed", "2", *SYNTH]) == 0  # a rerun replaces its own folder
    assert "replacing its content (written by an earlier `bridge-stg synth`)" in caplog.text
    assert _tree(out) != first and sorted(p.name for p in tmp_path.iterdir()) == ["synth"]
    report = json.loads((out / "conversion_report.json").read_text())
    assert len(report["runs"]) == 1 and report["runs"][0]["report"]["inputs"]["seed"] == 2
    # datasets reads the new files, not a cache of the old ones
    loaded = datasets.load_dataset(str(out))["train"]
    assert loaded["query"] == pq.read_table(out / "data" / "train-00000-of-00001.parquet").column("query").to_pylist()
    assert len(loaded["query_id"]) == len(first_rows)

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my notes")
    capsys.readouterr()
    assert cli(["synth", "--out", str(foreign), *SYNTH]) == 2
    assert "--overwrite" in _one_error_line(capsys, "bridge-stg synth")
    assert _tree(foreign) == {"notes.txt": b"my notes"}
    assert cli(["synth", "--out", str(foreign), "--overwrite", *SYNTH]) == 0
    assert not (foreign / "notes.txt").exists() and (foreign / "conversion_report.json").is_file()


HCSTVG_V2 = {"a.mp4": {"bbox": [[10, 10, 20, 20], [14, 10, 20, 20]], "st_frame": 5, "ed_frame": 6, "st_time": 0.2,
                        "ed_time": 0.3, "img_num": 400, "English": "The man turns.", "img_size": [240, 320]}}


def test_convert_refuses_foreign_and_input_folders(tmp_path, capsys, caplog):
    ann = str(tmp_path / "v2.json")
    Path(ann).write_text(json.dumps(HCSTVG_V2))
    args = ["convert", "hcstvg", "--annotations", ann, "--version", "2", "--split", "val", "--no-progress"]
    assert cli([*args, "--out", str(tmp_path)]) == 2  # the folder holds the annotation file
    assert "holds an input" in _one_error_line(capsys, "bridge-stg convert hcstvg")
    assert cli([*args, "--out", str(tmp_path), "--overwrite"]) == 2
    assert Path(ann).is_file()
    out = tmp_path / "hc"
    assert cli([*args, "--out", str(out)]) == 0
    with caplog.at_level(logging.WARNING):
        assert cli([*args, "--out", str(out)]) == 0  # the same split again: replaced, and said
    assert "replacing split 'val'" in caplog.text
    (out / "extra.txt").write_text("mine")
    capsys.readouterr()
    assert cli([*args, "--out", str(out)]) == 2
    assert "not written by `bridge-stg convert`" in _one_error_line(capsys, "bridge-stg convert hcstvg")


# ------------------------------------------------------------------------------------------------ ground / evaluate
def test_ground_and_evaluate_never_replace_without_overwrite(tmp_path, capsys):
    from test_metric_cli import canonical_rows, write_jsonl

    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not even a video")  # the output checks come before the video is opened
    old = tmp_path / "old.json"
    old.write_text("keep")
    ground = ["ground", str(video), "the square", "--model", demo_checkpoint_path(), "--no_progress"]
    assert cli([*ground, "--json", str(old)]) == 2
    assert "old.json: exists; pass --overwrite" in _one_error_line(capsys, "bridge-stg ground")
    assert cli([*ground, "--output", str(tmp_path / "clip.mp4"), "--overwrite"]) == 2  # onto its input video
    assert "is an input" in _one_error_line(capsys, "bridge-stg ground")
    assert old.read_text() == "keep" and video.read_bytes() == b"not even a video"

    refs, preds = canonical_rows()
    r, p = write_jsonl(tmp_path / "refs.jsonl", refs), write_jsonl(tmp_path / "preds.jsonl", preds)
    evaluate = ["evaluate", "--references", str(r), "--predictions", str(p)]
    assert cli([*evaluate, "--per-query", str(old)]) == 2
    assert "old.json: exists" in _one_error_line(capsys, "bridge-stg evaluate")
    assert cli([*evaluate, "--plot", str(p), "--overwrite"]) == 2
    assert "is an input" in _one_error_line(capsys, "bridge-stg evaluate")
    assert old.read_text() == "keep" and p.read_text() == "".join(json.dumps(x) + "\n" for x in preds)
    assert cli([*evaluate, "--per-query", str(old), "--overwrite"]) == 0
    assert old.read_text().startswith("query_id,")


# ------------------------------------------------------------------------------------------------ demo
def test_demo_refuses_a_foreign_folder_and_its_own_checkpoint(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    (out / "thesis.tex").write_text("years of work")
    assert cli(["demo", "--out", str(out), "--num-clips", "1", "--no-progress"]) == 2
    assert "'metrics.json' and 1 more" in _one_error_line(capsys, "bridge-stg demo")
    assert _tree(out) == {"metrics.json": b"{}", "thesis.tex": b"years of work"}
    # a folder holding the checkpoint the demo reads is refused, --overwrite or not
    ckpt = tmp_path / "demo_out" / "checkpoint"
    ckpt.mkdir(parents=True)
    assert cli(["demo", "--out", str(tmp_path / "demo_out"), "--checkpoint", str(ckpt), "--overwrite", "--no-progress"]) == 2
    assert "holds an input" in _one_error_line(capsys, "bridge-stg demo")


def test_demo_twice_into_the_same_folder(tmp_path, capsys, caplog):
    """The README's set-up command run twice: the second run replaces the first one's folder and says so."""
    out = tmp_path / "demo_out"
    argv = ["demo", "--out", str(out), "--num-clips", "2", "--threads", "1", "--no-progress"]
    assert cli(argv) == 0
    first = capsys.readouterr().out
    assert f"wrote {out}/: baseline_metrics.json, checkpoint/, example.json, example.mp4, example_input.mp4, " \
           "metrics.json, predictions.jsonl, references.jsonl" in first
    metrics = (out / "metrics.json").read_bytes()
    with caplog.at_level(logging.WARNING):
        assert cli(argv) == 0
    assert "replacing its content (written by an earlier `bridge-stg demo`)" in caplog.text
    assert (out / "metrics.json").read_bytes() == metrics  # same seed, same clips, same numbers
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("hf")) == ["demo_out"]


# ------------------------------------------------------------------------------------------------ train
def test_train_output_dir_and_the_train_extra(tmp_path, capsys, monkeypatch):
    from bridge_stg.commands import train
    from bridge_stg.training import recipe

    tiny = str(Path(__file__).resolve().parents[2] / "recipes" / "synthetic_tiny_cpu.yaml")
    data = tmp_path / "data"
    data.mkdir()
    foreign = tmp_path / "runs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    argv = [tiny, "--dataset", str(data), "--output_dir", str(foreign)]
    assert train.main(argv) == 2
    assert "not written by `bridge-stg train`" in _one_error_line(capsys, "bridge-stg train")
    assert train.main([tiny, "--dataset", str(data), "--output_dir", str(tmp_path), "--overwrite", "true"]) == 2
    assert "holds an input" in _one_error_line(capsys, "bridge-stg train")
    # a folder of an earlier run is continued (e.g. --resume_from_checkpoint)
    (foreign / "notes.txt").unlink()
    (foreign / "checkpoint-5").mkdir()
    (foreign / "checkpoint-5" / "trainer_state.json").write_text("{}")
    train.check_output_dir(*train.parse_args(argv))
    # without the [train] extra: one line that names it
    real = recipe.importlib.util.find_spec
    monkeypatch.setattr(recipe.importlib.util, "find_spec", lambda name, *a: None if name in ("accelerate", "peft") else real(name, *a))
    assert train.main(argv) == 2
    line = _one_error_line(capsys, "bridge-stg train")
    assert "accelerate (for transformers.Trainer)" in line and 'pip install "bridge-stg[train]"' in line


def test_annotated_video_of_a_source_that_stops_early_is_not_written(tmp_path):
    """A source whose index lists more frames than can be decoded: an error naming it, no annotated video with missing
    (or blank) frames, and an existing output left as it was."""
    import av

    from bridge_stg.errors_bridge_stg import VideoDecodeError
    from bridge_stg.evaluation.visualize import write_annotated_video
    from helpers_video import write_index_video

    src = tmp_path / "src.mp4"
    write_index_video(src, 60, fps=25.0)
    fast = tmp_path / "fast.mp4"  # the index (moov) first, so cutting the file keeps it: 60 frames listed
    with av.open(str(src)) as inp, av.open(str(fast), "w", options={"movflags": "faststart"}) as out:
        s_out = out.add_stream_from_template(inp.streams.video[0])
        for pkt in inp.demux(inp.streams.video[0]):
            if pkt.dts is not None:
                pkt.stream = s_out
                out.mux(pkt)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: int(fast.stat().st_size * 0.6)])
    result = {"query": "q", "span": [0, 10], "span_seconds": [0.0, 0.4], "tube": []}
    old = tmp_path / "annotated.mp4"
    old.write_bytes(b"an earlier result")
    with pytest.raises(VideoDecodeError, match="cut.mp4"):
        write_annotated_video(cut, [result], old, progress=False)
    assert old.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.mp4", "cut.mp4", "fast.mp4", "src.mp4"]
