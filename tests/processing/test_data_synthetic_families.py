"""Synthetic query families: exact boxes, spans, twins, actions, contact events and relations (pixel-level checks)."""

from __future__ import annotations

import numpy as np
import pytest

from bridge_stg.processing.schema import validate_row
from bridge_stg.processing.synthetic import COLOURS, SyntheticClip, SyntheticSpec, render_synthetic_clip, shape_mask
from bridge_stg.processing.synthetic_families import DEFAULT_FAMILY_MIX, FAMILIES, render_family_clip, render_mixed_clip

SEEDS = range(8)
SPEC = SyntheticSpec()
T = SPEC.num_frames
MIN_PHASE = 16  # 1.6 s at 10 fps


# ------------------------------------------------------------------------------------------------ helpers

def _clip(family: str, seed: int, spec: SyntheticSpec | None = None) -> SyntheticClip:
    return render_family_clip(np.random.default_rng([101, seed]), family, spec)


def _colour_mask(frames: np.ndarray, rgb) -> np.ndarray:
    return (frames == np.asarray(rgb, np.uint8)).all(axis=-1)


def _role(clip: SyntheticClip, role: str):
    return [o for o in clip.objects if o.role == role]


def _own_mask(obj, f: int, h: int, w: int) -> np.ndarray:
    """Full-frame mask of the object's own drawn shape at frame ``f`` (placed from its exact box)."""
    m = shape_mask(obj.shape, obj.size)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    x, y = int(obj.boxes[f, 0]) - cols[0], int(obj.boxes[f, 1]) - rows[0]
    out = np.zeros((h, w), dtype=bool)
    out[y: y + obj.size, x: x + obj.size] = m
    return out


def _extent(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _gap(a, b) -> float:
    """Empty pixels between boxes along the axis where they are farthest apart (0: touching, < 0: overlapping)."""
    return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])


def _step_action(a, b) -> str:
    dx, dy = b[0] - a[0], b[1] - a[1]
    if dx == 0 and dy == 0:
        return "still"
    return ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")


def _touching(a: np.ndarray, b: np.ndarray) -> bool:
    """Masks overlap or are 8-adjacent."""
    p = np.pad(a, 1)
    h, w = a.shape
    d = np.zeros_like(a)
    for dy in range(3):
        for dx in range(3):
            d |= p[dy: dy + h, dx: dx + w]
    return bool((d & b).any())


def _check_common(clip: SyntheticClip, family: str) -> None:
    """Checks every family shares: span, rows, exact target box = extent of its own colour pixels, roles."""
    H, W = clip.height, clip.width
    assert clip.family == family
    assert clip.frames.shape == (T, H, W, 3) and clip.frames.dtype == np.uint8
    assert 0 <= clip.tube_start < clip.tube_end <= T
    assert clip.tube_end - clip.tube_start >= MIN_PHASE
    assert clip.frame_ids == list(range(clip.tube_start, clip.tube_end))
    assert len(clip.boxes) == len(clip.frame_ids)
    assert (clip.query_type == "interrogative") == clip.query.endswith("?")
    assert clip.target_colour in clip.query and clip.target_shape in clip.query
    validate_row(clip.row("q", "v", "v.mp4"))
    assert [o.is_target for o in clip.objects].count(True) == 1
    target = next(o for o in clip.objects if o.is_target)
    if family != "appearance":
        assert clip.objects[-1] is target  # listed in drawing order: the target last
    assert np.array_equal(target.boxes[clip.tube_start: clip.tube_end], np.asarray(clip.boxes))
    twins = _role(clip, "twin")
    same_colour = [target] + twins
    for o in clip.objects:
        if all(o is not x for x in same_colour):
            assert o.colour != target.colour
    for t in twins:
        assert (t.colour, t.shape, t.size) == (target.colour, target.shape, target.size)
    colour = _colour_mask(clip.frames, COLOURS[target.colour])
    assert clip.target_rgb == COLOURS[target.colour]
    for f in range(T):
        union = np.zeros((H, W), dtype=bool)
        for o in same_colour:
            if o.present[f]:
                union |= _own_mask(o, f, H, W)
        # every pixel of the target colour is exactly the union of the same-coloured objects' own drawn masks
        assert np.array_equal(colour[f], union), (family, f)
        if target.present[f]:
            assert _extent(_own_mask(target, f, H, W)) == target.boxes[f].tolist()
            x1, y1, x2, y2 = map(int, target.boxes[f])
            window = np.zeros((H, W), dtype=bool)
            window[max(0, y1 - 1): y2 + 1, max(0, x1 - 1): x2 + 1] = True
            assert _extent(colour[f] & window) == target.boxes[f].tolist(), (family, f)
        else:
            assert np.isnan(target.boxes[f]).all()


