"""Synthetic sources for multi-task training: temporal grounding (``tvg``) and referring expressions (``rec``) from
the same generator and query families as the synthetic STVG benchmark, with exact ground truth (docs/multitask.md).

Every item is rendered from one clip of :func:`bridge_stg.processing.synthetic_families.render_family_clip` and one
``numpy.random.Generator``; the same generator gives the same item.

``stvg`` (as today)
    The family clip itself: the family's query, its span and one exact target box per span frame.
``tvg`` (span only, no boxes)
    The same clip with a *temporal statement* instead of a referring expression: a sentence that is true exactly on the
    frames of the family's span, so the task is to find *when*, not *where* (Charades-STA style). Families
    (:data:`TVG_FAMILIES`): ``action`` ("the red square moves left": every step of the span has the named action, no
    step outside it has; the object is visible on the whole clip, so only its motion marks the span),
    ``twins_motion`` ("a red square moves left": one of two identical squares does it during the span, the twin never
    does, neither does it outside the span), ``relational`` ("a red square is left of the green circle": the target is
    visible only during the span and on the named side, the twin is on the opposite side all the time) and
    ``appearance`` ("the red square is visible", the control). ``twins_event`` is left out: its span (after the touch,
    once the reference has gone) has no exact one-sentence temporal statement -- the touch ends before the span
    starts. ``query_type`` is null (as for every tvg row, docs/schema.md).
``rec`` (one image, one box, no span)
    One frame of the family clip, drawn uniformly from the target's span, with a referring expression and the target's
    exact box on that frame (the pixel extent of the drawn shape; the target is drawn last, so never occluded).
    Families (:data:`REC_FAMILIES`): ``appearance`` ("the red square": colour and shape; colours are unique, shapes
    repeat among the distractors) and ``relational`` ("the red square left of the green circle": an identical twin
    lies on the opposite side of the reference, so only the relation picks the target). The row is an image row as
    :func:`bridge_stg.processing.multitask.convert_rec` writes it: ``num_frames = 1``, ``fps = 1.0``,
    ``segment = tube = [0, 1)``, ``frame_ids = [0]``.

:func:`write_synthetic_task_dataset` writes any mix of the three tasks as one dataset folder through
:func:`bridge_stg.processing.writer.write_dataset` (videos as mp4, rec images as lossless PNG), so it loads with
``datasets.load_dataset`` and trains with ``bridge-stg train``. Item ``i`` of ``stvg`` uses
``default_rng([seed, i])`` (the clip :func:`~bridge_stg.processing.synthetic.write_synthetic_dataset` writes with
``families=``), item ``i`` of ``tvg`` / ``rec`` ``default_rng([seed, TASK_SEED_TAGS[task], i])``: the streams of the
tasks differ, and no item depends on how many others are written.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from .report import ConversionReport
from .synthetic import SPLIT_NAMES, SyntheticClip, SyntheticSpec, split_sizes, write_mp4
from .synthetic_families import FAMILIES, render_family_clip
from .writer import write_dataset

TASKS: tuple[str, ...] = ("stvg", "tvg", "rec")
#: families whose clips give an exact temporal statement (see the module docstring)
TVG_FAMILIES: tuple[str, ...] = ("appearance", "action", "twins_motion", "relational")
#: families whose single frames give an exact referring expression
REC_FAMILIES: tuple[str, ...] = ("appearance", "relational")
#: the default families of each task
TASK_FAMILIES: dict[str, tuple[str, ...]] = {"stvg": FAMILIES, "tvg": TVG_FAMILIES, "rec": REC_FAMILIES}
#: second entry of the seed sequence of the tvg / rec items of a dataset folder (stvg uses ``[seed, i]``)
TASK_SEED_TAGS: dict[str, int] = {"tvg": 7101, "rec": 7102}

_MOVES = {"left": "moves left", "right": "moves right", "up": "moves up", "down": "moves down", "still": "stands still"}
_MOVE = {"left": "move left", "right": "move right", "up": "move up", "down": "move down", "still": "stand still"}
_RELATION_WORDS = {"left of": ("left of", "to the left of"), "right of": ("right of", "to the right of"),
                   "above": ("above",), "below": ("below",)}

#: tvg sentence templates per family: statements and questions about *when*
TVG_TEMPLATES: dict[str, tuple[str, ...]] = {
    "appearance": ("the {colour} {shape} is visible", "the {colour} {shape} is in view",
                   "when is the {colour} {shape} visible?"),
    "action": ("the {colour} {shape} {moves}", "when does the {colour} {shape} {move}?",
               "the moment the {colour} {shape} {moves}"),
    "twins_motion": ("a {colour} {shape} {moves}", "one of the {colour} {shape}s {moves}",
                     "when does a {colour} {shape} {move}?"),
    "relational": ("a {colour} {shape} is {rel} the {ref}", "when is a {colour} {shape} {rel} the {ref}?",
                   "there is a {colour} {shape} {rel} the {ref}"),
}
#: rec referring-expression templates per family
REC_TEMPLATES: dict[str, tuple[str, ...]] = {
    "appearance": ("the {colour} {shape}", "a {colour} {shape}", "{colour} {shape}"),
    "relational": ("the {colour} {shape} {rel} the {ref}", "the {colour} {shape} that is {rel} the {ref}",
                   "{colour} {shape} {rel} the {ref}"),
}


@dataclass
class SyntheticTaskItem:
    """One item of a task, rendered in memory: what the model sees, the query and the exact ground truth.

    ``frames`` is ``(T, H, W, 3)`` uint8 (``rec``: ``T = 1``, the image); ``tube_start`` / ``tube_end`` /
    ``frame_ids`` / ``boxes`` are in the item's own frame numbers (``rec``: ``[0, 1)``, ``[0]`` and the one box;
    ``tvg``: the span, no boxes). ``clip`` is the family clip the item comes from (``stvg``: the item itself) and
    ``source_frame`` the clip frame a ``rec`` image is.
    """

    task: str
    family: str
    frames: np.ndarray
    fps: float
    query: str
    query_type: str | None
    tube_start: int
    tube_end: int
    frame_ids: list[int]
    boxes: list[list[float]]
    clip: SyntheticClip
    source_frame: int | None = None

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
        """The canonical row (docs/schema.md; ``video`` is the mp4, or the PNG of a ``rec`` item)."""
        if self.task == "stvg":
            return self.clip.row(query_id, video_id, video)
        return {
            "query_id": query_id, "video_id": video_id, "video": video, "query": self.query, "query_type": self.query_type,
            "task": self.task, "fps": float(self.fps), "num_frames": self.num_frames, "width": self.width,
            "height": self.height, "segment_start": 0, "segment_end": self.num_frames, "tube_start": self.tube_start,
            "tube_end": self.tube_end, "frame_ids": list(self.frame_ids), "boxes": [list(b) for b in self.boxes],
            "target_id": None, "target_type": f"{self.clip.target_colour} {self.clip.target_shape}",
        }


def _words(rng: np.random.Generator, clip: SyntheticClip) -> dict[str, str]:
    words = {"colour": clip.target_colour, "shape": clip.target_shape}
    action = clip.details.get("action")
    if action is not None:
        words.update(moves=_MOVES[action], move=_MOVE[action])
    relation = clip.details.get("relation")
    if relation is not None:
        options = _RELATION_WORDS[relation]
        words.update(rel=options[int(rng.integers(len(options)))], ref=clip.details["reference"])
    return words


def _check_family(task: str, family: str) -> None:
    allowed = TASK_FAMILIES[task]
    if family not in allowed:
        raise ValueError(f"{task}: family {family!r} has no exact {task} form; choose from {allowed}")


def render_tvg_item(rng: np.random.Generator, family: str, spec: SyntheticSpec | None = None) -> SyntheticTaskItem:
    """A temporal-grounding item: a family clip, a sentence true exactly on its span, no boxes."""
    _check_family("tvg", family)
    clip = render_family_clip(rng, family, spec)
    templates = TVG_TEMPLATES[family]
    query = templates[int(rng.integers(len(templates)))].format(**_words(rng, clip))
    return SyntheticTaskItem("tvg", family, clip.frames, clip.fps, query, None, clip.tube_start, clip.tube_end, [], [],
                             clip)


def render_rec_item(rng: np.random.Generator, family: str, spec: SyntheticSpec | None = None) -> SyntheticTaskItem:
    """A referring-expression item: one frame of a family clip inside the target's span, its exact target box."""
    _check_family("rec", family)
    clip = render_family_clip(rng, family, spec)
    frame = int(rng.integers(clip.tube_start, clip.tube_end))
    templates = REC_TEMPLATES[family]
    query = templates[int(rng.integers(len(templates)))].format(**_words(rng, clip))
    box = [float(v) for v in clip.boxes[frame - clip.tube_start]]
    return SyntheticTaskItem("rec", family, clip.frames[frame: frame + 1].copy(), 1.0, query, None, 0, 1, [0], [box],
                             clip, source_frame=frame)


