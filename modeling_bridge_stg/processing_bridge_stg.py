"""Processor of Bridge-STG: video + query -> model tensors (model outputs -> tubes: ``post_process_grounding``, from
``postprocessing_bridge_stg.py``).

Self-contained remote code: imports only torch, numpy, transformers, PyAV (through the reader) and sibling
files, relatively, so a checkpoint carries it (``register_for_auto_class("AutoProcessor")``).

Contract: ``docs/design.md`` §2 (tensors), §3 (prompt), §4 (post-processing); docs/method.md §3.2, §3.3, §3.11.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from transformers import AutoTokenizer
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.video_processing_utils import VideoProcessorMixin

from .box_ops_bridge_stg import box_table, boxes_on_frames
from .configuration_bridge_stg import DEFAULT_MAX_FRAMES, DEFAULT_MIN_FRAMES, DEFAULT_SAMPLE_FPS
from .errors_bridge_stg import AnnotationError, FrameSamplingError, InvalidQueryError, VideoDecodeError
from .postprocessing_bridge_stg import BridgeSTGPostProcessingMixin
from .video_io_bridge_stg import DecodedVideo, read_video
from .video_processing_bridge_stg import BridgeSTGVideoProcessor


VIDEO_PAD = "<|video_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
QUESTION = 'When does the query happen? Answer "From A s to B s".'
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


class BridgeSTGProcessor(BridgeSTGPostProcessingMixin, ProcessorMixin):
    r"""
    Processor of [`BridgeSTGForVideoGrounding`]: a [`BridgeSTGVideoProcessor`] (torch-only resize /
    normalise / patchify) and a Qwen tokenizer that knows the bridge tokens ``<bridge_0>``…``<bridge_{K-1}>``.

    ``__call__`` reads and samples the videos (PyAV, see `read_video`), builds the prompt of design.md §3
    with one ``<ts><|vision_start|><|video_pad|>×n<|vision_end|>`` block per temporal group, and returns
    the tensors of design.md §2. The per-sample information needed to map outputs back to the video
    (original frame ids, fps, size, segment) is attached to the returned `BatchFeature` as the Python
    attribute ``video_metadata`` (a list of dicts, one per sample), not as a key, so that
    ``model(**inputs)`` only receives tensors. Pass the `BatchFeature` (or that list) to
    [`~BridgeSTGProcessor.post_process_grounding`].

    Args:
        video_processor ([`BridgeSTGVideoProcessor`]): the video processor.
        tokenizer ([`PreTrainedTokenizerFast`]): Qwen tokenizer with the bridge tokens added.
        chat_template (`str`, *optional*): kept for `apply_chat_template`; the grounding prompt itself is
            built by this class.
        num_bridge_queries (`int`, defaults to 8): K.
        span_source (`str`, defaults to `"text"`): `"text"` (training answer "From A s to B s." + labels)
            or `"frame"` (bridge tokens right after the prompt, no answer text).
        answer_decimals (`int`, defaults to 1): decimals of the timestamps and of the answer.
        answer_timestamps (`str`, defaults to `"exact"`): `"exact"` or `"sampled"` seconds in the training answer
            (``BridgeSTGConfig.answer_timestamps``).
        sample_fps (`float`, defaults to 2.0), max_frames (`int`, defaults to 64), min_frames (`int`,
            defaults to 4): frame sampling (docs/method.md §3.2).
        grounding_mode (`str`, defaults to `"decoupled"`): `"coupled"` builds the baseline's training answer
            (span line + one ``<t s>: (x1,y1,x2,y2)`` line per sampled frame in the GT tube, 0–1000 grid) and
            adds no bridge tokens; see ``coupled_bridge_stg.py``.
        query_position (`str`, defaults to `"before_video"`): the query before or after the video blocks
            (``BridgeSTGConfig.query_position``).
    """

    return_mm_token_type_ids = True

    def __init__(
        self,
        video_processor: BridgeSTGVideoProcessor | None = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        num_bridge_queries: int = 8,
        span_source: str = "text",
        answer_decimals: int = 1,
        sample_fps: float = DEFAULT_SAMPLE_FPS,
        max_frames: int = DEFAULT_MAX_FRAMES,
        min_frames: int = DEFAULT_MIN_FRAMES,
        grounding_mode: str = "decoupled",
        query_position: str = "before_video",
        answer_timestamps: str = "exact",
        **kwargs: Any,
    ) -> None:
        if video_processor is None:
            video_processor = BridgeSTGVideoProcessor()
        if tokenizer is None:
            raise ValueError("tokenizer: BridgeSTGProcessor needs a tokenizer with the Qwen-VL special tokens")
        super().__init__(video_processor, tokenizer, chat_template=chat_template)
        checks = (
            ("num_bridge_queries", not _is_int(num_bridge_queries) or num_bridge_queries < 1, "a positive integer"),
            ("span_source", span_source not in ("text", "frame"), "'text' or 'frame'"),
            ("answer_decimals", not _is_int(answer_decimals) or answer_decimals < 0, "a non-negative integer"),
            ("sample_fps", not (isinstance(sample_fps, (int, float)) and math.isfinite(sample_fps) and sample_fps > 0),
             "a positive number"),
            ("max_frames", not (_is_int(max_frames) and _is_int(min_frames) and 1 <= min_frames <= max_frames
                                and max_frames >= 2 and max_frames % 2 == 0), "an even integer >= min_frames >= 1"),
            ("grounding_mode", grounding_mode not in ("decoupled", "coupled"), "'decoupled' or 'coupled'"),
            ("query_position", query_position not in ("before_video", "after_video"), "'before_video' or 'after_video'"),
            ("answer_timestamps", answer_timestamps not in ("exact", "sampled"), "'exact' or 'sampled'"),
        )
        for name, bad, what in checks:
            if bad:
                raise ValueError(f"{name}: must be {what}, got {locals()[name]!r}")
        self.grounding_mode, self.span_source, self.query_position = grounding_mode, span_source, query_position
        self.num_bridge_queries, self.answer_decimals = int(num_bridge_queries), int(answer_decimals)
        self.answer_timestamps = answer_timestamps
        self.sample_fps, self.max_frames, self.min_frames = float(sample_fps), int(max_frames), int(min_frames)
        # resolve and check the special tokens once
        self._special_ids = {}
        for token in (VIDEO_PAD, VISION_START, VISION_END, IM_START, IM_END, *self.bridge_tokens):
            tid = tokenizer.convert_tokens_to_ids(token)
            if tid is None or (tokenizer.unk_token_id is not None and tid == tokenizer.unk_token_id):
                raise ValueError(f"tokenizer: has no token {token!r} (add the Qwen-VL specials and the bridge tokens)")
            self._special_ids[token] = int(tid)

    # ----------------------------------------------------------------------------- HF plumbing (no torchvision)
    def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
        if argument_name == "video_processor":
            if not isinstance(argument, VideoProcessorMixin):
                raise TypeError(f"video_processor must be a VideoProcessorMixin, got {type(argument).__name__}")
            return VideoProcessorMixin
        return super().check_argument_for_proper_class(argument_name, argument)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path: Any, processor_dict: Any = None, **kwargs: Any):
        vp_kwargs = dict((processor_dict or {}).get("video_processor") or {})
        for key in ("video_processor_type", "auto_map", "processor_class"):
            vp_kwargs.pop(key, None)
        tok_kwargs = {
            k: v for k, v in kwargs.items()
            if k in ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "trust_remote_code")
        }
        return [BridgeSTGVideoProcessor(**vp_kwargs), AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **tok_kwargs)]

    @classmethod
    def from_model_config(cls, config: Any, tokenizer: Any, **overrides: Any) -> "BridgeSTGProcessor":
        """Build the processor that matches a `BridgeSTGConfig`: the backbone's patch / merge / temporal
        patch sizes, the sampling (`sample_fps`, `max_frames`, `min_frames`), `num_bridge_queries`,
        `span_source`, `answer_decimals`, and the resolution budget. `min_pixels` / `max_pixels` of the
        config are read as Qwen2.5-VL pixel counts (merged tokens x 28²) and converted to the same token
        counts on the backbone's grid (x 32² for Qwen3-VL, docs/method.md §3.2). ``overrides`` replace any
        processor argument."""
        vision = config.mllm_config.vision_config
        patch, merge = int(vision.patch_size), int(vision.spatial_merge_size)
        factor2 = (patch * merge) ** 2
        vp = BridgeSTGVideoProcessor(
            patch_size=patch, merge_size=merge, temporal_patch_size=int(vision.temporal_patch_size),
            min_pixels=max(int(config.min_pixels) // (28 * 28), 1) * factor2,
            max_pixels=max(int(config.max_pixels) // (28 * 28), 1) * factor2,
            max_video_tokens=int(config.max_video_tokens),
        )
        kwargs = dict(
            video_processor=vp, tokenizer=tokenizer, num_bridge_queries=int(config.num_bridge_queries),
            span_source=str(config.span_source), answer_decimals=int(config.answer_decimals),
            sample_fps=float(config.sample_fps), max_frames=int(config.max_frames), min_frames=int(config.min_frames),
            grounding_mode=str(getattr(config, "grounding_mode", "decoupled")),
            query_position=str(getattr(config, "query_position", "before_video")),
            answer_timestamps=str(getattr(config, "answer_timestamps", "exact")),
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    # ----------------------------------------------------------------------------- tokens
    @property
    def bridge_tokens(self) -> list[str]:
        """``["<bridge_0>", …, "<bridge_{K-1}>"]``."""
        return [f"<bridge_{i}>" for i in range(self.num_bridge_queries)]

    @property
    def bridge_token_ids(self) -> list[int]:
        """Token ids of the bridge tokens (what ``BridgeSTGConfig.bridge_token_ids`` must hold)."""
        return [self._special_ids[t] for t in self.bridge_tokens]

    @property
    def video_token_id(self) -> int:
        return self._special_ids[VIDEO_PAD]

    @property
    def vision_end_token_id(self) -> int:
        return self._special_ids[VISION_END]

    @property
    def im_end_token_id(self) -> int:
        return self._special_ids[IM_END]

    @property
    def model_input_names(self) -> list[str]:
        return [
            "input_ids", "attention_mask", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw",
            "frame_timestamps", "frame_mask", "frame_ids",
        ]

    # ----------------------------------------------------------------------------- answers
    def format_answer(self, start_s: float, end_s: float) -> str:
        """The answer text ``"From A s to B s."`` with ``answer_decimals`` decimals, e.g. ``"From 3.0s to 7.5s."``."""
        d = self.answer_decimals
        return f"From {float(start_s):.{d}f}s to {float(end_s):.{d}f}s."

    def answer_seconds(self, tube: Sequence[int], seg_start: int, fps: float, frame_ids: Sequence[int],
                       timestamps: Sequence[float]) -> tuple[float, float]:
        """The training answer's seconds for the half-open ground-truth ``tube``: its exact bounds, or
        (``answer_timestamps="sampled"``) the timestamp of the first sampled frame inside it and of the next sampled
        frame after the last one inside it (one sampling interval later at the clip's end), which
        `frames_in_span` maps back to exactly the sampled frames inside the tube. A tube between two sampled
        frames has no such bounds and keeps its exact ones."""
        exact = ((tube[0] - seg_start) / fps, (tube[1] - seg_start) / fps)
        inside = [i for i, f in enumerate(frame_ids) if tube[0] <= f < tube[1]]
        if self.answer_timestamps == "exact" or not inside:
            return exact
        first, last = inside[0], inside[-1]
        later = [t for t in timestamps[last + 1:] if t > timestamps[last]]
        steps = sorted(b - a for a, b in zip(timestamps, timestamps[1:]) if b > a)
        step = steps[len(steps) // 2] if steps else 1.0 / self.sample_fps
        return float(timestamps[first]), float(later[0] if later else timestamps[last] + step)

    def format_timestamp(self, seconds: float) -> str:
        """``<3.0s>``: the text before a temporal group."""
        return f"<{float(seconds):.{self.answer_decimals}f}s>"

    @staticmethod
    def parse_answer(text: str, duration: float | None = None) -> tuple[float, float] | None:
        """Parse a span answer (docs/method.md §3.3): the first two numbers, swapped if reversed, clipped to
        ``[0, duration]``. Returns ``None`` when fewer than two numbers are present."""
        if not isinstance(text, str):
            return None
        numbers = [float(x) for x in _NUMBER.findall(text)[:2]]
        if len(numbers) < 2 or not all(math.isfinite(x) for x in numbers):
            return None
        a, b = numbers
        if b < a:
            a, b = b, a
        a, b = max(a, 0.0), max(b, 0.0)
        if duration is not None:
            a, b = min(a, float(duration)), min(b, float(duration))
        return a, b

    # ----------------------------------------------------------------------------- prompt
    def build_prompt(self, query: str, group_timestamps: Sequence[float], tokens_per_group: int) -> str:
        """The user turn + assistant header of design.md §3 (ends with ``assistant\\n``); the query comes before or
        after the video blocks (``query_position``)."""
        blocks = "".join(
            f"{self.format_timestamp(t)}{VISION_START}{VIDEO_PAD * tokens_per_group}{VISION_END}" for t in group_timestamps
        )
        if self.query_position == "after_video":
            return f"{IM_START}user\n{blocks}\nQuery: {query}\n{QUESTION}{IM_END}\n{IM_START}assistant\n"
        return f"{IM_START}user\nQuery: {query}\n{blocks}\n{QUESTION}{IM_END}\n{IM_START}assistant\n"

    @staticmethod
    def _check_query(query: Any, index: int) -> str:
        if not isinstance(query, str):
            raise InvalidQueryError(f"sample {index}: the query must be a string, got {type(query).__name__}")
        if not query.strip():
            raise InvalidQueryError(f"sample {index}: the query is empty or whitespace only ({query!r})")
        return query.strip()

    # ----------------------------------------------------------------------------- main entry
    def __call__(
        self,
        videos: Any = None,
        text: str | Sequence[str] | None = None,
        video_fps: float | Sequence[float | None] | None = None,
        segments: Sequence[tuple[int, int] | None] | tuple[int, int] | None = None,
        target_spans: Sequence[tuple[int, int]] | tuple[int, int] | None = None,
        target_boxes: Sequence[Any] | None = None,
        frame_ids: Sequence[Sequence[int] | None] | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = "pt",
        training: bool | None = None,
        max_length: int | None = None,
        task_ids: Sequence[int] | None = None,
        with_answer: Sequence[bool] | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Build model inputs for one or a batch of (video, query) pairs.

        Args:
            videos: one video or a list (path, bytes, binary file object, ``(T, H, W, 3)`` uint8 array, list of
                PIL images, or a `DecodedVideo` already sampled by `read_video`).
            text: the query (or list of queries), one per video.
            video_fps: the native frame rate of already-decoded inputs (one value or one per sample).
            segments: half-open ``(start, end)`` frame-id segment per sample to sample from (default whole video).
            target_spans: training / evaluation targets: the ground-truth span ``(tube_start, tube_end)`` per
                sample, half-open frame ids. Turns on ``frame_labels`` / ``target_boxes`` / ``target_box_mask``
                (and, when ``training``, the answer text and ``labels``).
            target_boxes: per sample, the ground-truth boxes ``[x1, y1, x2, y2]`` in original pixels, either a dict
                ``{frame_id: box}`` or ``{"frame_ids": [...], "boxes": [...]}``.
            frame_ids: explicit original frame ids per sample (overrides the sampling).
            padding_side: ``"right"`` / ``"left"``; default right when training, left for inference.
            return_tensors: ``"pt"`` (default), ``"np"`` or ``None``.
            training: append the training answer (text mode) or bridge tokens (frame mode) and return
                ``labels``; defaults to ``target_spans is not None``.
            max_length: the longest prompt accepted (default ``tokenizer.model_max_length``).
            task_ids: optional ``(B,)`` task ids (0 stvg, 1 tvg, 2 rec).
            with_answer: optional, one bool per sample (training, ``span_source="text"`` only): ``False``
                appends the bridge tokens right after the prompt with no answer text and no LM labels, as for
                image REC rows (docs/method.md §3.9). Default: every sample carries the answer.

        Returns:
            `BatchFeature` with the keys of design.md §2 (B samples, L tokens, F = max sampled frames):
            ``input_ids``/``attention_mask``/``mm_token_type_ids`` (B, L), ``pixel_values_videos``
            (ΣN, 3·2·p·p), ``video_grid_thw`` (ΣG, 3), ``frame_timestamps`` (B, F) float, ``frame_mask`` (B, F)
            bool, ``frame_ids`` (B, F) long (−1 padding); with targets: ``frame_labels`` (B, F),
            ``target_boxes`` (B, F, 4) normalised cxcywh, ``target_box_mask`` (B, F); when training:
            ``labels`` (B, L). Attribute ``video_metadata``: list of per-sample dicts (see class doc).
        """
        if kwargs:
            raise TypeError(f"BridgeSTGProcessor.__call__ got unexpected arguments {sorted(kwargs)}")
        args = self._per_sample_arguments(videos, text, video_fps, segments, target_spans, target_boxes, frame_ids,
                                          with_answer)
        if training is None:
            training = target_spans is not None
        if training and target_spans is None:
            raise ValueError("training=True needs `target_spans` (the ground-truth span of every sample)")
        if padding_side is None:
            padding_side = "right" if training else "left"
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side: must be 'left' or 'right', got {padding_side!r}")
        limit = int(max_length) if max_length is not None else int(getattr(self.tokenizer, "model_max_length", 1 << 30))
        samples = []
        pixels: dict[int, tuple] = {}  # one decoded video given for several queries: its pixels are computed once
        for i, (video, query, fps, segment, span, boxes, ids, answer) in enumerate(zip(*args)):
            decoded = self._decode(video, fps, segment, ids)
            samples.append(self._encode_sample(i, query, decoded, span, boxes, training, limit, with_answer=answer,
                                               pixels=pixels))
        return self._collate(samples, padding_side, training, target_spans is not None, return_tensors, task_ids)

    def _per_sample_arguments(self, videos, text, video_fps, segments, target_spans, target_boxes, frame_ids,
                              with_answer) -> list[list[Any]]:
        """Broadcast the call's arguments to one entry per sample (and check the queries)."""
        if videos is None or text is None:
            raise ValueError("BridgeSTGProcessor needs both `videos` and `text`")
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        one_video = isinstance(videos, (str, os.PathLike, bytes, bytearray, np.ndarray, DecodedVideo)) or hasattr(
            videos, "read"
        )
        video_list = [videos] if (single or one_video) else list(videos)
        if len(video_list) != len(texts):
            raise ValueError(f"got {len(video_list)} videos for {len(texts)} queries")
        batch = len(texts)
        if batch == 0:
            raise ValueError("empty batch")
        if isinstance(target_boxes, Mapping):
            if batch != 1:
                raise ValueError(f"target_boxes: one dict given for a batch of {batch}; pass one per sample")
            target_boxes = [target_boxes]
        ids_list = list(frame_ids) if frame_ids is not None else [None] * batch
        if len(ids_list) != batch:
            raise ValueError(f"frame_ids: expected {batch} entries, got {len(ids_list)}")
        answer_list = [True] * batch if with_answer is None else [bool(a) for a in with_answer]
        if len(answer_list) != batch:
            raise ValueError(f"with_answer: expected {batch} entries (one per sample), got {len(answer_list)}")
        return [
            video_list, [self._check_query(q, i) for i, q in enumerate(texts)],
            _per_sample(video_fps, batch, "video_fps", scalar_types=(int, float)),
            _per_sample(segments, batch, "segments", pair=True),
            _per_sample(target_spans, batch, "target_spans", pair=True),
            _per_sample(target_boxes, batch, "target_boxes"), ids_list, answer_list,
        ]

    # ----------------------------------------------------------------------------- per sample
    def _decode(self, video: Any, fps: float | None, segment: Any, ids: Any) -> DecodedVideo:
        if isinstance(video, DecodedVideo):
            if segment is not None and tuple(segment) != tuple(video.segment):
                raise FrameSamplingError(
                    f"{video.metadata.name}: segment {tuple(segment)} differs from the already-sampled {video.segment}"
                )
            return video
        return read_video(
            video, sample_fps=self.sample_fps, max_frames=self.max_frames, min_frames=self.min_frames,
            frame_ids=ids, segment=tuple(segment) if segment is not None else None, video_fps=fps,
        )

    def _encode_sample(
        self, index: int, query: str, video: DecodedVideo, span: Any, boxes: Any, training: bool, limit: int,
        with_answer: bool = True, pixels: dict[int, tuple] | None = None,
    ) -> dict[str, Any]:
        meta = video.metadata
        ids = list(video.frame_ids)
        rel = [float(t) for t in video.relative_timestamps]
        frames = video.frames
        if len(ids) % 2:  # the video processor repeats the last frame; keep ids aligned with it
            ids.append(ids[-1])
            rel.append(rel[-1])
        if pixels is not None and id(video) in pixels:  # the entry keeps the object alive, so its id stays its own
            pixel_values, grid = pixels[id(video)][1:]
        else:
            pixel_values, grid = self.video_processor.preprocess_one(frames)
            if pixels is not None:
                pixels[id(video)] = (video, pixel_values, grid)
        groups = grid.shape[0]
        if groups * 2 != len(ids):
            raise VideoDecodeError(f"{meta.name}: {len(ids)} frames gave {groups} temporal groups")
        tokens_per_group = int(grid[0, 1] * grid[0, 2]) // (self.video_processor.merge_size ** 2)
        group_ts = [rel[2 * g] for g in range(groups)]
        prompt = self.build_prompt(query, group_ts, tokens_per_group)
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids: list[int] = []
        label_len = 0
        seg_start, seg_end = int(video.segment[0]), int(video.segment[1])
        if span is not None:
            tube = self._check_span(span, seg_start, seg_end, meta.name, index)
        if training and self.grounding_mode == "coupled":
            if with_answer:
                answer_ids = self._coupled_answer_ids(ids, rel, tube, boxes, meta, index, seg_start)
                label_len = len(answer_ids)
        elif training:
            if self.span_source == "text" and with_answer:
                a, b = self.answer_seconds(tube, seg_start, meta.fps, ids, rel)
                answer_ids = self.tokenizer(self.format_answer(a, b), add_special_tokens=False)["input_ids"]
                answer_ids = answer_ids + [self.im_end_token_id]
                label_len = len(answer_ids)
            answer_ids = answer_ids + self.bridge_token_ids
        total = len(prompt_ids) + len(answer_ids)
        if total > limit:
            raise InvalidQueryError(
                f"sample {index} ({meta.name}): the prompt has {total} tokens, more than the limit of {limit} "
                f"({groups} temporal groups x {tokens_per_group} video tokens + query); shorten the query or "
                "lower max_frames / max_pixels"
            )
        input_ids = prompt_ids + answer_ids
        labels = [-100] * len(prompt_ids) + answer_ids[:label_len] + [-100] * (len(answer_ids) - label_len)
        out: dict[str, Any] = {
            "input_ids": input_ids, "labels": labels, "pixel_values": pixel_values, "grid": grid,
            "frame_ids": ids, "timestamps": rel,
        }
        if span is not None:
            out["frame_labels"] = [1 if tube[0] <= f < tube[1] else 0 for f in ids]
            out["target_boxes"], out["target_box_mask"] = self._targets(ids, tube, boxes, meta, index)
        out["metadata"] = {
            "name": meta.name, "path": meta.path, "fps": float(meta.fps), "num_frames": int(meta.num_frames),
            "width": int(meta.width), "height": int(meta.height), "duration": float(meta.duration),
            "segment": [seg_start, seg_end], "segment_start_time": float(video.segment_start_time),
            "frame_ids": [int(f) for f in ids], "timestamps": rel,
            "variable_frame_rate": bool(meta.variable_frame_rate),
        }
        return out

    def _coupled_answer_ids(self, ids, rel, tube, boxes, meta, index, seg_start) -> list[int]:
        """Token ids of the coupled baseline's training answer: the span line and one box line per sampled
        frame of the ground-truth tube (each frame id once), then ``<|im_end|>``."""
        from .coupled_bridge_stg import format_coupled_answer

        tboxes, tmask = self._targets(ids, tube, boxes, meta, index)
        seen: set[int] = set()
        line_t, line_b = [], []
        for f, t, bx, ok in zip(ids, rel, tboxes, tmask):
            if ok and f not in seen:
                seen.add(f)
                line_t.append(t)
                line_b.append(bx)
        text = format_coupled_answer(self, (tube[0] - seg_start) / meta.fps, (tube[1] - seg_start) / meta.fps,
                                     line_t, line_b)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.im_end_token_id]

    @staticmethod
    def _check_span(span: Any, seg_start: int, seg_end: int, name: str, index: int) -> tuple[int, int]:
        try:
            start, end = int(span[0]), int(span[1])
        except (TypeError, ValueError, IndexError) as err:
            raise AnnotationError(f"sample {index} ({name}): target span must be (tube_start, tube_end), got {span!r}") from err
        if end <= start:
            raise AnnotationError(f"sample {index} ({name}): empty span [{start}, {end})")
        start, end = max(start, seg_start), min(end, seg_end)
        if end <= start:
            raise AnnotationError(
                f"sample {index} ({name}): span {tuple(span)} lies outside the segment [{seg_start}, {seg_end})"
            )
        return start, end

    @staticmethod
    def _targets(
        ids: list[int], tube: tuple[int, int], boxes: Any, meta: Any, index: int
    ) -> tuple[list[list[float]], list[bool]]:
        """Normalised cxcywh ground-truth box per sampled frame (see `boxes_on_frames`); errors name the sample."""
        try:
            table = box_table(boxes)
        except ValueError as err:
            raise AnnotationError(f"sample {index} ({meta.name}): {err}") from None
        return boxes_on_frames(ids, tube, table, meta.width, meta.height)

    # ----------------------------------------------------------------------------- batching
    def _collate(
        self, samples: list[dict[str, Any]], padding_side: str, training: bool, with_targets: bool,
        return_tensors: str | None, task_ids: Sequence[int] | None,
    ) -> BatchFeature:
        batch, length = len(samples), max(len(s["input_ids"]) for s in samples)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self._special_ids[IM_END]
        input_ids = torch.full((batch, length), int(pad_id), dtype=torch.long)
        attention = torch.zeros((batch, length), dtype=torch.long)
        labels = torch.full((batch, length), -100, dtype=torch.long)
        for i, s in enumerate(samples):
            n = len(s["input_ids"])
            sl = slice(length - n, length) if padding_side == "left" else slice(0, n)
            input_ids[i, sl] = torch.tensor(s["input_ids"], dtype=torch.long)
            attention[i, sl] = 1
            labels[i, sl] = torch.tensor(s["labels"], dtype=torch.long)
        lengths = torch.tensor([len(s["frame_ids"]) for s in samples])
        data: dict[str, Any] = {
            "input_ids": input_ids, "attention_mask": attention,
            "mm_token_type_ids": ((input_ids == self.video_token_id) & (attention == 1)).long() * 2,
            "pixel_values_videos": torch.cat([s["pixel_values"] for s in samples]),
            "video_grid_thw": torch.cat([s["grid"] for s in samples]),
            "frame_timestamps": _pad_frames(samples, "timestamps", 0.0, torch.float32),
            "frame_mask": torch.arange(int(lengths.max()))[None] < lengths[:, None],
            "frame_ids": _pad_frames(samples, "frame_ids", -1, torch.long),
        }
        if training:
            data["labels"] = labels
        if with_targets:
            data.update(frame_labels=_pad_frames(samples, "frame_labels", -100, torch.long),
                        target_boxes=_pad_frames(samples, "target_boxes", 0.0, torch.float32),
                        target_box_mask=_pad_frames(samples, "target_box_mask", False, torch.bool))
        if task_ids is not None:
            if len(task_ids) != batch:
                raise ValueError(f"task_ids: expected {batch} entries, got {len(task_ids)}")
            data["task_ids"] = torch.tensor([int(t) for t in task_ids], dtype=torch.long)
        if return_tensors is None:
            data = {k: v.tolist() if k not in ("pixel_values_videos",) else v.numpy() for k, v in data.items()}
        elif return_tensors == "np":
            data = {k: v.numpy() for k, v in data.items()}
        elif return_tensors != "pt":
            raise ValueError(f"return_tensors: only 'pt', 'np' or None are supported, got {return_tensors!r}")
        out = BatchFeature(data=data)
        out.video_metadata = [s["metadata"] for s in samples]
        return out


