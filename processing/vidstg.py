"""VidSTG converters: raw release (sentences + VidOR trajectories), TubeDETR JSON, STCAT ``vstg_annos``.

Conventions (docs/datasets.md §1, written into every report):

* one row per sentence in **TubeDETR order**: entries in file order, within an entry all
  ``questions`` (interrogative) first, then the ``captions`` (declarative);
  ``query_id = str(running index)``, which is TubeDETR's ``video_id``;
* ``segment = [used_segment.begin_fid, used_segment.end_fid + 1)`` (the raw end is inclusive);
* ``tube = [temporal_gt.begin_fid, temporal_gt.end_fid)`` (already half-open), clipped to the
  segment with a report (an empty tube after clipping drops the row, counted);
* boxes: for every tube frame, the target's VidOR box ``[xmin, ymin, xmax, ymax]``; frames without a
  box are reported per row (the row is kept unless ``drop_incomplete_tubes``), NaN / empty boxes
  are removed and boxes outside the image clipped, both reported.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers.utils import logging

from bridge_stg.errors_bridge_stg import AnnotationError

from .common import Track, build_tube, check_videos, clip_span, field, load_json, number, relpath_field, report_tube
from .report import ConversionReport

logger = logging.get_logger(__name__)

VIDSTG_CONVENTIONS = [
    "rows in TubeDETR order (entries in file order; questions first, then captions); query_id = running index",
    "segment = [used_segment.begin_fid, used_segment.end_fid + 1): the raw end_fid is an inclusive last frame",
    "tube = [temporal_gt.begin_fid, temporal_gt.end_fid): already half-open; clipped to the segment if needed (reported)",
    "boxes = the target tid's VidOR box [xmin, ymin, xmax, ymax] on each tube frame; missing frames reported per row",
]


def index_vidor(vidor_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Map VidOR video id → per-video annotation JSON, searching ``vidor_dir`` recursively.

    Accepts the VidOR layout (``annotation/{training,validation}/<folder>/<vid>.json``), any folder
    below it, or a flat folder of ``<vid>.json`` files (STCAT's ``bbox_annos``). The same id in two
    files raises :class:`AnnotationError`.
    """
    root = Path(vidor_dir)
    if not root.is_dir():
        raise AnnotationError(f"{root}: VidOR annotation folder not found")
    index: dict[str, Path] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".json"):
                vid = name[: -len(".json")]
                p = Path(dirpath) / name
                if vid in index:
                    raise AnnotationError(f"{root}: VidOR annotation of video {vid!r} found twice: {index[vid]} and {p}")
                index[vid] = p
    return index


_NUMT = frozenset((int, float))


class VidORVideo:
    """The parts of one VidOR per-video annotation a converter needs, checked field by field."""

    def __init__(self, path: Path, needed_tids: set[int]) -> None:
        data = load_json(path)
        src = str(path)
        self.path = path
        self.video_path = relpath_field(data, "video_path", src, "video")
        self.frame_count = field(data, "frame_count", int, src, "video")
        self.fps = number(data, "fps", src, "video", positive=True)
        self.width = field(data, "width", int, src, "video")
        self.height = field(data, "height", int, src, "video")
        trajs = field(data, "trajectories", list, src, "video")
        self.num_traj_frames = len(trajs)
        boxes: dict[int, dict[int, list[float]]] = {t: {} for t in needed_tids}
        for f, entry in enumerate(trajs):
            if type(entry) is not list:
                raise AnnotationError(f"{src}: record trajectories[{f}]: expected a list of boxes, got {type(entry).__name__}")
            for j, obj in enumerate(entry):
                # fast path for well-formed boxes; anything unusual goes through the checked accessors
                try:
                    tid = obj["tid"]
                    bb = obj["bbox"]
                    box = [bb["xmin"], bb["ymin"], bb["xmax"], bb["ymax"]]
                    ok = type(tid) is int and type(box[0]) in _NUMT and type(box[1]) in _NUMT and type(box[2]) in _NUMT and type(box[3]) in _NUMT
                except (KeyError, TypeError):
                    ok = False
                if not ok:
                    rec = f"trajectories[{f}][{j}]"
                    tid = field(obj, "tid", int, src, rec)
                    box = xyxy_dict(field(obj, "bbox", dict, src, rec), src, rec + ".bbox")
                track = boxes.get(tid)
                if track is None:
                    continue
                if f in track:
                    raise AnnotationError(f"{src}: record trajectories[{f}][{j}]: field 'tid': tid {tid} has two boxes on frame {f}")
                track[f] = box
        self.tracks: dict[int, Track] = {t: Track.from_dict(b) for t, b in boxes.items()}