def render_stvg_item(rng: np.random.Generator, family: str, spec: SyntheticSpec | None = None) -> SyntheticTaskItem:
    """An STVG item: the family clip as it is (:func:`render_family_clip`)."""
    clip = render_family_clip(rng, family, spec)
    return SyntheticTaskItem("stvg", clip.family, clip.frames, clip.fps, clip.query, clip.query_type, clip.tube_start,
                             clip.tube_end, list(clip.frame_ids), [list(b) for b in clip.boxes], clip)


_RENDERERS = {"stvg": render_stvg_item, "tvg": render_tvg_item, "rec": render_rec_item}


def render_task_item(task: str, rng: np.random.Generator, family: str, spec: SyntheticSpec | None = None) -> SyntheticTaskItem:
    """Render one item of ``task`` (``stvg``, ``tvg`` or ``rec``) and query family ``family`` from ``rng``."""
    if task not in _RENDERERS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    return _RENDERERS[task](rng, family, spec)


def parse_task_counts(text: str, default_count: int) -> dict[str, int]:
    """``"stvg,tvg=50,rec=50"`` -> ``{"stvg": default_count, "tvg": 50, "rec": 50}`` (in the given order).

    Raises ``ValueError`` (one line) on an unknown or repeated task, or a count that is not an integer >= 1.
    """
    counts: dict[str, int] = {}
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if name not in TASKS:
            raise ValueError(f"--tasks: unknown task {name!r}; choose from {', '.join(TASKS)}")
        if name in counts:
            raise ValueError(f"--tasks: task {name!r} given twice")
        try:
            n = int(value) if sep else int(default_count)
        except ValueError:
            raise ValueError(f"--tasks: the count of {name!r} must be an integer, got {value!r}") from None
        if n < 1:
            raise ValueError(f"--tasks: the count of {name!r} must be >= 1, got {n}")
        counts[name] = n
    if not counts:
        raise ValueError(f"--tasks: name at least one task of {', '.join(TASKS)}")
    return counts