# --------------------------------------------------------------------------------------------- helpers
def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _pad_frames(samples: list[dict[str, Any]], key: str, fill: Any, dtype: torch.dtype) -> torch.Tensor:
    """Per-frame lists of every sample stacked into ``(B, F, ...)``, padded with ``fill``."""
    frames = max(len(s["frame_ids"]) for s in samples)
    trailing = tuple(np.shape(samples[0][key])[1:])
    out = torch.full((len(samples), frames, *trailing), fill, dtype=dtype)
    for i, s in enumerate(samples):
        out[i, :len(s[key])] = torch.tensor(s[key], dtype=dtype)
    return out


def _per_sample(value: Any, batch: int, name: str, scalar_types: tuple = (), pair: bool = False) -> list[Any]:
    """Broadcast a per-sample argument: None, one value for a batch of one, or a list of ``batch`` values."""
    if value is None:
        return [None] * batch
    if scalar_types and isinstance(value, scalar_types):
        return [value] * batch
    if pair and isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, (int, np.integer)) for v in value):
        if batch != 1:
            raise ValueError(f"{name}: one pair given for a batch of {batch}; pass one per sample")
        return [value]
    values = list(value)
    if pair and batch == 1 and len(values) == 2 and all(isinstance(v, (int, np.integer)) for v in values):
        return [tuple(values)]
    if len(values) != batch:
        raise ValueError(f"{name}: expected {batch} entries (one per sample), got {len(values)}")
    return values


__all__ = ["BridgeSTGProcessor"]
