"""Synthetic tvg / rec sources (processing/synthetic_tasks.py): exact ground truth recomputed from the pixels and the
families' facts, the dataset writer, and ``bridge-stg synth --tasks``."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bridge_stg.commands.cli import main as cli_main
from bridge_stg.processing.schema import validate_row
from bridge_stg.processing.synthetic import COLOURS, SyntheticSpec
from bridge_stg.processing.synthetic_families import render_family_clip, step_actions
from bridge_stg.processing.synthetic_tasks import (
    REC_FAMILIES, TASK_FAMILIES, TVG_FAMILIES, parse_task_counts, render_rec_item, render_task_item, render_tvg_item,
    task_rng, write_synthetic_task_dataset,
)

SMALL = SyntheticSpec(width=64, height=48, num_frames=48)


def _colour_mask(image: np.ndarray, colour: str) -> np.ndarray:
    return (image == np.asarray(COLOURS[colour], dtype=np.uint8)).all(-1)


@pytest.mark.parametrize("family", REC_FAMILIES)
def test_rec_box_is_the_bounding_box_of_the_target_pixels(family: str) -> None:
    for seed in range(6):
        item = render_rec_item(np.random.default_rng([seed, 5]), family)
        image = item.frames[0]
        assert item.frames.shape == (1, 112, 112, 3) and item.task == "rec" and item.query_type is None
        assert (item.tube_start, item.tube_end, item.frame_ids, item.fps) == (0, 1, [0], 1.0)
        # the image is the clip's frame inside the span, the box the target's box there
        f = item.source_frame
        assert item.clip.tube_start <= f < item.clip.tube_end
        np.testing.assert_array_equal(image, item.clip.frames[f])
        x1, y1, x2, y2 = (int(v) for v in item.boxes[0])
        assert [x1, y1, x2, y2] == item.boxes[0]
        mask = _colour_mask(image, item.clip.target_colour)
        inside = mask[y1:y2, x1:x2]
        # tight: the target's pixels touch all four edges of the box ...
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        # ... and none of its colour lies in the one-pixel ring around it (the twin, if any, is farther away)
        ring = mask[max(y1 - 1, 0):y2 + 1, max(x1 - 1, 0):x2 + 1].sum() - inside.sum()
        assert ring == 0
        if family == "appearance":  # colours are unique: the target's colour is nowhere else
            ys, xs = np.nonzero(mask)
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == [x1, y1, x2, y2]
        else:  # an identical twin on the other side of the reference: only the relation names the target
            twin = next(o for o in item.clip.objects if o.role == "twin")
            assert (twin.colour, twin.shape) == (item.clip.target_colour, item.clip.target_shape)
            rel, ref = item.clip.details["relation"], item.clip.details["reference"]
            assert ref in item.query and any(w in item.query for w in (rel, "to the " + rel))
        assert f"{item.clip.target_colour} {item.clip.target_shape}" in item.query


@pytest.mark.parametrize("family", TVG_FAMILIES)
def test_tvg_span_is_exactly_when_the_statement_holds(family: str) -> None:
    for seed in range(6):
        item = render_tvg_item(np.random.default_rng([seed, 9]), family)
        clip = item.clip
        T, (ts, te) = clip.num_frames, (item.tube_start, item.tube_end)
        assert item.task == "tvg" and item.frame_ids == [] and item.boxes == [] and item.query_type is None
        assert (ts, te) == (clip.tube_start, clip.tube_end) and item.frames is clip.frames
        assert f"{clip.target_colour} {clip.target_shape}" in item.query
        target = next(o for o in clip.objects if o.role == "target")
        if family in ("appearance", "relational"):  # the target is drawn exactly on the span
            assert np.flatnonzero(target.present).tolist() == list(range(ts, te))
        if family in ("action", "twins_motion"):
            action = clip.details["action"]
            steps = step_actions(target.boxes)
            # every step inside the span does the named action, none with both frames outside does
            assert all(steps[f] == action for f in range(ts, te - 1))
            assert not any(steps[f] == action for f in range(T - 1) if f + 1 < ts or f >= te)
            if family == "twins_motion":  # the look-alike never does it
                twin = next(o for o in clip.objects if o.role == "twin")
                assert action not in step_actions(twin.boxes)
        if family == "relational":
            assert clip.details["reference"] in item.query


def test_stvg_items_are_the_family_clips_and_rows_validate() -> None:
    for task in TASK_FAMILIES:
        for family in TASK_FAMILIES[task]:
            item = render_task_item(task, task_rng(task, 3, 1), family, SMALL)
            row = item.row("q", "v", "x.png" if task == "rec" else "x.mp4")
            validate_row(row, source="test", record=0)
            assert row["task"] == task and row["query"] == item.query
            if task == "stvg":
                assert row == render_family_clip(np.random.default_rng([3, 1]), family, SMALL).row("q", "v", "x.mp4")
    # the tasks' streams differ: the same index gives different clips
    a, b = (render_task_item(t, task_rng(t, 0, 0), "appearance", SMALL).clip.frames for t in ("stvg", "tvg"))
    assert not np.array_equal(a, b)
    with pytest.raises(ValueError, match="twins_event"):
        render_tvg_item(np.random.default_rng(0), "twins_event")
    with pytest.raises(ValueError, match="no exact rec form"):
        render_rec_item(np.random.default_rng(0), "action")


def test_parse_task_counts() -> None:
    assert parse_task_counts("stvg,tvg=5, rec=2", 10) == {"stvg": 10, "tvg": 5, "rec": 2}
    for bad, msg in (("vqa", "unknown task"), ("stvg,stvg=2", "twice"), ("tvg=x", "integer"), ("rec=0", ">= 1"),
                     (",", "at least one")):
        with pytest.raises(ValueError, match=msg):
            parse_task_counts(bad, 4)


def test_written_dataset_loads_and_matches_the_items(tmp_path) -> None:
    from datasets import load_dataset

    out = tmp_path / "mt"
    write_synthetic_task_dataset(out, {"stvg": 5, "tvg": 3, "rec": 3}, seed=4, spec=SMALL, progress=False)
    ds = load_dataset(str(out))
    assert set(ds) == {"train", "validation", "test"}
    rows = [r for split in ds.values() for r in split]
    assert sorted(r["task"] for r in rows) == ["rec"] * 3 + ["stvg"] * 5 + ["tvg"] * 3
    assert all({r["task"] for r in split} == {"stvg", "tvg", "rec"} for split in ds.values())  # every split, every task
    for r in rows:
        task, family, i = r["query_id"].split("_", 1)[0], r["query_id"].split("_", 1)[1].rsplit("_", 1)[0], int(r["query_id"][-6:])
        item = render_task_item(task, task_rng(task, 4, i), family, SMALL)
        assert r["query"] == item.query and [r["tube_start"], r["tube_end"]] == [item.tube_start, item.tube_end]
        assert r["boxes"] == item.boxes and r["frame_ids"] == item.frame_ids
        if task == "rec":  # lossless PNG: the pixels are the rendered frame's
            assert r["video"].endswith(".png") and r["num_frames"] == 1
            np.testing.assert_array_equal(np.asarray(Image.open(out / r["video"]).convert("RGB")), item.frames[0])
        else:
            assert r["video"].endswith(".mp4") and (out / r["video"]).is_file()


def test_synth_cli_tasks(tmp_path, capsys) -> None:
    from datasets import load_dataset

    out = tmp_path / "synth"
    argv = ["synth", "--tasks", "stvg=3,tvg=3,rec=3", "--out", str(out), "--width", "64", "--height", "48",
            "--num_frames", "48", "--no_progress", "--seed", "2"]
    assert cli_main(argv) == 0
    rows = [r for split in load_dataset(str(out)).values() for r in split]
    assert sorted(r["task"] for r in rows) == ["rec"] * 3 + ["stvg"] * 3 + ["tvg"] * 3
    assert any((out / "images").rglob("*.png"))
    assert cli_main(argv) == 0  # a folder of an earlier synth (images/ included) is replaced
    capsys.readouterr()
    assert cli_main(["synth", "--tasks", "stvg,vqa", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown task 'vqa'" in err[0] and not (tmp_path / "bad").exists()
