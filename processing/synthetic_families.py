"""Query families of the synthetic STVG benchmark: clips in which each component of Bridge-STG has a reason to matter.

The model samples frames at 2 fps (16 of the 80 frames, 0.5 s apart), so every motion or event that defines the
ground truth is planned to be visible at that sampling: defining motions move at >= 1.5 px per source frame
(:data:`MIN_DEFINING_SPEED`), spans and motion phases last >= 1.6 s (:data:`MIN_PHASE_SECONDS`), and the objects
whose motion defines the ground truth never bounce off a border (their piecewise-constant trajectories are planned
to stay inside the frame; a plan that does not fit is re-drawn from the same generator).
:func:`render_family_clip` renders one family, :func:`render_mixed_clip` draws the family first (weights
:data:`DEFAULT_FAMILY_MIX`, equal by default). ``SyntheticClip.family`` names it, ``SyntheticClip.twin_boxes`` holds
the look-alike twin's exact box on every frame of ``frame_ids`` (twin families), ``SyntheticClip.details`` the
family's ground-truth facts (phases, action, contact frames, relation...), ``SyntheticObject.role`` is ``target``,
``twin``, ``reference`` or ``distractor``; the canonical row (:meth:`SyntheticClip.row`) is the same for every family.

``appearance`` (control; :func:`render_synthetic_clip`, unchanged)
    One target (a colour + shape named by the query, colour unique in the clip) visible only during a random span of
    20-80 % of the clip, 1-3 distractors of other colours (shapes may repeat); objects move linearly and bounce off
    the borders. Solvable one frame at a time by colour: the span is exactly when the target is visible.
``action`` (temporal reasoning; in-clip negatives of the same object)
    The target (unique colour) is visible on the whole clip and moves piecewise-constantly in three phases: before
    the span, the span, after the span (one outer phase may be empty, not both; each non-empty phase >= 1.6 s).
    During the span it does the named action -- moves left / right / up / down (axis-aligned, >= 1.5 px per frame)
    or stands still -- and in the outer phases it does something else (another direction or still), so the frames
    outside the span show the same object doing the wrong thing. 1-3 distractors of other colours move as in
    ``appearance``. Span = the phase in which the target does the named action. Steps belong to the phase of their
    first frame: every step ``f -> f + 1`` with both frames in the span has the named action, no step with both
    frames outside does. ``details``: ``action``, ``target_phases`` (start, end, action, velocity).
``twins_motion`` (temporal attention / per-frame motion evidence)
    Two identical objects (same colour, shape and size: the target and its twin) are visible on the whole clip, at
    least 2 px apart on every frame, plus 0-2 distractors of other colours. Both move in phases with the same
    boundaries; during the span the target does the named action and the twin does something else; outside the
    span neither does it (the twin never does it at all). Only motion tells the twins apart. Span = the target's
    named-action phase, as in ``action``. ``details``: ``action``, ``target_phases``, ``twin_phases``.
``twins_event`` (only context carried from before the span can pick the target)
    Identical twins, a reference object R of another colour and shape ("the blue circle"), and 0-1 distractor of a
    third colour that keeps >= 2 px from both twins. Before the span (>= 2.5 s) the target approaches R (>= 1 s at
    >= 1.5 px per frame), touches it -- their drawn masks overlap or are 8-adjacent, so the boxes touch or overlap --
    for >= 1 s while standing still, then may depart; the twin goes through the same phases (move, pause, move) but
    never comes within 4 px of R (box gap >= 5). R is visible only on ``[0, tube_start)``. During the span both
    twins move with exactly the same velocity (same integer step on every frame), 2 px or more from each other and
    from anything else, and the span ends when both disappear together (or at the clip end; a non-empty tail lasts
    >= 1.6 s). Span = the time after the touch (R gone) during which the twin pair is visible; the target is the
    twin that touched R before the span. ``details``: ``reference``, ``contact_frames`` (every frame where the
    masks touch, all before ``tube_start``), ``approach_side`` (side of R the target came from),
    ``target_phases``, ``span_velocity``, ``reference_visible``, ``twins_visible``.
``relational`` (spatial relations between objects)
    Identical twins and a reference R of another colour and shape; all drift slowly (<= 0.4 px per frame, no
    bounce). The target is visible only during the span (20-80 % of the clip, >= 1.6 s) and lies on the named side
    of R (``left of``: ``x2_target + 2 <= x1_R``; ``right of``, ``above``, ``below`` likewise) on every frame of the
    span; the twin and R are visible on the whole clip and the twin lies on the opposite side on every frame. Each
    twin's box centre stays within R's extent across the relation's axis, so exactly one of the four relations holds
    for each twin. Span = the frames where the target is visible. ``details``: ``relation``, ``twin_relation``,
    ``reference``.

This is the data of the demo and of the test suite (:func:`write_synthetic_dataset` writes ``appearance`` clips).

The clips use the building blocks of :mod:`bridge_stg.processing.synthetic` (spec, clip, shape masks, background).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .synthetic import (
    COLOURS, SyntheticClip, SyntheticObject, SyntheticSpec, _background, _bounce, _span, render_synthetic_clip, shape_mask,
)


FAMILIES: tuple[str, ...] = ("appearance", "action", "twins_motion", "twins_event", "relational")
#: equal weights over :data:`FAMILIES` (the mix of :func:`render_mixed_clip`)
DEFAULT_FAMILY_MIX: dict[str, float] = {name: 1.0 for name in FAMILIES}

#: the actions of the ``action`` / ``twins_motion`` families (axis-aligned motion, or none)
ACTIONS: tuple[str, ...] = ("left", "right", "up", "down", "still")
_ACTION_UNIT: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}
_MOVES = {"left": "moves left", "right": "moves right", "up": "moves up", "down": "moves down", "still": "stands still"}
_MOVING = {"left": "moving left", "right": "moving right", "up": "moving up", "down": "moving down",
           "still": "standing still"}
#: the relations of the ``relational`` family: where the target's box lies with respect to the reference's box
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_RELATION_WORDS = {"left of": ("left of", "to the left of"), "right of": ("right of", "to the right of"),
                   "above": ("above",), "below": ("below",)}

ACTION_DECLARATIVE_TEMPLATES = ("the {colour} {shape} while it {moves}", "the {colour} {shape} {moving}",
                                "a {colour} {shape} that {moves}")
ACTION_INTERROGATIVE_TEMPLATES = ("where is the {colour} {shape} while it {moves}?",
                                  "what is the {colour} {shape} doing while it {moves}?",
                                  "where is the {colour} {shape} {moving}?", "which {colour} {shape} {moves}?")
EVENT_DECLARATIVE_TEMPLATES = ("the {colour} {shape} that touched the {ref}",
                               "the {colour} {shape} that bumped into the {ref}",
                               "the {colour} {shape} after it touched the {ref}")
EVENT_INTERROGATIVE_TEMPLATES = ("where is the {colour} {shape} that touched the {ref}?",
                                 "which {colour} {shape} touched the {ref}?",
                                 "what is the {colour} {shape} that touched the {ref} doing?")
RELATION_DECLARATIVE_TEMPLATES = ("the {colour} {shape} {rel} the {ref}", "the {colour} {shape} that is {rel} the {ref}")
RELATION_INTERROGATIVE_TEMPLATES = ("which {colour} {shape} is {rel} the {ref}?",
                                    "where is the {colour} {shape} {rel} the {ref}?")

#: slowest speed (px per source frame) of a motion that defines the ground truth (visible at 2 fps sampling)
MIN_DEFINING_SPEED = 1.5
#: shortest span / motion phase, in seconds (>= 3 frames at 2 fps sampling)
MIN_PHASE_SECONDS = 1.6
#: twins_event: shortest pre-span phase, shortest contact, shortest approach (seconds)
EVENT_PRE_SECONDS = 2.5
CONTACT_SECONDS = 1.0
APPROACH_SECONDS = 1.0
#: the smallest box gap (empty pixels between boxes) between the twins, and between a twin and anything it must not touch
TWIN_GAP = 2
#: twins_event: the twin's box gap to the reference is always >= this (it never comes within 4 px of it)
REFERENCE_CLEARANCE = 5
#: relational: gap between the target / twin and the reference along the relation's axis; drift speed of all objects
RELATION_GAP = 2
RELATION_MAX_SPEED = 0.4
#: cap (fraction of the shorter frame side) on the size of the twins and the reference (three objects must fit)
FAMILY_MAX_SIZE = 0.3
_MAX_ATTEMPTS = 2000
_START_TRIES = 24


@dataclass
class _Sprite:
    """An object being planned: integer top-left sprite positions on every frame and presence."""

    colour: str
    shape: str
    size: int
    pos: np.ndarray  # (T, 2) int64 top-left (x, y) of the size x size sprite
    present: np.ndarray  # (T,) bool
    role: str

    @property
    def mask(self) -> np.ndarray:
        return shape_mask(self.shape, self.size)

    def box_array(self) -> np.ndarray:
        """(T, 4) exact boxes on every frame (also where absent)."""
        return _mask_offsets(self.shape, self.size)[None, :] + np.concatenate([self.pos, self.pos], axis=1)


def _mask_offsets(shape: str, size: int) -> np.ndarray:
    """``[x1, y1, x2, y2]`` of the mask's pixel extent inside its size x size square."""
    mask = shape_mask(shape, size)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.int64)


