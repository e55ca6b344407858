"""PyAV reader: metadata, exact frame ids / timestamps, sampling rules, seeking, bad input."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from bridge_stg import FrameSamplingError, VideoDecodeError
from bridge_stg.video_io_bridge_stg import DecodedVideo, probe_video, read_video, sample_frame_ids

from helpers_video import (
    index_frame,
    read_index,
    write_audio_only,
    write_index_video,
    write_zero_frame_video,
)


@pytest.fixture(scope="module")
def index_clip(tmp_path_factory) -> str:
    """100 frames at 25 fps, keyframe every 12 frames, B-frames; frame i encodes i."""
    return write_index_video(tmp_path_factory.mktemp("v") / "index.mp4", 100, fps=25.0, gop=12)


# ------------------------------------------------------------------------------------------ sampling rule
def test_sample_frame_ids_rules():
    # 2 fps of a 25 fps clip: the frame shown at t = k/2 s, i.e. floor(12.5 k)
    assert sample_frame_ids(100, 25.0) == [0, 12, 25, 37, 50, 62, 75, 87]
    # more than max_frames at 2 fps -> max_frames uniformly, first and last included
    ids = sample_frame_ids(2500, 25.0, max_frames=64)
    assert len(ids) == 64 and ids[0] == 0 and ids[-1] == 2499 and ids == sorted(set(ids))
    # fewer than min_frames -> min_frames uniformly
    assert sample_frame_ids(20, 25.0, min_frames=4) == [0, 6, 13, 19]
    # odd count at 2 fps: one more 2-fps frame when the segment has it ...
    assert sample_frame_ids(63, 25.0) == [0, 12, 25, 37, 50, 62]  # 2.52 s -> 6 samples
    # ... else the last id is repeated (as Qwen pads an odd frame count)
    assert sample_frame_ids(132, 25.0) == [0, 12, 25, 37, 50, 62, 75, 87, 100, 112, 125, 125]
    # segment: sampling starts at the segment start
    assert sample_frame_ids(100, 25.0, segment=(10, 60)) == [10, 22, 35, 47]
    # a segment with fewer frames than min_frames: every frame, count made even
    assert sample_frame_ids(100, 25.0, segment=(5, 8)) == [5, 6, 7, 7]
    # every result has an even length
    for n in range(1, 200, 7):
        assert len(sample_frame_ids(n, 29.97)) % 2 == 0


def test_sample_frame_ids_bad_input():
    with pytest.raises(FrameSamplingError, match="fps"):
        sample_frame_ids(100, 25.0, sample_fps=0)
    with pytest.raises(FrameSamplingError, match="fps"):
        sample_frame_ids(100, -1.0)
    with pytest.raises(FrameSamplingError, match="segment"):
        sample_frame_ids(100, 25.0, segment=(50, 50))
    with pytest.raises(FrameSamplingError, match="segment"):
        sample_frame_ids(100, 25.0, segment=(90, 120))
    with pytest.raises(FrameSamplingError, match="max_frames"):
        sample_frame_ids(100, 25.0, max_frames=7)


# ------------------------------------------------------------------------------------------ synthetic clips
def test_exact_ids_and_timestamps_on_index_clip(index_clip):
    meta = probe_video(index_clip)
    assert (meta.num_frames, meta.fps, meta.width, meta.height) == (100, 25.0, 160, 64)
    assert meta.duration == pytest.approx(4.0)
    video = read_video(index_clip)
    assert video.frame_ids == [0, 12, 25, 37, 50, 62, 75, 87]
    assert [read_index(f) for f in video.frames] == video.frame_ids
    assert video.timestamps == pytest.approx([i / 25.0 for i in video.frame_ids])
    assert video.frames.dtype == np.uint8 and video.frames.shape == (8, 64, 160, 3)


def test_every_frame_and_explicit_ids(index_clip):
    every = read_video(index_clip, frame_ids=range(100))
    assert [read_index(f) for f in every.frames] == list(range(100))
    # unsorted, duplicated, across several keyframes: sorted output, pixels identical to the full decode
    ids = [97, 3, 40, 41, 3, 70]
    part = read_video(index_clip, frame_ids=ids)
    assert part.frame_ids == sorted(ids)
    for fid, frame in zip(part.frame_ids, part.frames):
        assert np.array_equal(frame, every.frames[fid])


def test_segment_and_relative_timestamps(index_clip):
    video = read_video(index_clip, segment=(30, 80))
    assert video.frame_ids == [30, 42, 55, 67]
    assert [read_index(f) for f in video.frames] == video.frame_ids
    assert video.segment == (30, 80) and video.segment_start_time == pytest.approx(1.2)
    assert video.relative_timestamps == pytest.approx([0.0, 0.48, 1.0, 1.48])


def test_max_frames_cap(index_clip):
    video = read_video(index_clip, sample_fps=25.0, max_frames=10)
    assert len(video) == 10 and video.frame_ids[0] == 0 and video.frame_ids[-1] == 99
    assert [read_index(f) for f in video.frames] == video.frame_ids


def test_variable_frame_rate(tmp_path):
    gaps = [40 if i % 3 else 100 for i in range(59)]
    pts = np.concatenate([[0], np.cumsum(gaps)])
    path = write_index_video(tmp_path / "vfr.mp4", 60, pts_ms=pts)
    meta = probe_video(path)
    assert meta.variable_frame_rate and meta.num_frames == 60
    every = read_video(path, frame_ids=range(60))
    assert [read_index(f) for f in every.frames] == list(range(60))
    assert every.timestamps == pytest.approx(pts / 1000.0)
    video = read_video(path)
    # frame shown at each 0.5 s step: the last frame whose timestamp is <= t
    expected = [int(np.searchsorted(pts, t * 1000, side="right") - 1) for t in np.arange(len(video)) * 0.5]
    assert video.frame_ids == expected
    assert [read_index(f) for f in video.frames] == expected


def test_header_without_frame_count(tmp_path):
    path = write_index_video(tmp_path / "clip.mkv", 50, fps=10.0)
    meta = probe_video(path)
    assert meta.header_num_frames == 0  # Matroska has no frame count: it is counted
    assert meta.num_frames == 50 and meta.fps == 10.0 and meta.duration == pytest.approx(5.0)
    video = read_video(path)
    assert video.frame_ids == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]
    assert [read_index(f) for f in video.frames] == video.frame_ids


def test_bytes_and_file_object(index_clip):
    data = open(index_clip, "rb").read()
    a = read_video(data)
    with open(index_clip, "rb") as f:
        b = read_video(f)
    c = read_video(io.BytesIO(data), frame_ids=[5])
    ref = read_video(index_clip)
    assert a.frame_ids == b.frame_ids == ref.frame_ids
    assert np.array_equal(a.frames, ref.frames) and np.array_equal(b.frames, ref.frames)
    assert read_index(c.frames[0]) == 5 and a.metadata.name == "<bytes>"


def test_decoded_inputs():
    frames = np.stack([index_frame(i) for i in range(30)])
    video = read_video(frames, video_fps=10.0)
    assert video.frame_ids == [0, 5, 10, 15, 20, 25]
    assert np.array_equal(video.frames, frames[video.frame_ids])
    assert video.timestamps == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    pil = [Image.fromarray(f) for f in frames]
    video2 = read_video(pil, video_fps=10.0, frame_ids=[3, 4])
    assert np.array_equal(video2.frames, frames[[3, 4]])
    assert probe_video(frames, video_fps=10.0).num_frames == 30
    with pytest.raises(FrameSamplingError, match="video_fps"):
        read_video(frames)
    with pytest.raises(FrameSamplingError, match="video_fps"):
        read_video(frames, video_fps=0)
    with pytest.raises(VideoDecodeError, match="no frames"):
        read_video(np.zeros((0, 8, 8, 3), np.uint8), video_fps=5)
    with pytest.raises(VideoDecodeError, match="shape"):
        read_video(np.zeros((4, 8, 8)), video_fps=5)


# ------------------------------------------------------------------------------------------ real videos
@pytest.mark.parametrize(
    "name,frames,fps,size",
    [
        ("bigbuckbunny.mp4", 132, 25.0, (1280, 720)),
        ("bikes.mp4", 250, 25.0, (640, 272)),
        ("carphone_pristine.mp4", 120, 30000 / 1001, (176, 144)),
    ],
)
def test_sample_videos(sample_video_dir, name, frames, fps, size):
    path = os.path.join(sample_video_dir, name)
    meta = probe_video(path)
    assert meta.num_frames == frames and meta.fps == pytest.approx(fps) and (meta.width, meta.height) == size
    video = read_video(path)
    assert video.frame_ids == sample_frame_ids(frames, fps)
    assert video.frames.shape == (len(video.frame_ids), size[1], size[0], 3)
    assert video.timestamps == pytest.approx([i / fps for i in video.frame_ids], abs=1e-6)
    # pixels identical to a plain sequential decode of every frame
    import av

    with av.open(path) as container:
        wanted = set(video.frame_ids)
        ref = {}
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                ref[i] = frame.to_ndarray(format="rgb24")
    for fid, frame in zip(video.frame_ids, video.frames):
        assert np.array_equal(frame, ref[fid]), (name, fid)


# ------------------------------------------------------------------------------------------ bad input
def test_missing_file(tmp_path):
    with pytest.raises(VideoDecodeError, match="no such file") as err:
        read_video(tmp_path / "nope.mp4")
    assert "nope.mp4" in str(err.value)
    with pytest.raises(VideoDecodeError):
        probe_video(str(tmp_path / "nope.mp4"))


def test_non_video_file(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoDecodeError, match="notes.mp4"):
        read_video(path)
    with pytest.raises(VideoDecodeError, match="bytes"):
        read_video(b"garbage bytes" * 100)


def test_truncated_mp4(tmp_path, index_clip):
    data = open(index_clip, "rb").read()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])  # moov atom (at the end) lost
    with pytest.raises(VideoDecodeError, match="cut.mp4"):
        read_video(path)


def test_corrupt_frames_never_blank(tmp_path):
    # moov at the start (faststart), then the media data is cut: frames past the cut cannot exist
    import av

    src = tmp_path / "src.mp4"
    write_index_video(src, 100, fps=25.0)
    fast = tmp_path / "fast.mp4"
    with av.open(str(src)) as inp, av.open(str(fast), "w", options={"movflags": "faststart"}) as out:
        s_in = inp.streams.video[0]
        s_out = out.add_stream_from_template(s_in)
        for pkt in inp.demux(s_in):
            if pkt.dts is None:
                continue
            pkt.stream = s_out
            out.mux(pkt)
    data = fast.read_bytes()
    cut = tmp_path / "fast_cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(VideoDecodeError, match=r"fast_cut.mp4: truncated or corrupt MP4: .* lists 100 frames"):
        read_video(cut, frame_ids=[0, 95])
    # the intact file reads fine through the same path
    assert [read_index(f) for f in read_video(fast, frame_ids=[0, 95]).frames] == [0, 95]


def test_zero_frame_video(tmp_path):
    path = write_zero_frame_video(tmp_path / "empty.mkv")
    with pytest.raises(VideoDecodeError, match="no frames"):
        read_video(path)


def test_no_video_stream(tmp_path):
    path = write_audio_only(tmp_path / "audio.m4a")
    with pytest.raises(VideoDecodeError, match="no video stream"):
        read_video(path)


def test_bad_fps_and_frame_ids(index_clip):
    with pytest.raises(FrameSamplingError, match="fps"):
        read_video(index_clip, sample_fps=0)
    with pytest.raises(FrameSamplingError, match="fps"):
        read_video(index_clip, sample_fps=-2.0)
    with pytest.raises(FrameSamplingError, match=r"outside the video's 100 frames"):
        read_video(index_clip, frame_ids=[10, 100])
    with pytest.raises(FrameSamplingError, match="outside"):
        read_video(index_clip, frame_ids=[-1])
    with pytest.raises(FrameSamplingError, match="segment"):
        read_video(index_clip, segment=(80, 120))
    with pytest.raises(FrameSamplingError, match="empty"):
        read_video(index_clip, frame_ids=[])


def test_retry_without_frame_skipping(index_clip, monkeypatch):
    """If the fast path (non-reference skipping) misses a frame, the reader decodes again without
    skipping on the same open container, and the result is still exact."""
    from bridge_stg import video_io_bridge_stg as vio

    real = vio._decode_needed
    calls = []

    def lossy(c, index, wanted, use_skip=True):
        calls.append(use_skip)
        out = real(c, index, wanted, use_skip=use_skip)
        if use_skip:
            out.pop(wanted[-1])  # pretend the fast path lost the last frame
        return out

    monkeypatch.setattr(vio, "_decode_needed", lossy)
    video = read_video(index_clip, frame_ids=[4, 50, 97])
    assert calls == [True, False]
    assert [read_index(f) for f in video.frames] == [4, 50, 97]

    def broken(c, index, wanted, use_skip=True):
        out = real(c, index, wanted, use_skip=use_skip)
        out.pop(wanted[-1])
        return out

    monkeypatch.setattr(vio, "_decode_needed", broken)
    with pytest.raises(VideoDecodeError, match=r"index.mp4: frames \[97\] could not be decoded"):
        read_video(index_clip, frame_ids=[4, 50, 97])


def test_decoded_video_type(index_clip):
    video = read_video(index_clip, frame_ids=[1, 2])
    assert isinstance(video, DecodedVideo) and len(video) == 2