def task_rng(task: str, seed: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` of ``task`` in a dataset folder written with ``seed``."""
    if task == "stvg":
        return np.random.default_rng([int(seed), int(index)])
    return np.random.default_rng([int(seed), TASK_SEED_TAGS[task], int(index)])


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path, format="PNG")


def write_synthetic_task_dataset(
    out_dir: str | os.PathLike[str],
    counts: Mapping[str, int],
    seed: int,
    spec: SyntheticSpec | None = None,
    splits: Sequence[float] = (0.8, 0.1, 0.1),
    families: Mapping[str, Sequence[str]] | None = None,
    embed_videos: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Render and write ``counts[task]`` items of each task as one dataset folder; return the report dict.

    Each task's items are split into train / validation / test on their own (:func:`split_sizes`), so every split
    holds every task. Item ``i`` of a task is of family ``families[task][i % len(families[task])]`` (default
    :data:`TASK_FAMILIES`), uses :func:`task_rng` and has query id / video id ``{task}_{family}_{i:06d}``. Videos go
    to ``videos/<split>/<id>.mp4``, rec images to ``images/<split>/<id>.png``; the ``video`` column is relative to
    the folder (the video root of a synthetic set is the folder itself). With ``embed_videos`` the files' bytes are
    also stored in the ``video_bytes`` column.
    """
    spec = spec or SyntheticSpec()
    spec.validate()
    if not counts:
        raise ValueError("counts: name at least one task")
    chosen: dict[str, tuple[str, ...]] = {}
    for task, n in counts.items():
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
        if int(n) < 1:
            raise ValueError(f"counts[{task!r}] must be >= 1, got {n}")
        names = tuple((families or {}).get(task) or TASK_FAMILIES[task])
        for family in names:
            _check_family(task, family)
        chosen[task] = names
    out = Path(out_dir)
    report = ConversionReport(
        "synthetic",
        {"tasks": dict(counts), "seed": seed, "splits": list(splits), "embed_videos": embed_videos,
         "families": {t: list(f) for t, f in chosen.items()}, "spec": asdict(spec)},
        ["stvg: one query per clip; segment = the whole clip; tube = the family's span; exact target boxes",
         "tvg: the same clips with a sentence true exactly on the span; no boxes",
         "rec: one frame of a clip (a PNG image), num_frames = 1, segment = tube = [0, 1), frame_ids = [0], the exact box",
         "boxes = exact pixel extent of the drawn target, [x1, y1, x2, y2] with exclusive right/bottom edges",
         "paths are relative to the dataset folder; item i uses default_rng([seed, i]) (stvg) or "
         "default_rng([seed, tag, i]) (tvg 7101, rec 7102)"],
    )
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLIT_NAMES}
    total = sum(int(n) for n in counts.values())
    bar = tqdm(total=total, desc="synth tasks", unit="item", disable=not progress)
    for task, n in counts.items():
        bounds = np.cumsum([0] + split_sizes(int(n), splits))
        for i in range(int(n)):
            split = SPLIT_NAMES[int(np.searchsorted(bounds, i, side="right")) - 1]
            names = chosen[task]
            item = render_task_item(task, task_rng(task, seed, i), names[i % len(names)], spec)
            vid = f"{task}_{item.family}_{i:06d}"
            if task == "rec":
                rel = f"images/{split}/{vid}.png"
                _save_png(out / rel, item.frames[0])
            else:
                rel = f"videos/{split}/{vid}.mp4"
                write_mp4(out / rel, item.frames, item.fps, spec.crf)
            rows[split].append(item.row(vid, vid, rel))
            report.add_inputs(split)
            bar.update(1)
    bar.close()
    rows = {name: r for name, r in rows.items() if r}
    title = f"bridge-stg synthetic multi-task ({', '.join(f'{t} {n}' for t, n in counts.items())}, seed {seed})"
    desc = ("Coloured shapes moving over a textured background, from the query families of the synthetic STVG benchmark. "
            "stvg rows: span + exact boxes; tvg rows: a sentence true exactly on the span, no boxes; rec rows: one frame "
            "(a PNG) with a referring expression and the exact box. The `video` column is relative to this folder.")
    return write_dataset(out, rows, report, title=title, description=desc, embed_videos_from=out if embed_videos else None)


__all__ = [
    "TASKS", "TVG_FAMILIES", "REC_FAMILIES", "TASK_FAMILIES", "TASK_SEED_TAGS", "TVG_TEMPLATES", "REC_TEMPLATES",
    "SyntheticTaskItem", "render_tvg_item", "render_rec_item", "render_stvg_item", "render_task_item",
    "parse_task_counts", "task_rng", "write_synthetic_task_dataset",
]