def _check_twins(clip: SyntheticClip) -> None:
    (twin,) = _role(clip, "twin")
    target = clip.objects[-1]
    assert clip.twin_boxes is not None and len(clip.twin_boxes) == len(clip.frame_ids)
    assert np.array_equal(np.asarray(clip.twin_boxes), twin.boxes[clip.tube_start: clip.tube_end])
    colour = _colour_mask(clip.frames, clip.target_rgb)
    for i, f in enumerate(clip.frame_ids):
        tb, wb = clip.boxes[i], clip.twin_boxes[i]
        assert twin.present[f]
        assert _gap(tb, wb) >= 2, f
        crop_t = colour[f, int(tb[1]): int(tb[3]), int(tb[0]): int(tb[2])]
        crop_w = colour[f, int(wb[1]): int(wb[3]), int(wb[0]): int(wb[2])]
        assert crop_t.shape == crop_w.shape and np.array_equal(crop_t, crop_w)  # identical looking, same size
        assert _extent(_own_mask(twin, f, clip.height, clip.width)) == wb
    both = target.present & twin.present
    assert all(_gap(target.boxes[f], twin.boxes[f]) >= 2 for f in np.flatnonzero(both))


# ------------------------------------------------------------------------------------------------ families

def test_families_listed_and_unknown_rejected():
    assert FAMILIES == ("appearance", "action", "twins_motion", "twins_event", "relational")
    assert set(DEFAULT_FAMILY_MIX) == set(FAMILIES) and len(set(DEFAULT_FAMILY_MIX.values())) == 1
    with pytest.raises(ValueError):
        render_family_clip(np.random.default_rng(0), "nope")


def test_appearance_family_is_render_synthetic_clip_exactly():
    for seed in range(6):
        for spec in (None, SyntheticSpec(width=64, height=48, num_frames=30)):
            a = render_family_clip(np.random.default_rng([5, seed]), "appearance", spec)
            b = render_synthetic_clip(np.random.default_rng([5, seed]), spec)
            assert np.array_equal(a.frames, b.frames)
            assert a.row("q", "v", "x.mp4") == b.row("q", "v", "x.mp4")
            assert a.direction == b.direction and a.family == "appearance" and a.twin_boxes is None
            assert all(np.array_equal(x.boxes, y.boxes, equal_nan=True) for x, y in zip(a.objects, b.objects))
    _check_common(render_family_clip(np.random.default_rng(3), "appearance"), "appearance")


@pytest.mark.parametrize("family", ["action", "twins_motion"])
def test_action_families(family):
    actions = set()
    for seed in SEEDS:
        clip = _clip(family, seed)
        _check_common(clip, family)
        target, ts, te = clip.objects[-1], clip.tube_start, clip.tube_end
        action = clip.details["action"]
        actions.add(action)
        assert clip.direction == action
        phrase = {"still": "still"}.get(action, action)
        assert phrase in clip.query
        assert target.present.all()  # visible on the whole clip; the span is the named action's phase
        phases = clip.details["target_phases"]
        assert [(p["start"], p["end"]) for p in phases if p["action"] == action] == [(ts, te)]
        assert phases[0]["start"] == 0 and phases[-1]["end"] == T and 2 <= len(phases) <= 3
        for p in phases:
            assert p["end"] - p["start"] >= MIN_PHASE
            speed = float(np.hypot(*p["velocity"]))
            assert speed == 0.0 if p["action"] == "still" else speed >= 1.5
        steps = [_step_action(target.boxes[f], target.boxes[f + 1]) for f in range(T - 1)]
        for f, a in enumerate(steps):
            if ts <= f and f + 1 < te:
                assert a == action, (seed, f)
            elif f + 1 < ts or f >= te:
                assert a != action, (seed, f)
            phase = next(p for p in phases if p["start"] <= f < p["end"])
            assert a == phase["action"], (seed, f)  # piecewise constant: no bounce inside a phase
        distractors = _role(clip, "distractor")
        if family == "action":
            assert 1 <= len(distractors) <= 3 and not _role(clip, "twin") and clip.twin_boxes is None
            assert len({o.colour for o in clip.objects}) == len(clip.objects)
        else:
            assert len(distractors) <= 2
            _check_twins(clip)
            (twin,) = _role(clip, "twin")
            assert twin.present.all()
            twin_steps = [_step_action(twin.boxes[f], twin.boxes[f + 1]) for f in range(T - 1)]
            assert action not in twin_steps, seed
            for p in clip.details["twin_phases"]:
                assert p["action"] != action
    assert len(actions) >= 3