def xyxy_dict(bb: Any, src: str, rec: str) -> list[float]:
    """``[xmin, ymin, xmax, ymax]`` of a VidOR bbox dict; NaN/inf pass through (the sanitiser reports them)."""
    out = []
    for k in ("xmin", "ymin", "xmax", "ymax"):
        v = field(bb, k, (int, float), src, rec)
        out.append(float(v))
    return out


def _parse_entry(e: Any, src: str, i: int) -> dict[str, Any]:
    """Check one raw sentence-file entry and return its fields."""
    rec = f"{i}"
    vid = field(e, "vid", str, src, rec)
    rec = f"{i} (vid {vid})"
    seg = field(e, "used_segment", dict, src, rec)
    tgt = field(e, "temporal_gt", dict, src, rec)
    rel = field(e, "used_relation", dict, src, rec)
    out = {
        "vid": vid,
        "frame_count": field(e, "frame_count", int, src, rec),
        "fps": number(e, "fps", src, rec, positive=True),
        "width": field(e, "width", int, src, rec),
        "height": field(e, "height", int, src, rec),
        "seg": (field(seg, "begin_fid", int, src, rec + ".used_segment"), field(seg, "end_fid", int, src, rec + ".used_segment")),
        "gt": (field(tgt, "begin_fid", int, src, rec + ".temporal_gt"), field(tgt, "end_fid", int, src, rec + ".temporal_gt")),
        "rel": tuple(field(rel, k, (int, str), src, rec + ".used_relation") for k in ("subject_tid", "object_tid", "predicate", "begin_fid", "end_fid")),
        "sentences": [],
    }
    for key, qtype in (("questions", "interrogative"), ("captions", "declarative")):
        for j, s in enumerate(field(e, key, list, src, rec)):
            srec = f"{rec}.{key}[{j}]"
            out["sentences"].append(
                (qtype, field(s, "description", str, src, srec), field(s, "target_id", int, src, srec), field(s, "type", str, src, srec), f"{key}[{j}]")
            )
    return out


def convert_vidstg(
    sentences: str | os.PathLike[str],
    vidor_dir: str | os.PathLike[str],
    split: str,
    *,
    video_root: str | os.PathLike[str] | None = None,
    check_video_headers: bool = False,
    drop_incomplete_tubes: bool = False,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], ConversionReport]:
    """Convert a raw VidSTG sentence file plus VidOR per-video annotations to canonical rows.

    Args:
        sentences: ``{split}_annotations.json`` of the VidSTG release.
        vidor_dir: VidOR annotation folder (searched recursively for ``<vid>.json``).
        split: split name of the rows.
        video_root: when given, each row's ``video`` (VidOR ``video_path``) is resolved under it and
            rows whose file is missing are dropped (reported).
        check_video_headers: also open each video header; unreadable files drop their rows.
        drop_incomplete_tubes: drop rows whose tube misses boxes (STCAT's "spoiled" pairs) instead
            of keeping them with a report.
    Returns:
        ``(rows, report)``; rows in TubeDETR order.
    """
    src = str(sentences)
    data = load_json(sentences)
    if not isinstance(data, list):
        raise AnnotationError(f"{src}: expected a JSON list of VidSTG entries, got {type(data).__name__}")
    report = ConversionReport(
        "vidstg",
        {"sentences": src, "vidor": str(vidor_dir), "split": split, "video_root": None if video_root is None else str(video_root),
         "check_videos": check_video_headers, "drop_incomplete_tubes": drop_incomplete_tubes},
        VIDSTG_CONVENTIONS,
    )
    entries = [_parse_entry(e, src, i) for i, e in enumerate(data)]
    # running query ids, in TubeDETR order
    base, n = [], 0
    for e in entries:
        base.append(n)
        n += len(e["sentences"])
    report.add_inputs(split, n)
    seen: dict[tuple, int] = {}
    for i, e in enumerate(entries):
        key = (e["vid"], e["seg"], e["gt"], e["rel"])
        if key in seen:
            report.note("duplicate_entry", f"entry {i} repeats entry {seen[key]} (same video, segment, relation and span); both kept",
                        entry=i, first=seen[key], vid=e["vid"])
        else:
            seen[key] = i
    by_vid: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(entries):
        by_vid[e["vid"]].append(i)
    index = index_vidor(vidor_dir)
    rows_by_qid: dict[int, tuple[str, dict[str, Any]]] = {}
    for vid, idxs in tqdm(by_vid.items(), desc=f"vidstg {split}", unit="video", disable=not progress):
        if vid not in index:
            for i in idxs:
                for k, s in enumerate(entries[i]["sentences"]):
                    report.drop(split, f"entry {i} {s[4]}", "missing_vidor_annotation", f"no {vid}.json under {vidor_dir}", str(base[i] + k))
            continue
        vidor = VidORVideo(index[vid], {s[2] for i in idxs for s in entries[i]["sentences"]})
        for i in idxs:
            e = entries[i]
            _check_against_vidor(report, e, vidor, i)
            for k, (qtype, text, tid, ttype, where) in enumerate(e["sentences"]):
                qid = str(base[i] + k)
                record = f"entry {i} {where}"
                row = _vidstg_row(report, split, record, qid, e, qtype, text, tid, ttype, vidor.video_path, vidor.tracks[tid],
                                  drop_incomplete_tubes, f" for tid {tid}")
                if row is not None:
                    rows_by_qid[base[i] + k] = (record, row)
    ordered = [rows_by_qid[q] for q in sorted(rows_by_qid)]
    rows = check_videos(ordered, video_root, check_video_headers, report, split)
    return rows, report


