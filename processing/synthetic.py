"""Synthetic STVG benchmark: coloured shapes moving over a textured background, with exact boxes.

Every clip is 112x112, 80 frames at 10 fps by default (:class:`SyntheticSpec`). The background is a mildly
textured grey that never comes close to the saturated shape colours, so a colour test finds the shapes' pixels
exactly. Boxes are the exact pixel extent of the drawn shape, ``[x1, y1, x2, y2]`` with exclusive right / bottom
edges (a shape filling columns 10..19 has ``x1 = 10, x2 = 20``). The target is always drawn last, so it is never
occluded. Everything is a function of ``numpy.random.Generator`` draws: the same seed gives the same rows and the
same pixels before encoding (clip ``i`` of a dataset uses ``default_rng([seed, i])``, so it does not depend on the
number of videos). The span is always ``[tube_start, tube_end)`` and ``frame_ids == range(tube_start, tube_end)``
with one target box per frame.

The clips of this module are the *appearance* family (the control task): one target (a colour + shape named by the
query, colour unique in the clip) visible only during a random span of 20-80 % of the clip, 1-3 distractors of
other colours (shapes may repeat); objects move linearly and bounce off the borders. The other query families, in
which each part of the model has a reason to matter, are rendered by :mod:`bridge_stg.processing.synthetic_families`
from the same building blocks (:class:`SyntheticSpec`, :class:`SyntheticClip`, :func:`shape_mask`).

This is the data of the demo and of the test suite. :func:`write_synthetic_dataset` writes a dataset folder of
``appearance`` clips, or of a family mix (``families=``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import av
import numpy as np
from tqdm.auto import tqdm
from transformers.utils import logging

from .report import ConversionReport
from .writer import write_dataset

logger = logging.get_logger(__name__)

#: Saturated shape colours (RGB). Each has one channel >= 205 and one <= 70; the background is grey.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (35, 190, 50),
    "blue": (40, 70, 230),
    "yellow": (235, 215, 35),
    "magenta": (215, 45, 215),
    "cyan": (35, 205, 220),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")

DECLARATIVE_TEMPLATES = ("the {colour} {shape} moving {direction}", "a {colour} {shape}", "the {colour} {shape}",
                         "a {colour} {shape} that moves {direction}")
INTERROGATIVE_TEMPLATES = ("what is the {colour} {shape} doing?", "where is the {colour} {shape}?",
                           "where is the {colour} {shape} moving {direction}?", "which object is the {colour} {shape}?")


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of one synthetic clip. Sizes are fractions of the shorter frame side."""

    width: int = 112
    height: int = 112
    fps: float = 10.0
    num_frames: int = 80
    min_objects: int = 2
    max_objects: int = 4
    min_span: float = 0.2
    max_span: float = 0.8
    min_size: float = 0.15
    max_size: float = 0.4
    min_speed: float = 0.6
    max_speed: float = 2.5
    distractor_span_prob: float = 0.5
    colours: tuple[str, ...] = tuple(COLOURS)
    shapes: tuple[str, ...] = SHAPES
    crf: int = 18

    def validate(self) -> None:
        """Raise ``ValueError`` on an inconsistent spec."""
        if self.width % 2 or self.height % 2 or self.width < 16 or self.height < 16:
            raise ValueError(f"width/height must be even and >= 16 (yuv420p), got {self.width}x{self.height}")
        if self.fps <= 0 or self.num_frames < 5:
            raise ValueError(f"need fps > 0 and num_frames >= 5, got {self.fps}, {self.num_frames}")
        if not 2 <= self.min_objects <= self.max_objects <= len(self.colours):
            raise ValueError(f"need 2 <= min_objects <= max_objects <= {len(self.colours)} colours")
        if not 0 < self.min_span <= self.max_span < 1:
            raise ValueError("need 0 < min_span <= max_span < 1")
        if not 0 < self.min_size <= self.max_size < 1:
            raise ValueError("need 0 < min_size <= max_size < 1")
        unknown = set(self.colours) - set(COLOURS) or set(self.shapes) - set(SHAPES)
        if unknown:
            raise ValueError(f"unknown colours/shapes {sorted(unknown)}")