def test_twins_event():
    for seed in SEEDS:
        clip = _clip("twins_event", seed)
        _check_common(clip, "twins_event")
        _check_twins(clip)
        H, W, ts, te = clip.height, clip.width, clip.tube_start, clip.tube_end
        target, (twin,), (ref,) = clip.objects[-1], _role(clip, "twin"), _role(clip, "reference")
        assert len(_role(clip, "distractor")) <= 1
        assert ts >= 25 and te - ts >= MIN_PHASE and (te == T or T - te >= MIN_PHASE)
        assert ref.colour != target.colour and ref.shape != target.shape
        assert f"{ref.colour} {ref.shape}" in clip.query and clip.details["reference"] == f"{ref.colour} {ref.shape}"
        # R visible exactly before the span; the twins exactly until the span ends
        assert np.array_equal(np.flatnonzero(ref.present), np.arange(ts))
        assert np.array_equal(np.flatnonzero(target.present), np.arange(te))
        assert np.array_equal(np.flatnonzero(twin.present), np.arange(te))
        assert not _colour_mask(clip.frames[ts:], COLOURS[ref.colour]).any()
        # inside the span both twins move by exactly the same step on every frame
        np.testing.assert_array_equal(np.diff(target.boxes[ts:te], axis=0), np.diff(twin.boxes[ts:te], axis=0))
        assert np.abs(np.diff(target.boxes[ts:te, :2], axis=0)).sum() > 0
        # contact: target touches R (boxes, and drawn masks) for >= 1 s, only before ts; the twin stays > 4 px from R
        box_contact = [f for f in range(T) if ref.present[f] and _gap(target.boxes[f], ref.boxes[f]) <= 0]
        mask_contact = [f for f in range(ts) if _touching(_own_mask(target, f, H, W), _own_mask(ref, f, H, W))]
        assert mask_contact and set(mask_contact) <= set(box_contact) and max(box_contact) < ts
        assert mask_contact == clip.details["contact_frames"]
        assert mask_contact == list(range(mask_contact[0], mask_contact[-1] + 1)) and len(mask_contact) >= 10
        assert mask_contact[0] > 0 and len([f for f in mask_contact if f % 5 == 0]) >= 2  # seen at 2 fps
        assert all(_gap(twin.boxes[f], ref.boxes[f]) >= 5 for f in range(ts))
        # in the span the twins touch nothing
        for o in clip.objects[:-1]:
            for f in range(ts, te):
                if o is not twin and o.present[f]:
                    assert _gap(target.boxes[f], o.boxes[f]) >= 2 and _gap(twin.boxes[f], o.boxes[f]) >= 2


_RELATION_TEST = {
    "left of": lambda a, r: a[2] <= r[0], "right of": lambda a, r: a[0] >= r[2],
    "above": lambda a, r: a[3] <= r[1], "below": lambda a, r: a[1] >= r[3],
}


