"""Synthetic test videos written with PyAV whose frames encode their own index.

Each frame carries its index as 8 bits in a row of 8 large blocks along the top (white = 1, black = 0)
over a mid-grey moving background; x264 at a low CRF keeps the blocks far from the 128 threshold, so
:func:`read_index` recovers the index exactly from a decoded frame.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Sequence

import av
import numpy as np

BITS = 10
BLOCK = 16


def index_frame(index: int, height: int = 64, width: int = 160) -> np.ndarray:
    """An RGB frame ``(H, W, 3)`` uint8 whose top row of ``BITS`` blocks encodes ``index`` (LSB first)."""
    if width < BITS * BLOCK or height < 2 * BLOCK:
        raise ValueError(f"frame {height}x{width} too small for {BITS} blocks of {BLOCK}px")
    yy, xx = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[..., 0] = (96 + 32 * np.sin((xx + 3 * index) / 9.0)).astype(np.uint8)
    frame[..., 1] = (96 + 32 * np.cos((yy + 2 * index) / 7.0)).astype(np.uint8)
    frame[..., 2] = 110
    for bit in range(BITS):
        value = 255 if (index >> bit) & 1 else 0
        frame[0:BLOCK, bit * BLOCK:(bit + 1) * BLOCK] = value
    return frame


def read_index(frame: np.ndarray) -> int:
    """Decode the index written by :func:`index_frame` from a decoded RGB frame."""
    index = 0
    for bit in range(BITS):
        block = frame[3:BLOCK - 3, bit * BLOCK + 3:(bit + 1) * BLOCK - 3].astype(np.float64)
        if block.mean() > 128:
            index |= 1 << bit
    return index


def write_index_video(
    path: str | os.PathLike,
    num_frames: int,
    fps: float = 25.0,
    height: int = 64,
    width: int = 160,
    gop: int = 12,
    pts_ms: Sequence[int] | None = None,
    codec: str = "libx264",
) -> str:
    """Write a clip whose frame ``i`` encodes ``i``. ``pts_ms`` gives per-frame presentation times in
    milliseconds (variable frame rate, time base 1/1000); otherwise constant ``fps``."""
    path = os.fspath(path)
    container = av.open(path, mode="w")
    rate = Fraction(fps).limit_denominator(1001)
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    if codec == "libx264":
        stream.options = {"crf": "12", "g": str(gop), "keyint_min": str(gop), "bf": "2", "sc_threshold": "0"}
    if pts_ms is not None:
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
    for i in range(num_frames):
        frame = av.VideoFrame.from_ndarray(index_frame(i, height, width), format="rgb24")
        if pts_ms is not None:
            frame.pts = int(pts_ms[i])
            frame.time_base = Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def write_audio_only(path: str | os.PathLike) -> str:
    """An .m4a file with one AAC audio stream and no video stream."""
    path = os.fspath(path)
    container = av.open(path, mode="w")
    stream = container.add_stream("aac", rate=16000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
    frame.sample_rate = 16000
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def write_zero_frame_video(path: str | os.PathLike) -> str:
    """A Matroska file with a video stream that holds no frames (and one audio stream)."""
    path = os.fspath(path)
    container = av.open(path, mode="w")
    video = container.add_stream("mpeg4", rate=25)
    video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
    audio = container.add_stream("aac", rate=16000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
    frame.sample_rate = 16000
    for packet in audio.encode(frame):
        container.mux(packet)
    for packet in audio.encode():
        container.mux(packet)
    container.close()
    return path