def _check_against_vidor(report: ConversionReport, e: dict[str, Any], vidor: VidORVideo, i: int) -> None:
    diffs = []
    if vidor.frame_count != e["frame_count"]:
        diffs.append(f"frame_count {vidor.frame_count} vs {e['frame_count']}")
    if abs(vidor.fps - e["fps"]) > 1e-6:
        diffs.append(f"fps {vidor.fps} vs {e['fps']}")
    if (vidor.width, vidor.height) != (e["width"], e["height"]):
        diffs.append(f"size {vidor.width}x{vidor.height} vs {e['width']}x{e['height']}")
    if diffs:
        report.note("vidor_metadata_mismatch", f"entry {i} ({e['vid']}): VidOR vs sentence file: {'; '.join(diffs)}; sentence file kept", entry=i)


def _vidstg_row(
    report: ConversionReport, split: str, record: str, qid: str, e: dict[str, Any], qtype: str, text: str, tid: int, ttype: str,
    video_path: str, track: Track, drop_incomplete: bool, what: str,
) -> dict[str, Any] | None:
    """One canonical row from a parsed entry + sentence; None (and a report entry) when dropped."""
    seg_start, seg_end = e["seg"][0], e["seg"][1] + 1
    if not 0 <= seg_start < seg_end <= e["frame_count"]:
        report.drop(split, record, "segment_outside_video", f"used_segment [{e['seg'][0]}, {e['seg'][1]}] vs frame_count {e['frame_count']}", qid)
        return None
    span = clip_span(report, split, record, qid, e["gt"][0], e["gt"][1], seg_start, seg_end)
    if span is None:
        report.drop(split, record, "tube_outside_segment", f"temporal_gt [{e['gt'][0]}, {e['gt'][1]}) vs segment [{seg_start}, {seg_end})", qid)
        return None
    tube = build_tube(track, span[0], span[1], e["width"], e["height"])
    if drop_incomplete and (tube.missing or tube.invalid):
        report.drop(split, record, "incomplete_tube", f"{len(tube.missing) + len(tube.invalid)} of {span[1] - span[0]} tube frames lack a valid box{what}", qid)
        return None
    report_tube(report, split, record, qid, tube, span[1] - span[0], what)
    return {
        "query_id": qid, "video_id": e["vid"], "video": video_path, "query": text, "query_type": qtype, "task": "stvg",
        "fps": e["fps"], "num_frames": e["frame_count"], "width": e["width"], "height": e["height"],
        "segment_start": seg_start, "segment_end": seg_end, "tube_start": span[0], "tube_end": span[1],
        "frame_ids": tube.frame_ids, "boxes": tube.boxes, "target_id": tid, "target_type": ttype,
    }