@dataclass
class SyntheticObject:
    """One drawn object: per-frame exact boxes (NaN where absent) and presence."""

    colour: str
    shape: str
    size: int
    present: np.ndarray  # (T,) bool
    boxes: np.ndarray  # (T, 4) float64, NaN where absent
    is_target: bool = False
    role: str = ""  # "target", "twin", "reference" or "distractor" (default: from is_target)

    def __post_init__(self) -> None:
        if not self.role:
            self.role = "target" if self.is_target else "distractor"


@dataclass
class SyntheticClip:
    """A rendered clip in memory with its canonical annotation fields."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    fps: float
    query: str
    query_type: str
    tube_start: int
    tube_end: int
    frame_ids: list[int]
    boxes: list[list[float]]
    target_colour: str
    target_rgb: tuple[int, int, int]
    target_shape: str
    direction: str
    objects: list[SyntheticObject] = field(default_factory=list)
    family: str = "appearance"
    twin_boxes: list[list[float]] | None = None  # twin families: the twin's exact box on every frame of frame_ids
    details: dict[str, Any] = field(default_factory=dict)  # free-form ground-truth facts of the family

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    def row(self, query_id: str, video_id: str, video: str) -> dict[str, Any]:
        """The canonical row of this clip (segment = the whole clip)."""
        return {
            "query_id": query_id, "video_id": video_id, "video": video, "query": self.query, "query_type": self.query_type,
            "task": "stvg", "fps": float(self.fps), "num_frames": self.num_frames, "width": self.width, "height": self.height,
            "segment_start": 0, "segment_end": self.num_frames, "tube_start": self.tube_start, "tube_end": self.tube_end,
            "frame_ids": list(self.frame_ids), "boxes": [list(b) for b in self.boxes], "target_id": None,
            "target_type": f"{self.target_colour} {self.target_shape}",
        }


def shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean ``size`` × ``size`` mask of a shape (pixel centres tested against the ideal outline)."""
    c = (np.arange(size) + 0.5) - size / 2.0
    yy, xx = np.meshgrid(c, c, indexing="ij")
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "circle":
        return xx**2 + yy**2 <= (size / 2.0) ** 2
    if shape == "triangle":  # apex at the top centre, base on the bottom row
        frac = (yy + size / 2.0) / size  # 0 at the top edge, 1 at the bottom edge
        return np.abs(xx) <= frac * size / 2.0 + 1e-9
    raise ValueError(f"unknown shape {shape!r}")