def _frames_for(seconds: float, fps: float) -> int:
    return max(1, math.ceil(seconds * fps - 1e-9))


def box_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Gap between boxes ``[x1, y1, x2, y2]`` (exclusive right/bottom): the number of empty pixel columns / rows
    between them along the axis where they are farthest apart; 0 when they touch, negative when they overlap."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    gaps = [b[..., 0] - a[..., 2], a[..., 0] - b[..., 2], b[..., 1] - a[..., 3], a[..., 1] - b[..., 3]]
    return np.max(np.stack(gaps), axis=0)


def masks_touch(mask_a: np.ndarray, pos_a: Sequence[int], mask_b: np.ndarray, pos_b: Sequence[int]) -> bool:
    """Whether two sprite masks placed at top-left ``pos`` (x, y) overlap or are 8-adjacent."""
    ha, wa = mask_a.shape
    dil = np.zeros((ha + 2, wa + 2), dtype=bool)
    for dy in range(3):
        for dx in range(3):
            dil[dy: dy + ha, dx: dx + wa] |= mask_a
    ax, ay = int(pos_a[0]) - 1, int(pos_a[1]) - 1
    bx, by = int(pos_b[0]), int(pos_b[1])
    x0, x1 = max(ax, bx), min(ax + wa + 2, bx + mask_b.shape[1])
    y0, y1 = max(ay, by), min(ay + ha + 2, by + mask_b.shape[0])
    if x0 >= x1 or y0 >= y1:
        return False
    return bool((dil[y0 - ay: y1 - ay, x0 - ax: x1 - ax] & mask_b[y0 - by: y1 - by, x0 - bx: x1 - bx]).any())