def convert_tubedetr(
    annotations: str | os.PathLike[str],
    split: str,
    *,
    video_root: str | os.PathLike[str] | None = None,
    check_video_headers: bool = False,
    drop_incomplete_tubes: bool = False,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], ConversionReport]:
    """Convert a TubeDETR preprocessed VidSTG file (``{split}.json``) to canonical rows.

    ``segment_end = end_frame + 1``; tube = ``[tube_start_frame, tube_end_frame)``; boxes
    ``[x, y, x + w, y + h]`` from ``trajectories[original_video_id][str(target_id)][str(frame)]["bbox"]``.
    ``query_id = str(video_id)``. Gives the same rows as :func:`convert_vidstg` on the same entries.
    Video paths are relative to TubeDETR's ``<vidstg root>/video/`` folder.
    """
    src = str(annotations)
    data = load_json(annotations)
    videos = field(data, "videos", list, src, "top level")
    trajs = field(data, "trajectories", dict, src, "top level")
    report = ConversionReport(
        "tubedetr",
        {"annotations": src, "split": split, "video_root": None if video_root is None else str(video_root),
         "check_videos": check_video_headers, "drop_incomplete_tubes": drop_incomplete_tubes},
        VIDSTG_CONVENTIONS[:1] + [
            "segment = [start_frame, end_frame + 1); tube = [tube_start_frame, tube_end_frame)",
            "boxes = [x, y, x + w, y + h] from trajectories[original_video_id][str(target_id)][str(frame)]['bbox'] on tube frames",
        ],
    )
    report.add_inputs(split, len(videos))
    out: list[tuple[str, dict[str, Any]]] = []
    track_cache: dict[tuple[str, int], Track] = {}
    for i, v in enumerate(tqdm(videos, desc=f"tubedetr {split}", unit="query", disable=not progress)):
        rec = f"videos[{i}]"
        vid = field(v, "original_video_id", str, src, rec)
        qid = str(field(v, "video_id", int, src, rec))
        qtype = field(v, "qtype", str, src, rec)
        if qtype not in ("declarative", "interrogative"):
            raise AnnotationError(f"{src}: record {rec}: field 'qtype': {qtype!r} is not declarative/interrogative")
        tid = field(v, "target_id", int, src, rec)
        e = {
            "vid": vid, "frame_count": field(v, "frame_count", int, src, rec), "fps": number(v, "fps", src, rec, positive=True),
            "width": field(v, "width", int, src, rec), "height": field(v, "height", int, src, rec),
            "seg": (field(v, "start_frame", int, src, rec), field(v, "end_frame", int, src, rec)),
            "gt": (field(v, "tube_start_frame", int, src, rec), field(v, "tube_end_frame", int, src, rec)),
        }
        if (vid, tid) not in track_cache:
            track_cache[(vid, tid)] = _tubedetr_track(trajs, vid, tid, src)
        track = track_cache[(vid, tid)]

        row = _vidstg_row(report, split, rec, qid, e, qtype, field(v, "caption", str, src, rec), tid, field(v, "type", str, src, rec),
                          relpath_field(v, "video_path", src, rec), track, drop_incomplete_tubes, f" for tid {tid}")
        if row is not None:
            out.append((rec, row))
    rows = check_videos(out, video_root, check_video_headers, report, split)
    return rows, report


def _tubedetr_track(trajs: dict[str, Any], vid: str, tid: int, src: str) -> Track:
    """The target's boxes ``[x, y, x + w, y + h]`` from TubeDETR's ``trajectories[vid][str(tid)]``."""
    vt = trajs.get(vid, {})
    if not isinstance(vt, dict):
        raise AnnotationError(f"{src}: record trajectories[{vid!r}]: expected an object, got {type(vt).__name__}")
    frames = vt.get(str(tid), {})
    if not isinstance(frames, dict):
        raise AnnotationError(f"{src}: record trajectories[{vid!r}][{str(tid)!r}]: expected an object, got {type(frames).__name__}")
    by_frame: dict[int, list[float]] = {}
    for key, item in frames.items():
        r = f"trajectories[{vid!r}][{str(tid)!r}][{key!r}]"
        try:
            f = int(key)
        except ValueError:
            raise AnnotationError(f"{src}: record {r}: frame key {key!r} is not an integer") from None
        bb = field(item, "bbox", list, src, r)
        if len(bb) != 4 or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in bb):
            raise AnnotationError(f"{src}: record {r}: field 'bbox': expected [x, y, w, h] numbers, got {bb!r}")
        x, y, w, h = bb
        by_frame[f] = [x, y, x + w, y + h]
    return Track.from_dict(by_frame)


