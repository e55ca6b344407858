"""Annotated videos of grounding results, written in-process with PyAV (mp4) or Pillow (gif).

Every frame of the source video gets, for each query: its box (solid on the frames the model predicted,
thin where linearly interpolated between two of them, none outside the predicted span), the query text,
and below the picture a timeline bar with the predicted span and a play head.

The input is the pipeline output (``{"query", "span", "tube"}`` per query, see
``bridge_stg.pipeline_video_grounding``); frame numbers are the video's own (presentation order).
"""

from __future__ import annotations

import os
import sys
from fractions import Fraction
from typing import Any, Iterator, Sequence

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from bridge_stg.errors_bridge_stg import BridgeSTGError, VideoDecodeError
from bridge_stg.video_io_bridge_stg import probe_video
from bridge_stg.processing.paths import atomic_output_file

PALETTE = ((255, 64, 64), (64, 160, 255), (64, 220, 64), (255, 200, 0), (220, 64, 255), (0, 220, 220))
ROW = 10  # timeline row height (pixels), one row per query
GAP = 3
OUTPUT_FORMATS = (".mp4", ".gif")


def box_at(result: dict[str, Any], frame: int) -> tuple[list[float], float, bool] | None:
    """The box of ``frame`` for one query: ``(xyxy, score, exact)``, or ``None`` outside the span / empty tube.

    Inside the span, frames between two predicted tube frames get a per-coordinate linear interpolation;
    before the first / after the last predicted frame, the nearest predicted box (``exact`` is ``False``).
    """
    start, end = result["span"]
    if not start <= frame < end or not result["tube"]:
        return None
    tube = sorted(result["tube"], key=lambda t: t["frame"])
    frames = np.array([t["frame"] for t in tube], dtype=np.float64)
    for t in tube:
        if t["frame"] == frame:
            b = t["box"]
            return [b["xmin"], b["ymin"], b["xmax"], b["ymax"]], float(t["score"]), True
    coords = np.array([[t["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")] for t in tube], dtype=np.float64)
    box = [float(np.interp(frame, frames, coords[:, c])) for c in range(4)]
    score = float(np.interp(frame, frames, np.array([t["score"] for t in tube], dtype=np.float64)))
    return box, score, False


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def annotate_frame(
    frame: np.ndarray, frame_id: int, results: Sequence[dict[str, Any]], num_frames: int
) -> np.ndarray:
    """Draw boxes, query texts and the timeline of every query on one RGB frame.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB.
        frame_id: the frame's number in the video.
        results: pipeline results (one per query).
        num_frames: frames in the video (the timeline's length).

    Returns:
        ``(H', W', 3)`` uint8, the frame with a timeline panel below it; ``H'`` and ``W'`` are even (yuv420p).
    """
    h, w = frame.shape[:2]
    panel = GAP + len(results) * (ROW + GAP)
    out_h, out_w = h + panel + (h + panel) % 2, w + w % 2
    canvas = Image.new("RGB", (out_w, out_h), (0, 0, 0))
    canvas.paste(Image.fromarray(np.ascontiguousarray(frame)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    line_h = 12
    for q, res in enumerate(results):
        colour = PALETTE[q % len(PALETTE)]
        found = box_at(res, frame_id)
        if found is not None:
            (x1, y1, x2, y2), score, exact = found
            draw.rectangle([x1, y1, max(x2 - 1, x1), max(y2 - 1, y1)], outline=colour, width=3 if exact else 1)
            sx, sy = x1 + 1, max(y1 - line_h, 0)
            draw.rectangle([sx, sy, sx + draw.textlength(f"{score:.2f}", font=font) + 2, sy + line_h - 2], fill=(0, 0, 0))
            draw.text((sx + 1, sy), f"{score:.2f}", fill=colour, font=font)
        # query text on a dark band at the top-left
        label = res["query"] if len(res["query"]) <= 60 else res["query"][:57] + "..."
        ty = 2 + q * line_h
        tw = draw.textlength(label, font=font)
        draw.rectangle([0, ty - 1, min(tw + 4, w - 1), ty + line_h - 2], fill=(0, 0, 0))
        draw.text((2, ty), label, fill=colour, font=font)
        # timeline: grey bar = the whole video, coloured = predicted span, white line = this frame
        y0 = h + GAP + q * (ROW + GAP)
        draw.rectangle([0, y0, w - 1, y0 + ROW - 1], fill=(70, 70, 70))
        s, e = res["span"]
        xs, xe = int(round(s / num_frames * w)), int(round(e / num_frames * w))
        draw.rectangle([xs, y0, max(xe - 1, xs), y0 + ROW - 1], fill=colour)
    head = int(round((frame_id + 0.5) / num_frames * w))
    draw.line([head, h, head, out_h - 1], fill=(255, 255, 255), width=1)
    return np.asarray(canvas)


def iter_video_frames(path: str) -> Iterator[np.ndarray]:
    """Every frame of a video file in presentation order, RGB uint8; decoding errors name the file."""
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoDecodeError(f"{path}: cannot open as a video ({err})") from err
    with container:
        if not container.streams.video:
            raise VideoDecodeError(f"{path}: the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index = 0
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
                index += 1
        except av.FFmpegError as err:
            raise VideoDecodeError(f"{path}: decoding failed after {index} frames ({err})") from err


def write_annotated_video(
    video: str | os.PathLike,
    results: Sequence[dict[str, Any]],
    output: str | os.PathLike,
    progress: bool = True,
) -> dict[str, Any]:
    """Re-decode ``video`` and write it with the grounding of ``results`` drawn on every frame.

    Args:
        video: the source video file.
        results: pipeline results on that video (one dict per query).
        output: ``.mp4`` (H.264, yuv420p, libx264) or ``.gif`` (Pillow; kept in memory, for short clips).
        progress: show a tqdm bar on stderr.

    Returns:
        ``{"output", "frames", "width", "height", "fps"}`` of the written file.

    Raises:
        VideoDecodeError: the source cannot be decoded, or yields fewer frames than its index holds.
        BridgeSTGError: unsupported output extension.
    """
    src, dst = os.fspath(video), os.fspath(output)
    ext = os.path.splitext(dst)[1].lower()
    if ext not in OUTPUT_FORMATS:
        raise BridgeSTGError(f"{dst}: unsupported output format {ext or '(none)'!r}; use .mp4 or .gif")
    if not results:
        raise BridgeSTGError("nothing to draw: no grounding results")
    meta = probe_video(src)
    parent = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(parent):
        raise BridgeSTGError(f"{dst}: the output folder {parent} does not exist")
    written = 0
    size = (0, 0)
    # written under a temporary name beside ``dst`` (same extension: the format follows it) and renamed at the end,
    # so a failure leaves ``dst`` as it was
    with atomic_output_file(dst) as tmp_path, tqdm(total=meta.num_frames, desc="annotate", unit="frame", file=sys.stderr,
                                                    disable=not progress) as bar:
        tmp = str(tmp_path)
        if ext == ".mp4":
            with av.open(tmp, "w") as out:
                stream = None
                for i, frame in enumerate(iter_video_frames(src)):
                    img = annotate_frame(frame, i, results, meta.num_frames)
                    if stream is None:
                        stream = out.add_stream("libx264", rate=Fraction(meta.fps).limit_denominator(1001))
                        stream.width, stream.height, stream.pix_fmt = img.shape[1], img.shape[0], "yuv420p"
                        stream.options = {"crf": "20", "preset": "veryfast"}
                        size = (img.shape[1], img.shape[0])
                    for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        out.mux(packet)
                    written += 1
                    bar.update(1)
                if stream is None:
                    raise VideoDecodeError(f"{src}: no frame could be decoded")
                for packet in stream.encode():
                    out.mux(packet)
        else:
            images = []
            for i, frame in enumerate(iter_video_frames(src)):
                images.append(Image.fromarray(annotate_frame(frame, i, results, meta.num_frames)))
                written += 1
                bar.update(1)
            if images:
                size = images[0].size
                images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                               duration=max(int(round(1000 / meta.fps)), 20), loop=0)
        if written < meta.num_frames:
            raise VideoDecodeError(f"{src}: only {written} of {meta.num_frames} indexed frames could be decoded")
    return {"output": dst, "frames": written, "width": size[0], "height": size[1], "fps": meta.fps}


__all__ = ["annotate_frame", "box_at", "iter_video_frames", "write_annotated_video"]
