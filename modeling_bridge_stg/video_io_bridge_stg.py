"""Video reading for Bridge-STG with PyAV: probe, sample, seek, decode only what is needed.

Self-contained remote code: imports only numpy, PyAV, PIL (optional input type) and sibling files
(relatively), so a checkpoint folder can carry it next to the model.

How frame ids are defined
-------------------------
The frame id of a frame is its index in **presentation order** over the whole stream. The reader
builds that timeline once per open by *demuxing* the video stream (reading packet headers only,
no decoding): every packet's PTS, keyframe flag and decode position. Sorting the PTS gives the
exact frame count (the header's ``nb_frames`` is only reported, never trusted), exact per-frame
timestamps (``(pts - first_pts) * time_base``) and, for constant frame rate, ids equal to
``round(timestamp * fps)``. Variable frame rate streams get correct ids and true timestamps too.

Decoding then seeks to the last keyframe at or before the first needed frame, decodes forward only
as far as the last needed frame, seeks again when a later needed frame lies beyond the next
keyframe, and tells the decoder to skip non-reference frames that are not needed (their pixels
cannot influence any other frame). Only requested frames are converted to RGB. Any requested frame
that does not come out of the decoder raises :class:`VideoDecodeError`; frames are never invented.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO, Sequence, Union

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .configuration_bridge_stg import DEFAULT_MAX_FRAMES, DEFAULT_MIN_FRAMES, DEFAULT_SAMPLE_FPS
from .errors_bridge_stg import FrameSamplingError, VideoDecodeError


VideoSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, np.ndarray, Sequence[Any]]

_EPS = 1e-6
DECODER_THREAD_TYPE = "AUTO"  # FFmpeg frame + slice threads for decoding (PyAV thread_type)


@dataclass
class VideoMetadata:
    """Stream metadata of one video.

    Attributes:
        fps: average frame rate (frames / second). For constant frame rate this is the stream rate.
        num_frames: number of frames, **counted** from the stream's packets (not the header).
        duration: seconds, ``num_frames / fps`` for constant frame rate, else last timestamp + one
            average frame duration.
        width, height: frame size in pixels (of the decoded, unrotated frames).
        name: a display name (file name, ``"<bytes>"``, ``"<array>"``...), used in error messages.
        path: the file path when the source was a path, else ``None``.
        header_num_frames: the frame count the container header claims (0 when absent); reported only.
        variable_frame_rate: whether the PTS spacing is not constant.
        codec: codec name (``"array"`` for already-decoded input).
    """

    fps: float
    num_frames: int
    duration: float
    width: int
    height: int
    name: str
    path: str | None = None
    header_num_frames: int = 0
    variable_frame_rate: bool = False
    codec: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DecodedVideo:
    """Frames sampled from a video, with where they came from.

    Attributes:
        frames: ``uint8`` array ``(T, H, W, 3)`` RGB.
        frame_ids: ``T`` original frame ids (presentation-order index in the video). An id may repeat
            only at the end, when a segment has too few frames to make the count even.
        timestamps: ``T`` seconds from the start of the video (first frame = 0.0).
        metadata: the :class:`VideoMetadata` of the whole video.
        segment: ``(start, end)`` half-open frame-id range that was sampled.
        segment_start_time: seconds from the video start of frame ``segment[0]``.
    """

    frames: np.ndarray
    frame_ids: list[int]
    timestamps: list[float]
    metadata: VideoMetadata
    segment: tuple[int, int] = (0, 0)
    segment_start_time: float = 0.0

    @property
    def relative_timestamps(self) -> list[float]:
        """Seconds of each sampled frame from the segment start."""
        return [t - self.segment_start_time for t in self.timestamps]

    def __len__(self) -> int:
        return len(self.frame_ids)


@dataclass
class _Index:
    """Presentation-order timeline of a stream (built by demuxing, no decoding)."""

    pts: np.ndarray  # (N,) int64, sorted presentation timestamps (stream time base)
    times: np.ndarray  # (N,) float64 seconds from the first frame
    key_pts: np.ndarray  # sorted PTS of keyframes
    key_decode_pos: np.ndarray  # decode-order position of each keyframe in key_pts
    key_seek_ts: np.ndarray  # seek target of each keyframe (its DTS when known, else its PTS)
    decode_pos_of_pts: dict[int, int] = field(default_factory=dict)
    time_base: float = 0.0
    has_pts: bool = True


# ----------------------------------------------------------------------------------------- sampling
def sample_frame_ids(
    num_frames: int,
    fps: float,
    sample_fps: float = DEFAULT_SAMPLE_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    min_frames: int = DEFAULT_MIN_FRAMES,
    segment: tuple[int, int] | None = None,
    frame_times: Sequence[float] | np.ndarray | None = None,
    name: str = "<video>",
) -> list[int]:
    """Frame ids to sample from a segment (docs/method.md §3.2).

    Rule: frames at ``sample_fps`` from the segment start (the frame shown at each time
    ``t_k = t_start + k / sample_fps`` that lies inside the segment). If that gives more than
    ``max_frames``, ``max_frames`` frames uniformly over the segment instead (first and last frame
    included); if fewer than ``min_frames``, ``min_frames`` uniformly. The count is made even (Qwen
    merges two consecutive frames into one temporal group): one more frame if the segment has it,
    else the last id is repeated.

    Args:
        num_frames: frames in the video.
        fps: average frame rate of the video (> 0).
        sample_fps: sampling rate (> 0).
        max_frames / min_frames: caps (``max_frames`` even, ``min_frames >= 1``).
        segment: half-open ``(start, end)`` in frame ids; default the whole video.
        frame_times: optional per-frame seconds (``num_frames``), for variable frame rate streams;
            defaults to ``id / fps``.
        name: video name for error messages.

    Returns:
        Sorted list of frame ids (even length, possibly the last id repeated once).
    """
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise FrameSamplingError(f"{name}: video fps must be a positive number, got {fps!r}")
    if not (isinstance(sample_fps, (int, float)) and math.isfinite(sample_fps) and sample_fps > 0):
        raise FrameSamplingError(f"{name}: sampling fps must be a positive number, got {sample_fps!r}")
    if int(max_frames) < 2 or int(max_frames) % 2:
        raise FrameSamplingError(f"{name}: max_frames must be an even integer >= 2, got {max_frames!r}")
    if int(min_frames) < 1 or int(min_frames) > int(max_frames):
        raise FrameSamplingError(f"{name}: min_frames must be in [1, max_frames={max_frames}], got {min_frames!r}")
    if num_frames <= 0:
        raise VideoDecodeError(f"{name}: the video has no frames")
    start, end = _check_segment(segment, num_frames, name)
    count = end - start
    if frame_times is None:
        times = np.arange(num_frames, dtype=np.float64) / float(fps)
    else:
        times = np.asarray(frame_times, dtype=np.float64)
        if times.shape != (num_frames,):
            raise FrameSamplingError(f"{name}: frame_times has shape {times.shape}, expected ({num_frames},)")
    t0 = times[start]
    # end time of the segment: start of the frame after it, or last frame + one average frame duration
    t_end = times[end] if end < num_frames else times[end - 1] + 1.0 / float(fps)
    n_fps = int(math.ceil((t_end - t0) * sample_fps - _EPS))
    n_fps = max(n_fps, 1)

    def at_fps(n: int) -> list[int] | None:
        targets = t0 + np.arange(n, dtype=np.float64) / float(sample_fps)
        if targets[-1] >= t_end - _EPS:
            return None
        ids = np.searchsorted(times[start:end], targets + _EPS, side="right") - 1 + start
        ids = np.clip(ids, start, end - 1)
        out = [int(i) for i in ids]
        return out if len(set(out)) == len(out) else None

    def uniform(n: int) -> list[int]:
        n = min(n, count)
        if n % 2 and n + 1 <= min(count, int(max_frames)):
            n += 1
        return [int(i) for i in np.round(np.linspace(start, end - 1, n)).astype(np.int64)]

    if n_fps > int(max_frames):
        ids = uniform(int(max_frames))
    elif n_fps < int(min_frames):
        ids = uniform(int(min_frames))
    else:
        ids = at_fps(n_fps)
        if ids is None:  # sampling faster than the video's own rate: every frame of the segment
            ids = uniform(n_fps)
        elif len(ids) % 2:
            longer = at_fps(len(ids) + 1)
            if longer is not None:
                ids = longer
    if len(ids) % 2:
        ids.append(ids[-1])  # as Qwen's processors do: repeat the last frame to complete the group
    return ids


def _check_segment(segment: tuple[int, int] | None, num_frames: int, name: str) -> tuple[int, int]:
    if segment is None:
        return 0, num_frames
    try:
        start, end = (int(segment[0]), int(segment[1]))
    except (TypeError, ValueError, IndexError) as err:
        raise FrameSamplingError(f"{name}: segment must be a (start, end) pair of frame ids, got {segment!r}") from err
    if not (0 <= start < end <= num_frames):
        raise FrameSamplingError(
            f"{name}: segment [{start}, {end}) is empty or outside the video's {num_frames} frames"
        )
    return start, end


# ----------------------------------------------------------------------------------------- opening
def _source_name(source: Any) -> tuple[str, str | None]:
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        return os.path.basename(path) or path, path
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>", None
    name = getattr(source, "name", None)
    if isinstance(name, str):
        return os.path.basename(name) or name, None
    return f"<{type(source).__name__}>", None


def _is_decoded(source: Any) -> bool:
    if isinstance(source, np.ndarray):
        return True
    if isinstance(source, (list, tuple)) and len(source) > 0:
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - pillow is a dependency
            return False
        return all(isinstance(x, (Image.Image, np.ndarray)) for x in source)
    return False


class _Container:
    """Opens a PyAV input container for a path / bytes / file object, mapping errors to VideoDecodeError."""

    def __init__(self, source: Any) -> None:
        self.name, self.path = _source_name(source)
        if isinstance(source, (str, os.PathLike)):
            if not os.path.exists(self.path):
                raise VideoDecodeError(f"{self.path}: no such file")
            if os.path.isdir(self.path):
                raise VideoDecodeError(f"{self.path}: is a directory, not a video file")
            target: Any = self.path
        elif isinstance(source, (bytes, bytearray, memoryview)):
            if len(source) == 0:
                raise VideoDecodeError(f"{self.name}: empty byte string, not a video")
            target = io.BytesIO(bytes(source))
        elif hasattr(source, "read"):
            target = source
            if hasattr(source, "seek"):
                try:
                    source.seek(0)
                except (OSError, ValueError):
                    pass
        else:
            raise VideoDecodeError(
                f"{self.name}: unsupported video source type {type(source).__name__} "
                "(expected a path, bytes, a binary file object, a (T,H,W,3) array or a list of PIL images)"
            )
        try:
            self.container = av.open(target, mode="r")
        except av.FFmpegError as err:
            raise VideoDecodeError(f"{self.where}: cannot open as a video ({err})") from err
        except (OSError, ValueError, TypeError) as err:
            raise VideoDecodeError(f"{self.where}: cannot open as a video ({err})") from err
        if not self.container.streams.video:
            self.container.close()
            raise VideoDecodeError(f"{self.where}: the file has no video stream")
        self.stream = self.container.streams.video[0]
        # decoder threads (frame + slice), set before the codec opens. Frame skipping is decided per
        # packet and only ever drops non-reference frames, so threading cannot change decoded pixels.
        self.stream.thread_type = DECODER_THREAD_TYPE

    @property
    def where(self) -> str:
        return self.path or self.name

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "_Container":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _build_index(c: _Container) -> _Index:
    """Demux the video stream (no decoding) and build its presentation-order timeline."""
    stream = c.stream
    pts_list: list[int] = []
    keys: list[tuple[int, int, int]] = []
    decode_pos: dict[int, int] = {}
    has_pts = True
    pos = 0
    try:
        for packet in c.container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                continue
            pts = packet.pts
            if pts is None:
                has_pts = False
                pts = pos  # placeholder; replaced below
            pts_list.append(int(pts))
            decode_pos[int(pts)] = pos
            if packet.is_keyframe:
                keys.append((int(pts), pos, int(packet.dts) if packet.dts is not None else int(pts)))
            pos += 1
    except av.FFmpegError as err:
        raise VideoDecodeError(f"{c.where}: corrupt video stream, demuxing failed after {pos} packets ({err})") from err
    if not pts_list:
        raise VideoDecodeError(f"{c.where}: the video stream has no frames")
    header = int(stream.frames or 0)
    if header > len(pts_list) and "mp4" in (c.container.format.name or "").split(","):
        # an MP4 sample table lists every frame: fewer readable packets means the file was cut short
        raise VideoDecodeError(
            f"{c.where}: truncated or corrupt MP4: the sample table lists {header} frames but only "
            f"{len(pts_list)} could be read"
        )
    tb = float(stream.time_base) if stream.time_base else 0.0
    if has_pts and len(set(pts_list)) != len(pts_list):
        has_pts = False  # duplicated PTS: timeline unusable, fall back to decode order
    if not has_pts or tb <= 0:
        n = len(pts_list)
        fps = _rate(stream) or 0.0
        if fps <= 0:
            raise VideoDecodeError(f"{c.where}: the stream carries neither timestamps nor a frame rate")
        return _Index(
            pts=np.arange(n, dtype=np.int64), times=np.arange(n, dtype=np.float64) / fps,
            key_pts=np.zeros(1, dtype=np.int64), key_decode_pos=np.zeros(1, dtype=np.int64),
            key_seek_ts=np.zeros(1, dtype=np.int64), decode_pos_of_pts={}, time_base=0.0, has_pts=False,
        )
    pts = np.array(sorted(pts_list), dtype=np.int64)
    times = (pts - pts[0]).astype(np.float64) * tb
    keys.sort()
    if not keys or keys[0][0] > pts[0]:
        first = int(pts[0])
        keys.insert(0, (first, decode_pos[first], first))  # start of stream is always a valid entry
    return _Index(
        pts=pts, times=times, key_pts=np.array([k[0] for k in keys], dtype=np.int64),
        key_decode_pos=np.array([k[1] for k in keys], dtype=np.int64),
        key_seek_ts=np.array([k[2] for k in keys], dtype=np.int64), decode_pos_of_pts=decode_pos,
        time_base=tb, has_pts=True,
    )


def _rate(stream: Any) -> float | None:
    for attr in ("average_rate", "guessed_rate", "base_rate"):
        rate = getattr(stream, attr, None)
        if rate:
            value = float(rate)
            if value > 0 and math.isfinite(value):
                return value
    return None


def _metadata(c: _Container, index: _Index) -> VideoMetadata:
    stream = c.stream
    n = len(index.pts)
    rate = _rate(stream)
    diffs = np.diff(index.times)
    vfr = False
    if n > 2 and diffs.size:
        med = float(np.median(diffs))
        vfr = bool(med > 0 and np.max(np.abs(diffs - med)) > 0.5 * med)
    if vfr or rate is None:
        span = float(index.times[-1]) if n > 1 else 0.0
        fps = (n - 1) / span if span > 0 else (rate or 0.0)
    else:
        fps = rate
    if not fps or fps <= 0:
        raise VideoDecodeError(f"{c.where}: cannot determine the frame rate")
    duration = float(index.times[-1] + 1.0 / fps) if vfr else n / fps
    width = int(stream.codec_context.width or stream.width or 0)
    height = int(stream.codec_context.height or stream.height or 0)
    if width <= 0 or height <= 0:
        raise VideoDecodeError(f"{c.where}: the video stream reports no frame size")
    return VideoMetadata(
        fps=float(fps), num_frames=n, duration=duration, width=width, height=height, name=c.name,
        path=c.path, header_num_frames=int(stream.frames or 0), variable_frame_rate=vfr,
        codec=str(stream.codec_context.name),
    )


def probe_video(source: VideoSource, video_fps: float | None = None) -> VideoMetadata:
    """Metadata of a video without decoding pixels (the packet headers are read once).

    Args:
        source: path, bytes, binary file object, ``(T, H, W, 3)`` array or list of PIL images.
        video_fps: frame rate, required for already-decoded input.
    """
    if _is_decoded(source):
        frames = _decoded_to_array(source)
        return _array_metadata(frames, video_fps)
    with _Container(source) as c:
        return _metadata(c, _build_index(c))


# ----------------------------------------------------------------------------------------- decoding
def _decode_needed(c: _Container, index: _Index, wanted: list[int], use_skip: bool = True) -> dict[int, np.ndarray]:
    """Decode the frames with presentation indices ``wanted`` (sorted, unique); returns id -> RGB array."""
    stream = c.stream
    container = c.container
    out: dict[int, np.ndarray] = {}
    if not index.has_pts:
        # no usable timestamps: presentation order == decode output order, decode sequentially
        targets = set(wanted)
        last = wanted[-1]
        i = 0
        try:
            for frame in container.decode(stream):
                if i in targets:
                    out[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
                i += 1
        except av.FFmpegError as err:
            raise VideoDecodeError(f"{c.where}: decoding failed at frame {i} ({err})") from err
        return out

    to_rgb = VideoReformatter()  # one swscale context for all frames (same conversion as frame.to_ndarray)
    want_pts = [int(index.pts[i]) for i in wanted]
    id_of_pts = {p: i for p, i in zip(want_pts, wanted)}
    want_set = set(want_pts)
    ctx = stream.codec_context
    k = 0  # next needed (position in want_pts)

    def keyframe_for(p: int) -> int:
        """Index (into the keyframe arrays) of the last keyframe presented at or before PTS ``p``."""
        return max(int(np.searchsorted(index.key_pts, p, side="right")) - 1, 0)

    cur_decode_pos = -1
    sought: set[int] = set()
    attempt = 0  # 0: seek to the keyframe's PTS, 1: to its DTS, 2: to the stream start
    try:
        while k < len(want_pts):
            j = keyframe_for(want_pts[k])
            sought.add(j)
            target = (int(index.key_pts[j]), int(index.key_seek_ts[j]), int(index.key_seek_ts[0]))[attempt]
            container.seek(target, stream=stream, backward=True, any_frame=False)
            ctx.flush_buffers()
            reseek = False
            first = True
            for packet in container.demux(stream):
                if first and packet.pts is not None:
                    first = False
                    if int(packet.pts) > int(index.key_pts[j]) and attempt < 2:
                        # the demuxer landed after the keyframe we need: seek further back
                        attempt += 1
                        reseek = True
                        break
                    attempt = 0
                if packet.pts is not None:
                    cur_decode_pos = index.decode_pos_of_pts.get(int(packet.pts), cur_decode_pos)
                    if use_skip:
                        ctx.skip_frame = "DEFAULT" if int(packet.pts) in want_set else "NONREF"
                elif use_skip:
                    ctx.skip_frame = "DEFAULT"
                for frame in packet.decode():
                    if frame.pts is None:
                        continue
                    p = int(frame.pts)
                    if p in id_of_pts and id_of_pts[p] not in out:
                        out[id_of_pts[p]] = to_rgb.reformat(frame, format="rgb24").to_ndarray()
                while k < len(want_pts) and id_of_pts[want_pts[k]] in out:
                    k += 1
                if k >= len(want_pts):
                    break
                # seek if the next needed frame's keyframe lies beyond what the demuxer has reached
                j = keyframe_for(want_pts[k])
                if j not in sought and int(index.key_decode_pos[j]) > cur_decode_pos + 1:
                    reseek = True
                    break
            else:
                break  # end of stream (the final empty packet flushed the decoder)
            if not reseek:
                continue
    except av.FFmpegError as err:
        raise VideoDecodeError(f"{c.where}: decoding failed ({err})") from err
    finally:
        ctx.skip_frame = "DEFAULT"
    return out


def read_video(
    source: VideoSource,
    sample_fps: float = DEFAULT_SAMPLE_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
    min_frames: int = DEFAULT_MIN_FRAMES,
    frame_ids: Sequence[int] | None = None,
    segment: tuple[int, int] | None = None,
    video_fps: float | None = None,
) -> DecodedVideo:
    """Read sampled frames of a video.

    Args:
        source: a path (``str`` / ``os.PathLike``), ``bytes``, a binary file object, a ``uint8`` array
            ``(T, H, W, 3)`` or a list of PIL images (the last two need ``video_fps``).
        sample_fps: sampling rate in frames per second (default 2.0), ignored when ``frame_ids`` is given.
        max_frames, min_frames: sampling caps (see :func:`sample_frame_ids`).
        frame_ids: explicit original frame ids to read (any order, duplicates allowed; returned sorted).
        segment: half-open ``(start, end)`` frame-id range to sample from (default: whole video).
        video_fps: the native frame rate of already-decoded input.

    Returns:
        :class:`DecodedVideo` with ``frames`` ``(T, H, W, 3)`` uint8, ``frame_ids``, ``timestamps``
        (seconds from the video start) and ``metadata``.

    Raises:
        VideoDecodeError: missing / unreadable / corrupt file, no video stream, no frames, a frame that
            cannot be decoded.
        FrameSamplingError: sample_fps <= 0, an empty or out-of-range segment, frame ids outside the video.
    """
    if frame_ids is None and not (isinstance(sample_fps, (int, float)) and math.isfinite(sample_fps) and sample_fps > 0):
        raise FrameSamplingError(f"{_source_name(source)[0]}: sample_fps must be > 0, got {sample_fps!r}")
    if _is_decoded(source):
        return _read_decoded(source, sample_fps, max_frames, min_frames, frame_ids, segment, video_fps)
    with _Container(source) as c:
        index = _build_index(c)
        meta = _metadata(c, index)
        ids = _resolve_ids(meta, index.times, sample_fps, max_frames, min_frames, frame_ids, segment)
        unique = sorted(set(ids))
        decoded = _decode_needed(c, index, unique, use_skip=True)
        if len(decoded) < len(unique):
            # the reference-frame skipping is an optimisation only: retry without it before giving up
            decoded = _decode_needed(c, index, unique, use_skip=False)
        missing = [i for i in unique if i not in decoded]
        if missing:
            raise VideoDecodeError(
                f"{c.where}: frames {missing[:10]}{'...' if len(missing) > 10 else ''} could not be decoded "
                f"(corrupt or truncated stream; {meta.num_frames} frames indexed)"
            )
    frames = np.stack([decoded[i] for i in ids])
    start = segment[0] if segment is not None else 0
    seg = (int(start), int(segment[1]) if segment is not None else meta.num_frames)
    return DecodedVideo(
        frames=frames, frame_ids=list(ids), timestamps=[float(index.times[i]) for i in ids], metadata=meta,
        segment=seg, segment_start_time=float(index.times[seg[0]]),
    )


def _resolve_ids(
    meta: VideoMetadata,
    times: np.ndarray,
    sample_fps: float,
    max_frames: int,
    min_frames: int,
    frame_ids: Sequence[int] | None,
    segment: tuple[int, int] | None,
) -> list[int]:
    where = meta.path or meta.name
    if frame_ids is not None:
        ids = [int(i) for i in frame_ids]
        if not ids:
            raise FrameSamplingError(f"{where}: frame_ids is empty")
        bad = [i for i in ids if i < 0 or i >= meta.num_frames]
        if bad:
            raise FrameSamplingError(
                f"{where}: requested frame ids {bad[:10]} are outside the video's {meta.num_frames} frames"
            )
        lo, hi = _check_segment(segment, meta.num_frames, where)
        outside = [i for i in ids if not lo <= i < hi]
        if outside:
            raise FrameSamplingError(f"{where}: requested frame ids {outside[:10]} are outside the segment [{lo}, {hi})")
        return sorted(ids)
    return sample_frame_ids(
        meta.num_frames, meta.fps, sample_fps=sample_fps, max_frames=max_frames, min_frames=min_frames,
        segment=segment, frame_times=times, name=where,
    )


# ----------------------------------------------------------------------------------------- decoded input
def _decoded_to_array(source: Any) -> np.ndarray:
    if isinstance(source, np.ndarray):
        arr = source
    else:
        from PIL import Image

        arrs = []
        for i, im in enumerate(source):
            if isinstance(im, Image.Image):
                arrs.append(np.asarray(im.convert("RGB")))
            else:
                arrs.append(np.asarray(im))
        shapes = {a.shape for a in arrs}
        if len(shapes) != 1:
            raise VideoDecodeError(f"<frames>: frames differ in size: {sorted(shapes)}")
        arr = np.stack(arrs)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise VideoDecodeError(f"<array>: expected frames of shape (T, H, W, 3), got {arr.shape}")
    if arr.shape[0] == 0:
        raise VideoDecodeError("<array>: the video has no frames")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and np.nanmax(arr) <= 1.0 + 1e-6 and np.nanmin(arr) >= 0:
            raise VideoDecodeError("<array>: float frames in [0, 1] are ambiguous; pass uint8 RGB frames in [0, 255]")
        if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 255:
            raise VideoDecodeError("<array>: frame values must be finite and within [0, 255]")
        arr = arr.astype(np.uint8)
    return arr


def _array_metadata(frames: np.ndarray, video_fps: float | None) -> VideoMetadata:
    if video_fps is None:
        raise FrameSamplingError("<array>: already-decoded frames need an explicit video_fps")
    if not (isinstance(video_fps, (int, float)) and math.isfinite(video_fps) and video_fps > 0):
        raise FrameSamplingError(f"<array>: video_fps must be a positive number, got {video_fps!r}")
    t, h, w, _ = frames.shape
    return VideoMetadata(
        fps=float(video_fps), num_frames=int(t), duration=t / float(video_fps), width=int(w), height=int(h),
        name="<array>", path=None, header_num_frames=int(t), variable_frame_rate=False, codec="array",
    )


def _read_decoded(
    source: Any,
    sample_fps: float,
    max_frames: int,
    min_frames: int,
    frame_ids: Sequence[int] | None,
    segment: tuple[int, int] | None,
    video_fps: float | None,
) -> DecodedVideo:
    arr = _decoded_to_array(source)
    meta = _array_metadata(arr, video_fps)
    times = np.arange(meta.num_frames, dtype=np.float64) / meta.fps
    ids = _resolve_ids(meta, times, sample_fps, max_frames, min_frames, frame_ids, segment)
    seg = _check_segment(segment, meta.num_frames, meta.name)
    return DecodedVideo(
        frames=np.ascontiguousarray(arr[ids]), frame_ids=ids, timestamps=[float(times[i]) for i in ids],
        metadata=meta, segment=seg, segment_start_time=float(times[seg[0]]),
    )


__all__ = [
    "DecodedVideo",
    "VideoMetadata",
    "probe_video",
    "read_video",
    "sample_frame_ids",
]