def convert_stcat(
    annotations: str | os.PathLike[str],
    split: str,
    *,
    bbox_annos: str | os.PathLike[str] | None = None,
    video_template: str = "{vid}.mp4",
    video_root: str | os.PathLike[str] | None = None,
    check_video_headers: bool = False,
    drop_incomplete_tubes: bool = False,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], ConversionReport]:
    """Convert an STCAT / CG-STVG ``vstg_annos/{split}.json`` file to canonical rows.

    Uses ``ori_temp_gt`` (never the segment-relative, end-clipped ``temp_gt``), the raw
    ``used_segment`` (end + 1), ``target_bboxs[i]`` as the box of frame ``ori_temp_gt.begin_fid + i``
    for frames before ``ori_temp_gt.end_fid`` (``{}`` = missing, reported), ``declar``/``inter`` →
    declarative/interrogative, and ``query_id = str(id)`` (STCAT's pair id, which is **not**
    TubeDETR's). STCAT's ``frame_count`` is the segment length, so the video's frame count and path
    come from the VidOR files in ``bbox_annos`` when given; otherwise ``num_frames = segment_end`` and
    ``video = video_template.format(vid=...)``, both stated in the report. The pickled
    ``data_cache`` files are never read.
    """
    src = str(annotations)
    data = load_json(annotations)
    if not isinstance(data, dict):
        raise AnnotationError(f"{src}: expected a JSON object {{pair_id: record}}, got {type(data).__name__}")
    conventions = VIDSTG_CONVENTIONS[1:3] + [
        "tube from ori_temp_gt (temp_gt ignored); target_bboxs[i] is frame ori_temp_gt.begin_fid + i, kept for frames < end_fid; {} = missing",
        "query_id = STCAT pair id (does not match TubeDETR ids)",
    ]
    if bbox_annos is None:
        conventions.append(f"no --vidor/bbox_annos: num_frames = segment_end (STCAT frame_count is the segment length) and video = {video_template!r}")
    report = ConversionReport(
        "stcat",
        {"annotations": src, "split": split, "bbox_annos": None if bbox_annos is None else str(bbox_annos), "video_template": video_template,
         "video_root": None if video_root is None else str(video_root), "check_videos": check_video_headers},
        conventions,
    )
    report.add_inputs(split, len(data))
    index = index_vidor(bbox_annos) if bbox_annos is not None else None
    meta_cache: dict[str, tuple[int, str] | None] = {}
    out: list[tuple[str, dict[str, Any]]] = []
    for key, v in tqdm(data.items(), desc=f"stcat {split}", unit="query", disable=not progress):
        rec = f"{key}"
        vid = field(v, "vid", str, src, rec)
        qid = str(field(v, "id", int, src, rec))
        qmap = {"declar": "declarative", "inter": "interrogative", "declarative": "declarative", "interrogative": "interrogative"}
        qraw = field(v, "qtype", str, src, rec)
        if qraw not in qmap:
            raise AnnotationError(f"{src}: record {rec}: field 'qtype': {qraw!r} is not declar/inter")
        sent = field(v, "sentence", dict, src, rec)
        seg = field(v, "used_segment", dict, src, rec)
        gt = field(v, "ori_temp_gt", dict, src, rec)
        seg_t = (field(seg, "begin_fid", int, src, rec + ".used_segment"), field(seg, "end_fid", int, src, rec + ".used_segment"))
        gt_t = (field(gt, "begin_fid", int, src, rec + ".ori_temp_gt"), field(gt, "end_fid", int, src, rec + ".ori_temp_gt"))
        if index is not None:
            if vid not in meta_cache:
                if vid in index:
                    d = load_json(index[vid])
                    meta_cache[vid] = (field(d, "frame_count", int, str(index[vid]), "video"), relpath_field(d, "video_path", str(index[vid]), "video"))
                else:
                    meta_cache[vid] = None
            meta = meta_cache[vid]
            if meta is None:
                report.drop(split, rec, "missing_vidor_annotation", f"no {vid}.json under {bbox_annos}", qid)
                continue
            frame_count, video = meta
        else:
            frame_count = seg_t[1] + 1
            video = video_template.format(vid=vid)
        bbs = field(v, "target_bboxs", list, src, rec)

        by_frame: dict[int, list[float]] = {}
        for i, bb in enumerate(bbs):
            f = gt_t[0] + i
            if f >= gt_t[1] or bb == {}:
                continue  # the extra inclusive-end frame, or a missing box (reported by the tube builder)
            by_frame[f] = xyxy_dict(bb, src, f"{rec}.target_bboxs[{i}]")
        track = Track.from_dict(by_frame)
        e = {"vid": vid, "frame_count": frame_count, "fps": number(v, "fps", src, rec, positive=True),
             "width": field(v, "width", int, src, rec), "height": field(v, "height", int, src, rec), "seg": seg_t, "gt": gt_t}
        tid = field(sent, "target_id", int, src, rec + ".sentence")
        row = _vidstg_row(report, split, rec, qid, e, qmap[qraw], field(sent, "description", str, src, rec + ".sentence"), tid,
                          field(sent, "type", str, src, rec + ".sentence"), video, track, drop_incomplete_tubes, f" for tid {tid}")
        if row is not None:
            out.append((rec, row))
    rows = check_videos(out, video_root, check_video_headers, report, split)
    return rows, report


__all__ = ["convert_vidstg", "convert_tubedetr", "convert_stcat", "index_vidor", "VidORVideo", "VIDSTG_CONVENTIONS"]