def _trajectory(phases: Sequence[tuple[int, float, float]]) -> np.ndarray:
    """(T, 2) integer offsets from the frame-0 position of piecewise-constant motion.

    Each phase ``(length, vx, vy)`` starts at an integer anchor and moves ``floor(v k + 0.5)`` after ``k`` frames, so
    the step from frame ``f`` to ``f + 1`` belongs to the phase of frame ``f``, every step of a phase with speed >= 1
    moves by >= 1 px in its direction, and two objects with the same phase velocity move by exactly the same steps.
    """
    out, ax, ay = [], 0, 0
    for length, vx, vy in phases:
        if length <= 0:
            continue
        k = np.arange(length, dtype=np.float64)
        out.append(np.stack([ax + np.floor(vx * k + 0.5), ay + np.floor(vy * k + 0.5)], axis=1))
        ax += int(math.floor(vx * length + 0.5))
        ay += int(math.floor(vy * length + 0.5))
    return np.concatenate(out).astype(np.int64)


def _start_bounds(off: np.ndarray, size: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer interval of frame-0 positions keeping ``start + off`` (a size x size sprite) inside the frame."""
    lo = -off.min(axis=0)
    hi = np.array([width - size, height - size]) - off.max(axis=0)
    return lo, hi


def _draw_start(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
    if (hi < lo).any():
        return None
    return np.array([int(rng.integers(lo[0], hi[0] + 1)), int(rng.integers(lo[1], hi[1] + 1))], dtype=np.int64)


def _direction_of(dx: float, dy: float) -> str:
    if dx == 0 and dy == 0:
        return "still"
    return ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")


def step_actions(boxes: np.ndarray) -> list[str]:
    """The action (``left/right/up/down/still``) of every frame-to-frame step of a (T, 4) box track."""
    d = np.diff(np.asarray(boxes, dtype=np.float64)[:, :2], axis=0)
    return [_direction_of(float(dx), float(dy)) for dx, dy in d]


def _size_range(spec: SyntheticSpec, side: int, cap_fraction: float | None = None) -> tuple[int, int]:
    lo, hi = round(spec.min_size * side), round(spec.max_size * side)
    if cap_fraction is not None:
        hi = max(lo, min(hi, round(cap_fraction * side)))
    return int(lo), int(hi)


def _speed_range(spec: SyntheticSpec) -> tuple[float, float]:
    return MIN_DEFINING_SPEED, max(MIN_DEFINING_SPEED, spec.max_speed)


def _outer_lengths(rng: np.random.Generator, rest: int, min_phase: int) -> tuple[int, int]:
    """Split ``rest`` frames into (before, after) phases, each empty or >= ``min_phase`` (not both empty)."""
    if rest < 2 * min_phase:
        pre = 0 if rng.random() < 0.5 else rest
    else:
        u = rng.random()
        pre = 0 if u < 0.2 else rest if u < 0.4 else int(rng.integers(min_phase, rest - min_phase + 1))
    return pre, rest - pre


def _phase_velocity(rng: np.random.Generator, action: str, length: int, spec: SyntheticSpec,
                    avail: tuple[int, int]) -> tuple[float, float] | None:
    """Velocity of an axis-aligned phase: ``action``'s unit vector times a speed in the defining range that fits."""
    ux, uy = _ACTION_UNIT[action]
    if action == "still" or length <= 0:
        return 0.0, 0.0
    vmin, vmax = _speed_range(spec)
    vmax = min(vmax, avail[0 if ux else 1] / length)
    if vmax < vmin:
        return None
    speed = float(rng.uniform(vmin, vmax))
    return ux * speed, uy * speed


def _plan_mover(rng: np.random.Generator, spec: SyntheticSpec, phases: Sequence[tuple[int, Sequence[str]]],
                avail: tuple[int, int]) -> tuple[list[dict[str, Any]], np.ndarray] | None:
    """Draw one action per phase (from its allowed set) and its velocity; return (phase facts, offsets) or None."""
    facts, motion, start = [], [], 0
    for length, allowed in phases:
        if length <= 0:
            continue
        action = allowed[int(rng.integers(len(allowed)))]
        v = _phase_velocity(rng, action, length, spec, avail)
        if v is None:
            return None
        facts.append({"start": start, "end": start + length, "action": action, "velocity": [v[0], v[1]]})
        motion.append((length, v[0], v[1]))
        start += length
    return facts, _trajectory(motion)


def _bouncing_distractor(rng: np.random.Generator, spec: SyntheticSpec, colour: str) -> _Sprite:
    """A distractor moving as in the appearance family: linear motion bouncing off the borders, maybe a sub-span."""
    T, H, W = spec.num_frames, spec.height, spec.width
    lo, hi = _size_range(spec, min(H, W))
    shape = spec.shapes[int(rng.integers(len(spec.shapes)))]
    size = int(rng.integers(lo, hi + 1))
    speed = rng.uniform(spec.min_speed, spec.max_speed)
    angle = rng.uniform(0, 2 * math.pi)
    t = np.arange(T, dtype=np.float64)
    xs = _bounce(rng.uniform(0, W - size), speed * math.cos(angle), t, W - size)
    ys = _bounce(rng.uniform(0, H - size), speed * math.sin(angle), t, H - size)
    s, e = _span(rng, T, spec.min_span, 0.95) if rng.random() < spec.distractor_span_prob else (0, T)
    present = np.zeros(T, dtype=bool)
    present[s:e] = True
    return _Sprite(colour, shape, size, np.stack([xs, ys], axis=1).astype(np.int64), present, "distractor")


def _min_gap(a: _Sprite, b: _Sprite, frames: np.ndarray | None = None) -> float:
    """Smallest box gap between two sprites over the frames where both are present (and in ``frames``)."""
    both = a.present & b.present
    if frames is not None:
        both &= frames
    if not both.any():
        return math.inf
    return float(box_gap(a.box_array()[both], b.box_array()[both]).min())


def _query(rng: np.random.Generator, declarative: Sequence[str], interrogative: Sequence[str],
           **words: str) -> tuple[str, str]:
    if rng.random() < 0.5:
        qtype, templates = "declarative", declarative
    else:
        qtype, templates = "interrogative", interrogative
    return templates[int(rng.integers(len(templates)))].format(**words), qtype


def _compose(spec: SyntheticSpec, background: np.ndarray, sprites: Sequence[_Sprite], span: tuple[int, int], family: str,
             query: str, qtype: str, direction: str, details: dict[str, Any]) -> SyntheticClip:
    """Draw ``sprites`` in order (the target last, so never occluded) and build the clip with span ``[ts, te)``."""
    T = spec.num_frames
    ts, te = span
    frames = np.repeat(background[None], T, axis=0)
    objects = []
    for sp in sprites:
        mask, rgb = sp.mask, np.asarray(COLOURS[sp.colour], dtype=np.uint8)
        for f in np.flatnonzero(sp.present):
            x, y = int(sp.pos[f, 0]), int(sp.pos[f, 1])
            if x < 0 or y < 0 or x + sp.size > spec.width or y + sp.size > spec.height:
                raise AssertionError(f"{sp.role} out of the frame at frame {f}")  # a planning bug
            frames[f, y: y + sp.size, x: x + sp.size][mask] = rgb
        boxes = sp.box_array().astype(np.float64)
        boxes[~sp.present] = np.nan
        objects.append(SyntheticObject(sp.colour, sp.shape, sp.size, sp.present.copy(), boxes,
                                       is_target=sp.role == "target", role=sp.role))
    target = objects[-1]
    assert target.is_target and 0 <= ts < te <= T and target.present[ts:te].all()
    twins = [o for o in objects if o.role == "twin"]
    twin_boxes = twins[0].boxes[ts:te].tolist() if twins else None
    return SyntheticClip(
        frames=frames, fps=float(spec.fps), query=query, query_type=qtype, tube_start=ts, tube_end=te,
        frame_ids=list(range(ts, te)), boxes=target.boxes[ts:te].tolist(), target_colour=target.colour,
        target_rgb=COLOURS[target.colour], target_shape=target.shape, direction=direction, objects=objects,
        family=family, twin_boxes=twin_boxes, details=dict(details, roles=[o.role for o in objects]),
    )


def _need(cond: bool, family: str, what: str) -> None:
    if not cond:
        raise ValueError(f"the {family!r} family needs {what}")


def _span_length_range(spec: SyntheticSpec, min_phase: int, reserve: int) -> tuple[int, int]:
    T = spec.num_frames
    lo = max(min_phase, math.ceil(spec.min_span * T))
    hi = min(math.floor(spec.max_span * T), T - reserve)
    return lo, hi


def _render_action(rng: np.random.Generator, spec: SyntheticSpec, twins: bool) -> SyntheticClip:
    """The ``action`` family (unique target colour) or the ``twins_motion`` family (an identical twin)."""
    family = "twins_motion" if twins else "action"
    T, H, W = spec.num_frames, spec.height, spec.width
    side = min(H, W)
    mp = _frames_for(MIN_PHASE_SECONDS, spec.fps)
    n_lo, n_hi = _span_length_range(spec, mp, mp)
    _need(n_lo <= n_hi, family, f"num_frames >= {2 * mp} (a {mp}-frame span and a {mp}-frame outer phase)")
    background = _background(rng, H, W)
    if twins:
        n_distractors = int(rng.integers(0, min(2, len(spec.colours) - 1) + 1))
    else:
        n_distractors = int(rng.integers(spec.min_objects, spec.max_objects + 1)) - 1
    colours = [spec.colours[i] for i in rng.permutation(len(spec.colours))[: n_distractors + 1]]
    colour, shape = colours[0], spec.shapes[int(rng.integers(len(spec.shapes)))]
    action = ACTIONS[int(rng.integers(len(ACTIONS)))]
    others = tuple(a for a in ACTIONS if a != action)
    size_lo, size_hi = _size_range(spec, side, FAMILY_MAX_SIZE if twins else None)
    avail = (W - size_lo, H - size_lo)
    for _ in range(_MAX_ATTEMPTS):
        n = int(rng.integers(n_lo, n_hi + 1))
        pre, post = _outer_lengths(rng, T - n, mp)
        ts, te = pre, pre + n
        plan = _plan_mover(rng, spec, [(pre, others), (n, (action,)), (post, others)], avail)
        if plan is None:
            continue
        plans = [plan]
        if twins:
            twin_plan = _plan_mover(rng, spec, [(pre, others), (n, others), (post, others)], avail)
            if twin_plan is None:
                continue
            plans.append(twin_plan)
        ranges = np.max([p[1].max(axis=0) - p[1].min(axis=0) for p in plans], axis=0)
        cap = min(size_hi, W - int(ranges[0]), H - int(ranges[1]))
        if cap < size_lo:
            continue
        size = int(rng.integers(size_lo, cap + 1))
        start = _draw_start(rng, *_start_bounds(plan[1], size, W, H))
        assert start is not None
        everywhere = np.ones(T, dtype=bool)
        target = _Sprite(colour, shape, size, start + plan[1], everywhere.copy(), "target")
        twin = None
        if twins:
            lo, hi = _start_bounds(plans[1][1], size, W, H)
            for _ in range(_START_TRIES):
                twin_start = _draw_start(rng, lo, hi)
                if twin_start is None:
                    break
                cand = _Sprite(colour, shape, size, twin_start + plans[1][1], everywhere.copy(), "twin")
                if _min_gap(cand, target) >= TWIN_GAP:
                    twin = cand
                    break
            if twin is None:
                continue
        break
    else:
        raise RuntimeError(f"could not plan a {family} clip in {_MAX_ATTEMPTS} attempts")
    distractors = [_bouncing_distractor(rng, spec, c) for c in colours[1:]]
    sprites = distractors + ([twin] if twin is not None else []) + [target]
    words = {"colour": colour, "shape": shape, "moves": _MOVES[action], "moving": _MOVING[action]}
    query, qtype = _query(rng, ACTION_DECLARATIVE_TEMPLATES, ACTION_INTERROGATIVE_TEMPLATES, **words)
    details: dict[str, Any] = {"action": action, "target_phases": plan[0]}
    if twin is not None:
        details["twin_phases"] = plans[1][0]
    return _compose(spec, background, sprites, (ts, te), family, query, qtype, action, details)


def _contact_offset(shape: str, size: int, ref_shape: str, ref_size: int, approach: str, jitter: int) -> np.ndarray:
    """Top-left of the target's sprite relative to the reference's when the target, coming from side ``approach`` of
    the reference with its centre aligned (± ``jitter``) across the approach axis, first touches it, plus 1 px."""
    mt, mr = shape_mask(shape, size), shape_mask(ref_shape, ref_size)
    ot, orf = _mask_offsets(shape, size), _mask_offsets(ref_shape, ref_size)
    perp = (ref_size - size) // 2 + jitter
    if approach == "left":
        rel, toward = np.array([orf[0] - ot[2], perp]), np.array([1, 0])
    elif approach == "right":
        rel, toward = np.array([orf[2] - ot[0], perp]), np.array([-1, 0])
    elif approach == "above":
        rel, toward = np.array([perp, orf[1] - ot[3]]), np.array([0, 1])
    else:
        rel, toward = np.array([perp, orf[3] - ot[1]]), np.array([0, -1])
    for _ in range(size + ref_size):
        if masks_touch(mt, rel, mr, (0, 0)):
            break
        rel = rel + toward
    return (rel + toward).astype(np.int64)


_TOWARD = {"left": (1, 0), "right": (-1, 0), "above": (0, 1), "below": (0, -1)}  # approach side -> motion toward R


def _render_twins_event(rng: np.random.Generator, spec: SyntheticSpec) -> SyntheticClip:
    family = "twins_event"
    T, H, W = spec.num_frames, spec.height, spec.width
    side = min(H, W)
    mp = _frames_for(MIN_PHASE_SECONDS, spec.fps)
    a_min, c_min = _frames_for(APPROACH_SECONDS, spec.fps), _frames_for(CONTACT_SECONDS, spec.fps)
    pre_min = max(_frames_for(EVENT_PRE_SECONDS, spec.fps), a_min + c_min)
    _need(pre_min + mp <= T, family, f"num_frames >= {pre_min + mp} (a {pre_min}-frame contact phase and a {mp}-frame span)")
    _need(len(spec.colours) >= 2 and len(spec.shapes) >= 2, family, ">= 2 colours and >= 2 shapes")
    background = _background(rng, H, W)
    n_distractors = int(rng.integers(0, min(1, len(spec.colours) - 2) + 1))
    colours = [spec.colours[i] for i in rng.permutation(len(spec.colours))[: 2 + n_distractors]]
    colour, ref_colour = colours[0], colours[1]
    shape = spec.shapes[int(rng.integers(len(spec.shapes)))]
    ref_shapes = [s for s in spec.shapes if s != shape]
    ref_shape = ref_shapes[int(rng.integers(len(ref_shapes)))]
    size_lo, size_hi = _size_range(spec, side, FAMILY_MAX_SIZE)
    vmin, vmax = _speed_range(spec)
    directions = ("left", "right", "up", "down")
    for _ in range(_MAX_ATTEMPTS):
        ts = int(rng.integers(pre_min, T - mp + 1))
        rest = T - ts
        te = T if rest < 2 * mp or rng.random() < 0.3 else ts + int(rng.integers(mp, rest - mp + 1))
        a_len = int(rng.integers(a_min, ts - c_min + 1))
        c_len = int(rng.integers(c_min, ts - a_len + 1))
        d_len = ts - a_len - c_len
        size, ref_size = int(rng.integers(size_lo, size_hi + 1)), int(rng.integers(size_lo, size_hi + 1))
        approach = ("left", "right", "above", "below")[int(rng.integers(4))]
        toward = _TOWARD[approach]
        va = float(rng.uniform(vmin, vmax))
        departs = [d for d in directions if _ACTION_UNIT[d] != toward]
        depart = departs[int(rng.integers(len(departs)))]
        vd = float(rng.uniform(vmin, vmax))
        vs, angle = float(rng.uniform(spec.min_speed, spec.max_speed)), float(rng.uniform(0, 2 * math.pi))
        vsx, vsy = vs * math.cos(angle), vs * math.sin(angle)
        jit = min(size, ref_size) // 4
        jitter = int(rng.integers(-jit, jit + 1))
        ux, uy = _ACTION_UNIT[depart]
        target_off = _trajectory([(a_len, va * toward[0], va * toward[1]), (c_len, 0.0, 0.0), (d_len, vd * ux, vd * uy),
                                  (te - ts, vsx, vsy), (T - te, 0.0, 0.0)])
        rel_off = _contact_offset(shape, size, ref_shape, ref_size, approach, jitter) + target_off - target_off[a_len]
        lo, hi = _start_bounds(rel_off[:te], size, W, H)  # bounds on the reference's position
        ref_pos = _draw_start(rng, np.maximum(lo, 0), np.minimum(hi, [W - ref_size, H - ref_size]))
        if ref_pos is None:
            continue
        twins_present = np.zeros(T, dtype=bool)
        twins_present[:te] = True
        ref_present = np.zeros(T, dtype=bool)
        ref_present[:ts] = True
        target = _Sprite(colour, shape, size, ref_pos + rel_off, twins_present, "target")
        ref = _Sprite(ref_colour, ref_shape, ref_size, np.repeat(ref_pos[None], T, axis=0), ref_present, "reference")
        contact = np.array([masks_touch(target.mask, target.pos[f], ref.mask, ref_pos) for f in range(ts)])
        if contact[0] or not contact[a_len: a_len + c_len].all():
            continue
        twin_dirs = [directions[int(rng.integers(4))] for _ in range(2)]
        twin_speeds = [float(rng.uniform(vmin, vmax)) for _ in range(2)]
        (ax, ay), (dx, dy) = _ACTION_UNIT[twin_dirs[0]], _ACTION_UNIT[twin_dirs[1]]
        twin_off = _trajectory([(a_len, twin_speeds[0] * ax, twin_speeds[0] * ay), (c_len, 0.0, 0.0),
                                (d_len, twin_speeds[1] * dx, twin_speeds[1] * dy), (te - ts, vsx, vsy), (T - te, 0.0, 0.0)])
        lo, hi = _start_bounds(twin_off[:te], size, W, H)
        twin = None
        for _ in range(_START_TRIES):
            start = _draw_start(rng, lo, hi)
            if start is None:
                break
            cand = _Sprite(colour, shape, size, start + twin_off, twins_present, "twin")
            if _min_gap(cand, ref) >= REFERENCE_CLEARANCE and _min_gap(cand, target) >= TWIN_GAP:
                twin = cand
                break
        if twin is None:
            continue
        distractors = []
        for c in colours[2:]:
            for _ in range(_START_TRIES):
                d = _bouncing_distractor(rng, spec, c)
                if min(_min_gap(d, twin), _min_gap(d, target)) >= TWIN_GAP:
                    distractors.append(d)
                    break
        if len(distractors) < len(colours) - 2:
            continue
        break
    else:
        raise RuntimeError(f"could not plan a {family} clip in {_MAX_ATTEMPTS} attempts")
    touching = np.flatnonzero(contact)
    ref_name = f"{ref_colour} {ref_shape}"
    query, qtype = _query(rng, EVENT_DECLARATIVE_TEMPLATES, EVENT_INTERROGATIVE_TEMPLATES, colour=colour, shape=shape,
                          ref=ref_name)
    d = target.pos[te - 1] - target.pos[ts]
    details = {
        "reference": ref_name, "reference_visible": [0, ts], "twins_visible": [0, te], "approach_side": approach,
        "target_phases": [{"start": 0, "end": a_len, "action": "approach"},
                          {"start": a_len, "end": a_len + c_len, "action": "contact"},
                          {"start": a_len + c_len, "end": ts, "action": "depart " + depart},
                          {"start": ts, "end": te, "action": "span"}],
        "contact_frames": touching.tolist(), "span_velocity": [vsx, vsy],
    }
    details["target_phases"] = [p for p in details["target_phases"] if p["end"] > p["start"]]
    sprites = distractors + [ref, twin, target]
    direction = _direction_of(float(d[0]), float(d[1]))
    return _compose(spec, background, sprites, (ts, te), family, query, qtype, direction, details)


def _relation_bounds(off: np.ndarray, shape: str, size: int, ref_boxes: np.ndarray, relation: str, frames: np.ndarray,
                     width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer interval of frame-0 positions that keep the sprite inside the frame and in ``relation`` to the
    reference's boxes (entirely on that side with a gap of :data:`RELATION_GAP`, box centre within the reference's
    extent across that axis) on every frame of ``frames``."""
    off, rb = off[frames], ref_boxes[frames]
    mo = _mask_offsets(shape, size)
    lo, hi = _start_bounds(off, size, width, height)
    axis = 0 if relation in ("left of", "right of") else 1
    perp = 1 - axis
    if relation in ("left of", "above"):
        hi[axis] = min(hi[axis], int((rb[:, axis] - RELATION_GAP - off[:, axis] - mo[2 + axis]).min()))
    else:
        lo[axis] = max(lo[axis], int((rb[:, 2 + axis] + RELATION_GAP - off[:, axis] - mo[axis]).max()))
    centre = (mo[perp] + mo[2 + perp]) / 2.0
    lo[perp] = max(lo[perp], math.ceil((rb[:, perp] - off[:, perp] - centre).max()))
    hi[perp] = min(hi[perp], math.floor((rb[:, 2 + perp] - off[:, perp] - centre).min()))
    return lo, hi


def _render_relational(rng: np.random.Generator, spec: SyntheticSpec) -> SyntheticClip:
    family = "relational"
    T, H, W = spec.num_frames, spec.height, spec.width
    side = min(H, W)
    mp = _frames_for(MIN_PHASE_SECONDS, spec.fps)
    n_lo, n_hi = _span_length_range(spec, mp, 0)
    _need(n_lo <= n_hi, family, f"a span of >= {mp} frames within max_span * num_frames")
    _need(len(spec.colours) >= 2 and len(spec.shapes) >= 2, family, ">= 2 colours and >= 2 shapes")
    background = _background(rng, H, W)
    colour, ref_colour = [spec.colours[i] for i in rng.permutation(len(spec.colours))[:2]]
    shape = spec.shapes[int(rng.integers(len(spec.shapes)))]
    ref_shapes = [s for s in spec.shapes if s != shape]
    ref_shape = ref_shapes[int(rng.integers(len(ref_shapes)))]
    relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
    n = int(rng.integers(n_lo, n_hi + 1))
    ts = int(rng.integers(0, T - n + 1))
    te = ts + n
    span = np.zeros(T, dtype=bool)
    span[ts:te] = True
    everywhere = np.ones(T, dtype=bool)
    size_lo, size_hi = _size_range(spec, side, FAMILY_MAX_SIZE)
    for _ in range(_MAX_ATTEMPTS):
        size, ref_size = int(rng.integers(size_lo, size_hi + 1)), int(rng.integers(size_lo, size_hi + 1))
        offs = []
        for _k in range(3):
            speed, angle = rng.uniform(0, RELATION_MAX_SPEED), rng.uniform(0, 2 * math.pi)
            offs.append(_trajectory([(T, speed * math.cos(angle), speed * math.sin(angle))]))
        ref_pos = _draw_start(rng, *_start_bounds(offs[0], ref_size, W, H))
        if ref_pos is None:
            continue
        ref = _Sprite(ref_colour, ref_shape, ref_size, ref_pos + offs[0], everywhere.copy(), "reference")
        ref_boxes = ref.box_array()
        t_start = _draw_start(rng, *_relation_bounds(offs[1], shape, size, ref_boxes, relation, span, W, H))
        if t_start is None:
            continue
        w_start = _draw_start(rng, *_relation_bounds(offs[2], shape, size, ref_boxes, _OPPOSITE[relation], everywhere, W, H))
        if w_start is None:
            continue
        target = _Sprite(colour, shape, size, t_start + offs[1], span.copy(), "target")
        twin = _Sprite(colour, shape, size, w_start + offs[2], everywhere.copy(), "twin")
        assert _min_gap(target, twin) >= TWIN_GAP
        break
    else:
        raise RuntimeError(f"could not plan a {family} clip in {_MAX_ATTEMPTS} attempts")
    ref_name = f"{ref_colour} {ref_shape}"
    words = _RELATION_WORDS[relation]
    rel = words[int(rng.integers(len(words)))]
    query, qtype = _query(rng, RELATION_DECLARATIVE_TEMPLATES, RELATION_INTERROGATIVE_TEMPLATES, colour=colour, shape=shape,
                          rel=rel, ref=ref_name)
    d = target.pos[te - 1] - target.pos[ts]
    details = {"relation": relation, "twin_relation": _OPPOSITE[relation], "reference": ref_name,
               "reference_visible": [0, T], "twin_visible": [0, T]}
    return _compose(spec, background, [ref, twin, target], (ts, te), family, query, qtype,
                    _direction_of(float(d[0]), float(d[1])), details)


def render_family_clip(rng: np.random.Generator, family: str, spec: SyntheticSpec | None = None) -> SyntheticClip:
    """Render one clip of query family ``family`` (one of :data:`FAMILIES`) from ``rng``; see the module docstring.

    ``"appearance"`` is exactly :func:`render_synthetic_clip` (same draws, pixels and rows). The other families need
    clips long enough for their phases (``ValueError`` otherwise: 32 frames for ``action`` / ``twins_motion``, 41 for
    ``twins_event``, 16 for ``relational`` at 10 fps).
    """
    if family == "appearance":
        return render_synthetic_clip(rng, spec)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    spec = spec or SyntheticSpec()
    spec.validate()
    if family == "action":
        return _render_action(rng, spec, twins=False)
    if family == "twins_motion":
        return _render_action(rng, spec, twins=True)
    if family == "twins_event":
        return _render_twins_event(rng, spec)
    return _render_relational(rng, spec)


def render_mixed_clip(rng: np.random.Generator, spec: SyntheticSpec | None = None,
                      mix: dict[str, float] | None = None) -> SyntheticClip:
    """Draw a family from ``rng`` with weights ``mix`` (default :data:`DEFAULT_FAMILY_MIX`, in the dict's order) and
    render it with :func:`render_family_clip` from the same ``rng``."""
    mix = DEFAULT_FAMILY_MIX if mix is None else mix
    unknown = set(mix) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)}; choose from {FAMILIES}")
    names = list(mix)
    weights = np.asarray([float(mix[n]) for n in names], dtype=np.float64)
    if not len(names) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"family weights must be >= 0 with a positive sum, got {mix}")
    family = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    return render_family_clip(rng, family, spec)


__all__ = [
    "FAMILIES", "DEFAULT_FAMILY_MIX", "ACTIONS", "RELATIONS", "render_family_clip", "render_mixed_clip", "box_gap",
    "masks_touch", "step_actions",
]