def _bounce(p0: float, v: float, t: np.ndarray, limit: int) -> np.ndarray:
    """Integer positions of linear motion ``p0 + v t`` reflected inside ``[0, limit]``."""
    if limit <= 0:
        return np.zeros_like(t, dtype=np.int64)
    x = np.mod(p0 + v * t, 2 * limit)
    x = np.where(x > limit, 2 * limit - x, x)
    return np.clip(np.rint(x), 0, limit).astype(np.int64)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Mildly textured grey: coarse blotches + fine grain + a slight tint, channels within [70, 175]."""
    base = rng.uniform(100, 145)
    coarse = rng.normal(0, 12, size=(h // 8 + 1, w // 8 + 1))
    coarse = np.kron(coarse, np.ones((8, 8)))[:h, :w]
    grain = rng.normal(0, 4, size=(h, w))
    tint = rng.uniform(-6, 6, size=3)
    img = base + coarse[..., None] + grain[..., None] + tint[None, None, :]
    return np.clip(img, 70, 175).astype(np.uint8)


def _span(rng: np.random.Generator, t: int, lo: float, hi: float) -> tuple[int, int]:
    n_lo, n_hi = max(1, math.ceil(lo * t)), max(1, math.floor(hi * t))
    n = int(rng.integers(n_lo, max(n_lo, n_hi) + 1))
    s = int(rng.integers(0, t - n + 1))
    return s, s + n


def render_synthetic_clip(rng: np.random.Generator, spec: SyntheticSpec | None = None) -> SyntheticClip:
    """Render one clip in memory (frames + exact target boxes + query) from ``rng``."""
    spec = spec or SyntheticSpec()
    spec.validate()
    T, H, W = spec.num_frames, spec.height, spec.width
    side = min(H, W)
    frames_bg = _background(rng, H, W)
    n_obj = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    colours = [spec.colours[i] for i in rng.permutation(len(spec.colours))[:n_obj]]  # unique colours; index 0 = target
    t = np.arange(T, dtype=np.float64)
    objects: list[SyntheticObject] = []
    positions: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for k, colour in enumerate(colours):
        shape = spec.shapes[int(rng.integers(len(spec.shapes)))]
        size = int(rng.integers(round(spec.min_size * side), round(spec.max_size * side) + 1))
        mask = shape_mask(shape, size)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        mx1, my1, mx2, my2 = cols[0], rows[0], cols[-1] + 1, rows[-1] + 1
        speed = rng.uniform(spec.min_speed, spec.max_speed)
        angle = rng.uniform(0, 2 * math.pi)
        xs = _bounce(rng.uniform(0, W - size), speed * math.cos(angle), t, W - size)
        ys = _bounce(rng.uniform(0, H - size), speed * math.sin(angle), t, H - size)
        if k == 0:
            s, e = _span(rng, T, spec.min_span, spec.max_span)
        elif rng.random() < spec.distractor_span_prob:
            s, e = _span(rng, T, spec.min_span, 0.95)
        else:
            s, e = 0, T
        present = np.zeros(T, dtype=bool)
        present[s:e] = True
        boxes = np.stack([xs + mx1, ys + my1, xs + mx2, ys + my2], axis=1).astype(np.float64)
        boxes[~present] = np.nan
        objects.append(SyntheticObject(colour, shape, size, present, boxes, is_target=k == 0))
        positions.append((xs, ys, mask))
    frames = np.repeat(frames_bg[None], T, axis=0)
    for k in list(range(1, n_obj)) + [0]:  # distractors first, the target on top
        obj, (xs, ys, mask) = objects[k], positions[k]
        rgb = np.asarray(COLOURS[obj.colour], dtype=np.uint8)
        for f in np.flatnonzero(obj.present):
            region = frames[f, ys[f]: ys[f] + obj.size, xs[f]: xs[f] + obj.size]
            region[mask] = rgb
    target = objects[0]
    ts, te = int(np.flatnonzero(target.present)[0]), int(np.flatnonzero(target.present)[-1]) + 1
    xs, ys, _ = positions[0]
    dx, dy = float(xs[te - 1] - xs[ts]), float(ys[te - 1] - ys[ts])
    if max(abs(dx), abs(dy)) < 2:  # bounced back to where it started: use the motion at mid-span
        m = min(max((ts + te) // 2, 1), T - 2)
        dx, dy = float(xs[m + 1] - xs[m - 1]), float(ys[m + 1] - ys[m - 1])
    direction = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
    if rng.random() < 0.5:
        qtype, templates = "declarative", DECLARATIVE_TEMPLATES
    else:
        qtype, templates = "interrogative", INTERROGATIVE_TEMPLATES
    query = templates[int(rng.integers(len(templates)))].format(colour=target.colour, shape=target.shape, direction=direction)
    return SyntheticClip(
        frames=frames, fps=float(spec.fps), query=query, query_type=qtype, tube_start=ts, tube_end=te,
        frame_ids=list(range(ts, te)), boxes=target.boxes[ts:te].tolist(), target_colour=target.colour,
        target_rgb=COLOURS[target.colour], target_shape=target.shape, direction=direction, objects=objects,
    )


def write_mp4(path: str | os.PathLike[str], frames: np.ndarray, fps: float, crf: int = 18) -> None:
    """Encode RGB ``frames`` (T, H, W, 3) uint8 as H.264 yuv420p mp4 with PyAV."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"crf": str(crf), "preset": "medium", "threads": "1"}
        for img in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def split_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Clip counts of train / validation / test for ``n`` clips (each split gets >= 1 clip when n >= 3)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"splits must be 3 non-negative fractions summing to 1, got {fractions}")
    sizes = [int(round(f * n)) for f in fractions[:2]]
    if n >= 3:
        sizes = [max(1, sizes[0]), max(1, sizes[1])]
        sizes[0] = min(sizes[0], n - sizes[1] - 1)
    sizes.append(n - sum(sizes))
    if sizes[2] < 0:
        raise ValueError(f"cannot split {n} clips as {fractions}")
    return sizes