def test_relational():
    relations = set()
    for seed in SEEDS:
        clip = _clip("relational", seed)
        _check_common(clip, "relational")
        _check_twins(clip)
        ts, te = clip.tube_start, clip.tube_end
        target, (twin,), (ref,) = clip.objects[-1], _role(clip, "twin"), _role(clip, "reference")
        assert len(clip.objects) == 3
        assert 0.2 * T <= te - ts <= 0.8 * T
        assert np.array_equal(np.flatnonzero(target.present), np.arange(ts, te))
        assert twin.present.all() and ref.present.all()
        assert ref.colour != target.colour and ref.shape != target.shape
        rel, opp = clip.details["relation"], clip.details["twin_relation"]
        relations.add(rel)
        assert rel.split()[0] in clip.query and f"{ref.colour} {ref.shape}" in clip.query
        for f in range(T):
            assert _RELATION_TEST[opp](twin.boxes[f], ref.boxes[f]), (seed, f)
            others = [r for r in _RELATION_TEST if r != opp]
            assert not any(_RELATION_TEST[r](twin.boxes[f], ref.boxes[f]) for r in others)  # the relation is unique
            if ts <= f < te:
                assert _RELATION_TEST[rel](target.boxes[f], ref.boxes[f]), (seed, f)
                assert not any(_RELATION_TEST[r](target.boxes[f], ref.boxes[f]) for r in _RELATION_TEST if r != rel)
    assert len(relations) >= 3


@pytest.mark.parametrize("family", FAMILIES)
def test_determinism(family):
    a, b, c = _clip(family, 42), _clip(family, 42), _clip(family, 43)
    assert np.array_equal(a.frames, b.frames) and a.row("q", "v", "x") == b.row("q", "v", "x")
    assert a.details == b.details and a.twin_boxes == b.twin_boxes
    assert not np.array_equal(a.frames, c.frames)


def test_mixed_stream_covers_all_families():
    seen = [render_mixed_clip(np.random.default_rng([9, i])).family for i in range(40)]
    assert set(seen) == set(FAMILIES)
    a = render_mixed_clip(np.random.default_rng(77))
    b = render_mixed_clip(np.random.default_rng(77))
    assert a.family == b.family and np.array_equal(a.frames, b.frames)
    only = render_mixed_clip(np.random.default_rng(1), mix={"relational": 1.0, "action": 0.0})
    assert only.family == "relational"
    with pytest.raises(ValueError):
        render_mixed_clip(np.random.default_rng(1), mix={"bogus": 1.0})
    with pytest.raises(ValueError):
        render_mixed_clip(np.random.default_rng(1), mix={"action": 0.0})


def test_other_frame_rates_and_sizes():
    spec = SyntheticSpec(width=128, height=96, fps=20.0, num_frames=160)
    for family in FAMILIES[1:]:
        clip = render_family_clip(np.random.default_rng(4), family, spec)
        assert clip.frames.shape == (160, 96, 128, 3)
        assert clip.tube_end - clip.tube_start >= 32  # 1.6 s at 20 fps
        colour = _colour_mask(clip.frames, clip.target_rgb)
        for i, f in enumerate(clip.frame_ids):
            assert colour[f, int(clip.boxes[i][1]): int(clip.boxes[i][3]), int(clip.boxes[i][0]): int(clip.boxes[i][2])].any()
    with pytest.raises(ValueError):
        render_family_clip(np.random.default_rng(0), "twins_event", SyntheticSpec(num_frames=30))
    with pytest.raises(ValueError):
        render_family_clip(np.random.default_rng(0), "action", SyntheticSpec(num_frames=30))


def test_write_dataset_with_families(tmp_path):
    """A dataset folder of a family mix: query ids name the family, rows are the clips' canonical rows."""
    import datasets

    from bridge_stg.processing.synthetic import write_synthetic_dataset

    spec = SyntheticSpec()
    write_synthetic_dataset(tmp_path, 5, seed=4, spec=spec, splits=(0.6, 0.2, 0.2), families=FAMILIES, progress=False)
    ds = datasets.load_dataset(str(tmp_path))
    ids = sorted(r["query_id"] for split in ds.values() for r in split)
    assert ids == sorted(f"{f}_{i:06d}" for i, f in enumerate(FAMILIES))
    first = ds["train"][0]
    clip = render_family_clip(np.random.default_rng([4, 0]), FAMILIES[0], spec)
    assert first["query"] == clip.query and first["tube_start"] == clip.tube_start and first["tube_end"] == clip.tube_end
    with pytest.raises(ValueError, match="families"):
        write_synthetic_dataset(tmp_path / "x", 2, seed=0, families=["nope"], progress=False)
