"""Synthetic STVG generator: exact boxes, pixels after encoding, determinism, dataset folder, CLI."""

from __future__ import annotations

import json

import av
import datasets
import numpy as np
import pytest

from bridge_stg.processing.schema import validate_row
from bridge_stg.processing.synthetic import (
    COLOURS,
    SyntheticSpec,
    render_synthetic_clip,
    shape_mask,
    split_sizes,
    write_mp4,
    write_synthetic_dataset,
)
from bridge_stg.commands.synth import main as synth_main


def _decode(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _colour_mask(frames: np.ndarray, rgb, tol: int) -> np.ndarray:
    return np.abs(frames.astype(np.int16) - np.asarray(rgb, np.int16)).max(axis=-1) <= tol


@pytest.mark.parametrize("shape,size", [("square", 10), ("circle", 17), ("triangle", 20)])
def test_shape_mask_extent(shape, size):
    m = shape_mask(shape, size)
    assert m.shape == (size, size) and m.any()
    if shape == "square":
        assert m.all()
    if shape == "triangle":
        assert m[-1].sum() > m[size // 2].sum() > 0  # wider at the base


def test_clip_boxes_are_exact_pixel_extents_before_encoding():
    for i in range(6):
        clip = render_synthetic_clip(np.random.default_rng([3, i]))
        assert clip.frames.shape == (80, 112, 112, 3) and clip.frames.dtype == np.uint8 and clip.fps == 10.0
        assert clip.frame_ids == list(range(clip.tube_start, clip.tube_end))
        assert 0.2 * 80 <= clip.tube_end - clip.tube_start <= 0.8 * 80
        assert clip.target_colour in clip.query and clip.target_shape in clip.query
        assert clip.query_type in ("declarative", "interrogative")
        assert (clip.query_type == "interrogative") == clip.query.endswith("?")
        assert 2 <= len(clip.objects) <= 4
        assert len({o.colour for o in clip.objects}) == len(clip.objects)  # the target colour is unique
        exact = _colour_mask(clip.frames, clip.target_rgb, 0)
        for f in range(80):
            if clip.tube_start <= f < clip.tube_end:
                ys, xs = np.nonzero(exact[f])
                box = clip.boxes[f - clip.tube_start]
                assert box == [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
                side = box[2] - box[0]
                assert 0.15 * 112 - 1 <= side <= 0.4 * 112 + 1
            else:
                assert not exact[f].any()


def test_background_never_contains_shape_colours():
    clip = render_synthetic_clip(np.random.default_rng(11), SyntheticSpec(min_objects=2, max_objects=2))
    # pixels far from every object box are background; none is within 60 of any shape colour
    far = np.ones(clip.frames.shape[:3], dtype=bool)
    for o in clip.objects:
        for f in np.flatnonzero(o.present):
            x1, y1, x2, y2 = map(int, o.boxes[f])
            far[f, y1:y2, x1:x2] = False
    assert far.any()
    for rgb in COLOURS.values():
        assert not _colour_mask(clip.frames, rgb, 60)[far].any()


def test_decoded_clip_target_colour_inside_box_on_span_and_absent_elsewhere(tmp_path):
    """The issue's check: decode a generated mp4; the target colour lies in its box on every span frame, nowhere else."""
    for i in range(3):
        clip = render_synthetic_clip(np.random.default_rng([5, i]))
        path = tmp_path / f"c{i}.mp4"
        write_mp4(path, clip.frames, clip.fps)
        dec = _decode(path)
        assert dec.shape == clip.frames.shape
        m = _colour_mask(dec, clip.target_rgb, 50)
        drawn = _colour_mask(clip.frames, clip.target_rgb, 0)
        for f in range(clip.num_frames):
            if clip.tube_start <= f < clip.tube_end:
                x1, y1, x2, y2 = map(int, clip.boxes[f - clip.tube_start])
                inside = m[f, y1:y2, x1:x2].sum()
                assert inside >= 0.75 * drawn[f].sum(), (i, f)
                outside = m[f].copy()
                outside[max(0, y1 - 1): y2 + 1, max(0, x1 - 1): x2 + 1] = False  # 1 px of chroma bleed allowed
                assert not outside.any(), (i, f)
            else:
                assert not m[f].any(), (i, f)


def test_determinism_same_seed_same_pixels_and_different_seed_differs():
    a = render_synthetic_clip(np.random.default_rng([1, 2]))
    b = render_synthetic_clip(np.random.default_rng([1, 2]))
    c = render_synthetic_clip(np.random.default_rng([1, 3]))
    assert np.array_equal(a.frames, b.frames) and a.boxes == b.boxes and a.query == b.query
    assert not np.array_equal(a.frames, c.frames)


def test_split_sizes():
    assert split_sizes(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert split_sizes(3, (0.8, 0.1, 0.1)) == [1, 1, 1]
    assert split_sizes(100, (0.8, 0.1, 0.1)) == [80, 10, 10]
    with pytest.raises(ValueError):
        split_sizes(10, (0.5, 0.1, 0.1))


def test_spec_validation():
    with pytest.raises(ValueError):
        render_synthetic_clip(np.random.default_rng(0), SyntheticSpec(width=111))
    with pytest.raises(ValueError):
        render_synthetic_clip(np.random.default_rng(0), SyntheticSpec(min_objects=1))


def test_write_dataset_loads_and_is_deterministic(tmp_path):
    rep = write_synthetic_dataset(tmp_path / "a", 10, seed=4, progress=False, embed_videos=True)
    write_synthetic_dataset(tmp_path / "b", 10, seed=4, progress=False)
    assert rep["splits"]["train"]["rows"] == 8 and rep["splits"]["validation"]["rows"] == 1 and rep["splits"]["test"]["rows"] == 1
    da, db = datasets.load_dataset(str(tmp_path / "a")), datasets.load_dataset(str(tmp_path / "b"))
    assert set(da) == {"train", "validation", "test"}
    for split in da:
        ra, rb = da[split].to_list(), db[split].to_list()
        for x, y in zip(ra, rb):
            assert x["video_bytes"] == (tmp_path / "a" / x["video"]).read_bytes()
            assert y["video_bytes"] is None
            x.pop("video_bytes"), y.pop("video_bytes")
            assert x == y
            validate_row(x)
    row = da["train"][0]
    clip = render_synthetic_clip(np.random.default_rng([4, 0]))
    assert row["query"] == clip.query and row["boxes"] == clip.boxes and row["tube_start"] == clip.tube_start
    assert row["video"] == "videos/train/synth_000000.mp4"
    card = (tmp_path / "a" / "README.md").read_text()
    assert card.startswith("---\n") and "| train | synthetic | 8 | 8 | 0 |" in card
    report = json.loads((tmp_path / "a" / "conversion_report.json").read_text())
    assert report["runs"][0]["report"]["source_format"] == "synthetic"


def test_synth_cli(tmp_path, capsys):
    assert synth_main(["--num-videos", "3", "--out", str(tmp_path / "s"), "--seed", "9", "--num-frames", "20", "--no-progress"]) == 0
    ds = datasets.load_dataset(str(tmp_path / "s"))
    assert sum(len(v) for v in ds.values()) == 3
    assert ds["train"][0]["num_frames"] == 20
    assert _decode(tmp_path / "s" / ds["train"][0]["video"]).shape == (20, 112, 112, 3)
    assert synth_main(["--num-videos", "0", "--out", str(tmp_path / "t")]) == 2
    assert "num_videos" in capsys.readouterr().err