SPLIT_NAMES = ("train", "validation", "test")


def write_synthetic_dataset(
    out_dir: str | os.PathLike[str],
    num_videos: int,
    seed: int,
    spec: SyntheticSpec | None = None,
    splits: Sequence[float] = (0.8, 0.1, 0.1),
    embed_videos: bool = False,
    progress: bool = True,
    families: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Render, encode and write ``num_videos`` clips as a dataset folder; return the report dict.

    Clip ``i`` uses ``numpy.random.default_rng([seed, i])``; the first clips go to ``train``, the
    next to ``validation``, the rest to ``test`` (:func:`split_sizes`). Videos are written to
    ``out_dir/videos/<split>/synth_<i>.mp4`` and the ``video`` column is relative to ``out_dir``
    (the video root of a synthetic set is the dataset folder itself). With ``embed_videos`` the mp4
    bytes are also stored in the ``video_bytes`` column. With ``families`` (query families of
    :mod:`bridge_stg.processing.synthetic_families`), clip ``i`` is of family ``families[i % len(families)]``
    and its query id / video id is ``{family}_<i>`` (so results can be split by family).
    """
    spec = spec or SyntheticSpec()
    spec.validate()
    if num_videos < 1:
        raise ValueError(f"num_videos must be >= 1, got {num_videos}")
    out = Path(out_dir)
    sizes = split_sizes(num_videos, splits)
    bounds = np.cumsum([0] + sizes)
    report = ConversionReport(
        "synthetic",
        {"num_videos": num_videos, "seed": seed, "splits": list(splits), "embed_videos": embed_videos, "spec": asdict(spec)},
        ["one query per clip; segment = the whole clip; tube = the frames where the target is drawn",
         "boxes = exact pixel extent of the drawn target, [x1, y1, x2, y2] with exclusive right/bottom edges",
         "video paths are relative to the dataset folder; clip i uses numpy default_rng([seed, i])"],
    )
    if families is not None:
        from .synthetic_families import FAMILIES, render_family_clip

        families = tuple(families)
        unknown = sorted(set(families) - set(FAMILIES))
        if unknown or not families:
            raise ValueError(f"families: unknown {unknown or 'none given'}; choose from {FAMILIES}")
        report.inputs["families"] = list(families)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name, n in zip(SPLIT_NAMES, sizes) if n > 0}
    for i in tqdm(range(num_videos), desc="synth", unit="clip", disable=not progress):
        split = SPLIT_NAMES[int(np.searchsorted(bounds, i, side="right")) - 1]
        if families is None:
            clip = render_synthetic_clip(np.random.default_rng([seed, i]), spec)
            vid = f"synth_{i:06d}"
        else:
            clip = render_family_clip(np.random.default_rng([seed, i]), families[i % len(families)], spec)
            vid = f"{clip.family}_{i:06d}"
        rel = f"videos/{split}/{vid}.mp4"
        write_mp4(out / rel, clip.frames, clip.fps, spec.crf)
        rows[split].append(clip.row(vid, vid, rel))
        report.add_inputs(split)
    title = f"bridge-stg synthetic STVG ({num_videos} clips, seed {seed})"
    desc = ("Coloured shapes moving over a textured background. The query names the target's colour and shape; the target "
            "is visible only during the tube. Boxes are exact. The `video` column is relative to this folder.")
    return write_dataset(out, rows, report, title=title, description=desc, embed_videos_from=out if embed_videos else None)


__all__ = [
    "COLOURS", "SHAPES", "SyntheticSpec", "SyntheticObject", "SyntheticClip", "shape_mask", "render_synthetic_clip",
    "write_mp4", "split_sizes", "write_synthetic_dataset", "SPLIT_NAMES",
]
