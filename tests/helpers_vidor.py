"""Stand-in VidOR trajectory files for the real VidSTG sentence annotations (VidOR boxes are not available).

For every video of a VidSTG sentence file the helper writes ``annotation/validation/<folder>/<vid>.json``
in the VidOR per-video schema (``video_id``, ``video_path``, ``frame_count``, ``fps``, ``width``,
``height``, ``subject/objects``, ``trajectories`` with one list per frame, ``relation_instances``).
To stay small it writes boxes only for the target tids and only on the frames of their tubes
(optionally every ``stride``-th frame), and leaves out VidOR's ``generated``/``tracker`` keys the
converters do not read. Boxes are a deterministic function of (video, tid, frame), integer pixels,
inside the image, so tests can recompute the expected box of any row.

It also re-writes the same entries in the TubeDETR (``{split}.json``) and STCAT (``vstg_annos``)
formats from the written VidOR files, the way those projects' preprocessing does.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable


def standin_box(vid: str, tid: int, frame: int, width: int, height: int) -> list[float]:
    """Deterministic integer box ``[x1, y1, x2, y2]`` inside a ``width`` × ``height`` image."""
    h = (int(vid) * 31 + tid * 17) % 997
    bw = 16 + (h % 40)
    bh = 16 + ((h // 7) % 50)
    x1 = (h + 3 * frame) % max(1, width - bw)
    y1 = (h // 3 + 2 * frame) % max(1, height - bh)
    return [float(x1), float(y1), float(x1 + bw), float(y1 + bh)]


def folder_of(vid: str) -> str:
    """VidOR-like four-digit folder of a video id."""
    return f"{int(vid) % 1000:04d}"


def load_entries(path: str | Path) -> list[dict[str, Any]]:
    """The raw VidSTG sentence entries of ``path``."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_standin_vidor(
    entries: Iterable[dict[str, Any]],
    root: str | Path,
    *,
    stride: int = 1,
    extra_frames: int = 1,
    omit: dict[tuple[str, int], set[int]] | None = None,
    override: dict[tuple[str, int, int], list[float]] | None = None,
) -> Path:
    """Write stand-in VidOR annotations for the videos of ``entries`` under ``root``; return the annotation dir.

    Args:
        stride: write a box every ``stride`` frames of each tube (1 = every frame).
        extra_frames: also write this many frames after each tube end (STCAT reads one extra frame).
        omit: ``{(vid, tid): frames}`` left without a box (to make gaps).
        override: ``{(vid, tid, frame): box}`` written instead of the stand-in box (e.g. NaN boxes).
    """
    omit = omit or {}
    override = override or {}
    meta: dict[str, dict[str, Any]] = {}
    frames: dict[str, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    rels: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        vid = e["vid"]
        meta[vid] = e
        rels[vid].append(e["used_relation"])
        b, end = e["temporal_gt"]["begin_fid"], e["temporal_gt"]["end_fid"]
        for s in e["captions"] + e["questions"]:
            tid = s["target_id"]
            frames[vid][tid].update(f for f in range(b, min(end + extra_frames, e["frame_count"])) if (f - b) % stride == 0)
    ann = Path(root) / "annotation" / "validation"
    for vid, e in meta.items():
        w, h = e["width"], e["height"]
        traj: list[list[dict[str, Any]]] = [[] for _ in range(e["frame_count"])]
        for tid in sorted(frames[vid]):
            gone = omit.get((vid, tid), set())
            for f in sorted(frames[vid][tid]):
                if f in gone:
                    continue
                x1, y1, x2, y2 = override.get((vid, tid, f), standin_box(vid, tid, f, w, h))
                traj[f].append({"tid": tid, "bbox": {"xmin": x1, "ymin": y1, "xmax": x2, "ymax": y2}})
        doc = {
            "video_id": vid,
            "video_path": f"{folder_of(vid)}/{vid}.mp4",
            "frame_count": e["frame_count"],
            "fps": e["fps"],
            "width": w,
            "height": h,
            "subject/objects": e["subject/objects"],
            "trajectories": traj,
            "relation_instances": rels[vid],
        }
        d = ann / folder_of(vid)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{vid}.json").write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
    return Path(root) / "annotation"


def _vidor_file(vidor_dir: Path, vid: str, cache: dict[Path, dict[str, Any]]) -> dict[str, Any]:
    """The VidOR file of ``vid`` with an added ``_by_tid`` index ``{tid: {frame: bbox}}`` (cached per call)."""
    p = vidor_dir / "validation" / folder_of(vid) / f"{vid}.json"
    if p not in cache:
        doc = json.loads(p.read_text(encoding="utf-8"))
        boxes: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
        for f, objs in enumerate(doc["trajectories"]):
            for o in objs:
                boxes[o["tid"]][f] = o["bbox"]
        doc["_by_tid"] = boxes
        cache[p] = doc
    return cache[p]


def write_tubedetr(entries: list[dict[str, Any]], vidor_dir: str | Path, path: str | Path) -> Path:
    """Write ``entries`` in TubeDETR's preprocessed format, with boxes read from the VidOR files."""
    vidor_dir = Path(vidor_dir)
    videos: list[dict[str, Any]] = []
    trajectories: dict[str, dict[str, dict[str, Any]]] = {}
    qid = 0
    cache: dict[Path, dict[str, Any]] = {}
    for e in entries:
        vid = e["vid"]
        doc = _vidor_file(vidor_dir, vid, cache)
        sents = [(s, "interrogative") for s in e["questions"]] + [(s, "declarative") for s in e["captions"]]
        for s, qtype in sents:
            videos.append({
                "original_video_id": vid, "frame_count": e["frame_count"], "fps": e["fps"], "width": e["width"], "height": e["height"],
                "start_frame": e["used_segment"]["begin_fid"], "end_frame": e["used_segment"]["end_fid"],
                "tube_start_frame": e["temporal_gt"]["begin_fid"], "tube_end_frame": e["temporal_gt"]["end_fid"],
                "video_path": doc["video_path"], "caption": s["description"], "type": s["type"], "target_id": s["target_id"],
                "video_id": qid, "qtype": qtype,
            })
            qid += 1
            vt = trajectories.setdefault(vid, {})
            if str(s["target_id"]) not in vt:
                vt[str(s["target_id"])] = {
                    str(f): {"bbox": [b["xmin"], b["ymin"], b["xmax"] - b["xmin"], b["ymax"] - b["ymin"]], "generated": 0,
                             "tracker": "none", "category_id": 0}
                    for f, b in sorted(doc["_by_tid"][s["target_id"]].items())
                }
    Path(path).write_text(json.dumps({"videos": videos, "trajectories": trajectories}), encoding="utf-8")
    return Path(path)


def write_stcat(entries: list[dict[str, Any]], vidor_dir: str | Path, path: str | Path) -> Path:
    """Write ``entries`` in STCAT's ``vstg_annos`` format (captions first, then questions: STCAT's own order)."""
    vidor_dir = Path(vidor_dir)
    out: dict[str, Any] = {}
    pid = 0
    cache: dict[Path, dict[str, Any]] = {}
    for e in entries:
        vid = e["vid"]
        doc = _vidor_file(vidor_dir, vid, cache)
        seg, gt = e["used_segment"], e["temporal_gt"]
        seg_len = seg["end_fid"] - seg["begin_fid"] + 1
        for key, qtype in (("captions", "declar"), ("questions", "inter")):
            for s in e[key]:
                track = doc["_by_tid"][s["target_id"]]
                bbs = [track.get(f, {}) for f in range(gt["begin_fid"], min(gt["end_fid"] + 1, e["frame_count"]))]
                out[str(pid)] = {
                    "vid": vid, "fps": e["fps"], "width": e["width"], "height": e["height"], "used_segment": seg,
                    "frame_count": seg_len, "ori_temp_gt": gt,
                    "temp_gt": {"begin_fid": gt["begin_fid"] - seg["begin_fid"], "end_fid": min(gt["end_fid"] - seg["begin_fid"], seg_len - 1)},
                    "id": pid, "qtype": qtype, "sentence": s, "target_category": "x", "target_bboxs": bbs,
                }
                pid += 1
    Path(path).write_text(json.dumps(out), encoding="utf-8")
    return Path(path)
