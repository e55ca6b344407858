"""Processor of Bridge-STG: video + query -> model tensors, and model outputs -> tubes.

Self-contained remote code: imports only torch, numpy, transformers, PyAV (through the reader) and sibling
files, relatively, so a checkpoint carries it (``register_for_auto_class("AutoProcessor")``).

Contract: ``docs/design.md`` §2 (tensors), §3 (prompt), §4 (post-processing); METHOD.md §3.2, §3.3, §3.11.
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

from .errors_bridge_stg import AnnotationError, FrameSamplingError, InvalidQueryError, VideoDecodeError
from .video_io_bridge_stg import DecodedVideo, read_video
from .video_processing_bridge_stg import BridgeSTGVideoProcessor


VIDEO_PAD = "<|video_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
QUESTION = 'When does the query happen? Answer "From A s to B s".'
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
#: coordinate grid of the coupled baseline's boxes (x1, y1, x2, y2 in 0..COUPLED_GRID)
COUPLED_GRID = 1000
_NUM = r"\s*([-+]?\d+(?:\.\d+)?)\s*"
_COUPLED_SPAN = re.compile(rf"from{_NUM}s?\s*to{_NUM}s?", re.IGNORECASE)
_COUPLED_LINE = re.compile(rf"^<{_NUM}s?\s*>\s*:?\s*\({_NUM},{_NUM},{_NUM},{_NUM}\)\s*$")


class BridgeSTGProcessor(ProcessorMixin):
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
        sample_fps (`float`, defaults to 2.0), max_frames (`int`, defaults to 64), min_frames (`int`,
            defaults to 4): frame sampling (METHOD §3.2).
        grounding_mode (`str`, defaults to `"decoupled"`): `"coupled"` builds the baseline's training answer
            (span line + one ``<t s>: (x1,y1,x2,y2)`` line per sampled frame in the GT tube, 0–1000 grid) and
            adds no bridge tokens; see `parse_coupled_answer`.
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
        sample_fps: float = 2.0,
        max_frames: int = 64,
        min_frames: int = 4,
        grounding_mode: str = "decoupled",
        **kwargs: Any,
    ) -> None:
        if video_processor is None:
            video_processor = BridgeSTGVideoProcessor()
        if tokenizer is None:
            raise ValueError("tokenizer: BridgeSTGProcessor needs a tokenizer with the Qwen-VL special tokens")
        super().__init__(video_processor, tokenizer, chat_template=chat_template)
        if isinstance(num_bridge_queries, bool) or not isinstance(num_bridge_queries, int) or num_bridge_queries < 1:
            raise ValueError(f"num_bridge_queries: must be a positive integer, got {num_bridge_queries!r}")
        if span_source not in ("text", "frame"):
            raise ValueError(f"span_source: must be 'text' or 'frame', got {span_source!r}")
        if isinstance(answer_decimals, bool) or not isinstance(answer_decimals, int) or answer_decimals < 0:
            raise ValueError(f"answer_decimals: must be a non-negative integer, got {answer_decimals!r}")
        if not (isinstance(sample_fps, (int, float)) and math.isfinite(sample_fps) and sample_fps > 0):
            raise ValueError(f"sample_fps: must be a positive number, got {sample_fps!r}")
        if int(max_frames) < 2 or int(max_frames) % 2 or int(min_frames) < 1 or int(min_frames) > int(max_frames):
            raise ValueError(f"max_frames/min_frames: need an even max_frames >= min_frames >= 1, got {max_frames}/{min_frames}")
        if grounding_mode not in ("decoupled", "coupled"):
            raise ValueError(f"grounding_mode: must be 'decoupled' or 'coupled', got {grounding_mode!r}")
        self.grounding_mode = grounding_mode
        self.num_bridge_queries = int(num_bridge_queries)
        self.span_source = span_source
        self.answer_decimals = int(answer_decimals)
        self.sample_fps = float(sample_fps)
        self.max_frames = int(max_frames)
        self.min_frames = int(min_frames)
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
        counts on the backbone's grid (x 32² for Qwen3-VL, METHOD §3.2). ``overrides`` replace any
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

    def format_timestamp(self, seconds: float) -> str:
        """``<3.0s>``: the text before a temporal group."""
        return f"<{float(seconds):.{self.answer_decimals}f}s>"

    @staticmethod
    def parse_answer(text: str, duration: float | None = None) -> tuple[float, float] | None:
        """Parse a span answer (METHOD §3.3): the first two numbers, swapped if reversed, clipped to
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

    def format_coupled_answer(
        self, start_s: float, end_s: float, timestamps: Sequence[float], boxes_cxcywh: Sequence[Sequence[float]]
    ) -> str:
        """The coupled baseline's answer: the span sentence, then one line ``<t s>: (x1,y1,x2,y2)`` per frame
        (``timestamps`` in seconds, boxes normalised cxcywh, written as integers on a 0–1000 grid)."""
        lines = [self.format_answer(start_s, end_s)]
        for t, (cx, cy, w, h) in zip(timestamps, boxes_cxcywh):
            xyxy = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            q = [min(max(_round_half_up(v * COUPLED_GRID), 0), COUPLED_GRID) for v in xyxy]
            lines.append(f"{self.format_timestamp(t)}: ({q[0]},{q[1]},{q[2]},{q[3]})")
        return "\n".join(lines)

    @staticmethod
    def parse_coupled_answer(
        text: str, frame_timestamps: Sequence[float], duration: float | None = None
    ) -> tuple[tuple[float, float] | None, dict[int, list[float]], int]:
        """Parse a coupled-baseline generation; see the module function `parse_coupled_answer`."""
        return parse_coupled_answer(text, frame_timestamps, duration)

    # ----------------------------------------------------------------------------- prompt
    def build_prompt(self, query: str, group_timestamps: Sequence[float], tokens_per_group: int) -> str:
        """The user turn + assistant header of design.md §3 (ends with ``assistant\\n``)."""
        blocks = "".join(
            f"{self.format_timestamp(t)}{VISION_START}{VIDEO_PAD * tokens_per_group}{VISION_END}" for t in group_timestamps
        )
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
        spans: Sequence[tuple[int, int]] | tuple[int, int] | None = None,
        boxes: Sequence[Any] | None = None,
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
            video_fps: frame rate of already-decoded inputs (one value or one per sample).
            segments: half-open ``(start, end)`` frame-id segment per sample to sample from (default whole video).
            spans: training / evaluation targets: the GT tube ``(tube_start, tube_end)`` per sample, half-open
                frame ids. Turns on ``frame_labels`` / ``target_boxes`` / ``target_box_mask`` (and, when
                ``training``, the answer text and ``labels``).
            boxes: per sample, the GT boxes ``[x1, y1, x2, y2]`` in original pixels, either a dict
                ``{frame_id: box}`` or ``{"frame_ids": [...], "boxes": [...]}``.
            frame_ids: explicit original frame ids per sample (overrides fps sampling).
            padding_side: ``"right"`` / ``"left"``; default right when training, left for inference.
            return_tensors: ``"pt"`` (default) or ``None``.
            training: append the training answer (text mode) or bridge tokens (frame mode) and return
                ``labels``; defaults to ``spans is not None``.
            max_length: the longest prompt accepted (default ``tokenizer.model_max_length``).
            task_ids: optional ``(B,)`` task ids (0 stvg, 1 tvg, 2 rec).
            with_answer: optional, one bool per sample (training, ``span_source="text"`` only): ``False``
                appends the bridge tokens right after the prompt with no answer text and no LM labels, as for
                image REC rows (METHOD §3.9). Default: every sample carries the answer.

        Returns:
            `BatchFeature` with the keys of design.md §2 (B samples, L tokens, F = max sampled frames):
            ``input_ids``/``attention_mask``/``mm_token_type_ids`` (B, L), ``pixel_values_videos``
            (ΣN, 3·2·p·p), ``video_grid_thw`` (ΣG, 3), ``frame_timestamps`` (B, F) float, ``frame_mask`` (B, F)
            bool, ``frame_ids`` (B, F) long (−1 padding); with spans: ``frame_labels`` (B, F),
            ``target_boxes`` (B, F, 4) normalised cxcywh, ``target_box_mask`` (B, F); when training:
            ``labels`` (B, L). Attribute ``video_metadata``: list of per-sample dicts (see class doc).
        """
        if kwargs:
            raise TypeError(f"BridgeSTGProcessor.__call__ got unexpected arguments {sorted(kwargs)}")
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
        fps_list = _per_sample(video_fps, batch, "video_fps", scalar_types=(int, float))
        seg_list = _per_sample(segments, batch, "segments", pair=True)
        span_list = _per_sample(spans, batch, "spans", pair=True)
        if isinstance(boxes, Mapping):
            if batch != 1:
                raise ValueError(f"boxes: one dict given for a batch of {batch}; pass one per sample")
            boxes = [boxes]
        box_list = _per_sample(boxes, batch, "boxes")
        ids_list = list(frame_ids) if frame_ids is not None else [None] * batch
        if len(ids_list) != batch:
            raise ValueError(f"frame_ids: expected {batch} entries, got {len(ids_list)}")
        if training is None:
            training = spans is not None
        if training and spans is None:
            raise ValueError("training=True needs `spans` (the GT tube of every sample)")
        if padding_side is None:
            padding_side = "right" if training else "left"
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side: must be 'left' or 'right', got {padding_side!r}")
        limit = int(max_length) if max_length is not None else int(getattr(self.tokenizer, "model_max_length", 1 << 30))

        answer_list = [True] * batch if with_answer is None else [bool(a) for a in with_answer]
        if len(answer_list) != batch:
            raise ValueError(f"with_answer: expected {batch} entries (one per sample), got {len(answer_list)}")
        queries = [self._check_query(q, i) for i, q in enumerate(texts)]
        samples = []
        for i in range(batch):
            decoded = self._decode(video_list[i], fps_list[i], seg_list[i], ids_list[i])
            samples.append(self._encode_sample(
                i, queries[i], decoded, span_list[i], box_list[i], training, limit, with_answer=answer_list[i]
            ))
        return self._collate(samples, padding_side, training, spans is not None, return_tensors, task_ids)

    # ----------------------------------------------------------------------------- per sample
    def _decode(self, video: Any, fps: float | None, segment: Any, ids: Any) -> DecodedVideo:
        if isinstance(video, DecodedVideo):
            if segment is not None and tuple(segment) != tuple(video.segment):
                raise FrameSamplingError(
                    f"{video.metadata.name}: segment {tuple(segment)} differs from the already-sampled {video.segment}"
                )
            return video
        return read_video(
            video, fps=self.sample_fps, max_frames=self.max_frames, min_frames=self.min_frames,
            frame_ids=ids, segment=tuple(segment) if segment is not None else None, video_fps=fps,
        )

    def _encode_sample(
        self, index: int, query: str, video: DecodedVideo, span: Any, boxes: Any, training: bool, limit: int,
        with_answer: bool = True,
    ) -> dict[str, Any]:
        meta = video.metadata
        ids = list(video.frame_ids)
        rel = [float(t) for t in video.relative_timestamps]
        frames = video.frames
        if len(ids) % 2:  # the video processor repeats the last frame; keep ids aligned with it
            ids.append(ids[-1])
            rel.append(rel[-1])
        pixel_values, grid = self.video_processor.preprocess_one(frames)
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
                a = (tube[0] - seg_start) / meta.fps
                b = (tube[1] - seg_start) / meta.fps
                tboxes, tmask = self._targets(ids, tube, boxes, meta, index)
                seen: set[int] = set()
                line_t, line_b = [], []
                for f, t, bx, ok in zip(ids, rel, tboxes, tmask):
                    if ok and f not in seen:
                        seen.add(f)
                        line_t.append(t)
                        line_b.append(bx)
                text = self.format_coupled_answer(a, b, line_t, line_b)
                answer_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.im_end_token_id]
                label_len = len(answer_ids)
        elif training:
            if self.span_source == "text" and with_answer:
                a = (tube[0] - seg_start) / meta.fps
                b = (tube[1] - seg_start) / meta.fps
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

    @staticmethod
    def _check_span(span: Any, seg_start: int, seg_end: int, name: str, index: int) -> tuple[int, int]:
        try:
            start, end = int(span[0]), int(span[1])
        except (TypeError, ValueError, IndexError) as err:
            raise AnnotationError(f"sample {index} ({name}): span must be (tube_start, tube_end), got {span!r}") from err
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
        """Normalised cxcywh GT box per sampled frame inside the tube: the annotated box, or a linear
        interpolation between the nearest annotated frames before and after; no box (mask False) outside
        the tube or outside the annotated range."""
        table = _box_table(boxes, meta.name, index)
        known = np.array(sorted(table), dtype=np.int64)
        out_boxes, mask = [], []
        for f in ids:
            box = None
            if tube[0] <= f < tube[1] and known.size:
                if f in table:
                    box = np.asarray(table[f], dtype=np.float64)
                else:
                    j = int(np.searchsorted(known, f))
                    if 0 < j < known.size:
                        f0, f1 = int(known[j - 1]), int(known[j])
                        w = (f - f0) / (f1 - f0)
                        box = (1 - w) * np.asarray(table[f0], dtype=np.float64) + w * np.asarray(table[f1], dtype=np.float64)
            if box is None:
                out_boxes.append([0.0, 0.0, 0.0, 0.0])
                mask.append(False)
                continue
            x1, y1, x2, y2 = (float(v) for v in box)
            x1, x2 = (min(max(x1, 0.0), meta.width) / meta.width, min(max(x2, 0.0), meta.width) / meta.width)
            y1, y2 = (min(max(y1, 0.0), meta.height) / meta.height, min(max(y2, 0.0), meta.height) / meta.height)
            out_boxes.append([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
            mask.append(True)
        return out_boxes, mask

    # ----------------------------------------------------------------------------- batching
    def _collate(
        self, samples: list[dict[str, Any]], padding_side: str, training: bool, with_targets: bool,
        return_tensors: str | None, task_ids: Sequence[int] | None,
    ) -> BatchFeature:
        batch = len(samples)
        length = max(len(s["input_ids"]) for s in samples)
        frames = max(len(s["frame_ids"]) for s in samples)
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self._special_ids[IM_END]
        input_ids = torch.full((batch, length), int(pad_id), dtype=torch.long)
        attention = torch.zeros((batch, length), dtype=torch.long)
        labels = torch.full((batch, length), -100, dtype=torch.long)
        for i, s in enumerate(samples):
            n = len(s["input_ids"])
            sl = slice(length - n, length) if padding_side == "left" else slice(0, n)
            input_ids[i, sl] = torch.tensor(s["input_ids"], dtype=torch.long)
            attention[i, sl] = 1
            labels[i, sl] = torch.tensor(s["labels"], dtype=torch.long)
        mm_types = torch.where(
            (input_ids == self.video_token_id) & (attention == 1), torch.tensor(2), torch.tensor(0)
        ).long()
        timestamps = torch.zeros((batch, frames), dtype=torch.float32)
        frame_mask = torch.zeros((batch, frames), dtype=torch.bool)
        ids = torch.full((batch, frames), -1, dtype=torch.long)
        for i, s in enumerate(samples):
            n = len(s["frame_ids"])
            timestamps[i, :n] = torch.tensor(s["timestamps"], dtype=torch.float32)
            frame_mask[i, :n] = True
            ids[i, :n] = torch.tensor(s["frame_ids"], dtype=torch.long)
        data: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "mm_token_type_ids": mm_types,
            "pixel_values_videos": torch.cat([s["pixel_values"] for s in samples]),
            "video_grid_thw": torch.cat([s["grid"] for s in samples]),
            "frame_timestamps": timestamps,
            "frame_mask": frame_mask,
            "frame_ids": ids,
        }
        if training:
            data["labels"] = labels
        if with_targets:
            frame_labels = torch.full((batch, frames), -100, dtype=torch.long)
            target_boxes = torch.zeros((batch, frames, 4), dtype=torch.float32)
            target_mask = torch.zeros((batch, frames), dtype=torch.bool)
            for i, s in enumerate(samples):
                n = len(s["frame_ids"])
                frame_labels[i, :n] = torch.tensor(s["frame_labels"], dtype=torch.long)
                target_boxes[i, :n] = torch.tensor(s["target_boxes"], dtype=torch.float32)
                target_mask[i, :n] = torch.tensor(s["target_box_mask"], dtype=torch.bool)
            data.update(frame_labels=frame_labels, target_boxes=target_boxes, target_box_mask=target_mask)
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

    # ----------------------------------------------------------------------------- post-processing
    def post_process_grounding(
        self,
        outputs: Any,
        metadata: Any,
        eval_frame_ids: Sequence[Sequence[int] | None] | Sequence[int] | None = None,
        threshold: float | None = None,
    ) -> list[dict[str, Any]]:
        """Map model outputs to tubes in the video's own frame ids and pixels (design.md §4, METHOD §3.11).

        Args:
            outputs: `BridgeSTGGroundingOutput` (or a mapping) with ``pred_span_seconds`` (B, 2) [A, B) seconds
                from the segment start (or ``pred_span_frames`` (B, 2) inclusive sampled-frame indices),
                ``pred_boxes`` (B, F, 4) normalised cxcywh, ``pred_scores`` (B, F), optional
                ``decoded_frame_mask`` (B, F) and ``span_source``.
            metadata: the `BatchFeature` returned by ``__call__`` (its ``video_metadata``) or that list.
            eval_frame_ids: frame ids to also get boxes on: one list per sample (or one list for a batch of
                one). Ids inside the predicted span get a box, linearly interpolated between decoded frames
                (nearest decoded box before the first / after the last).
            threshold: if given, decoded frames whose score is below it are left out of ``frames``/``boxes``.

        Returns:
            One dict per sample: ``{"span": {"start_frame", "end_frame" (exclusive), "start_time", "end_time"}``
            (times in seconds from the video start), ``"frames"``, ``"boxes"`` (``[x1, y1, x2, y2]`` original
            pixels, clamped to the image), ``"scores"``, ``"span_source"`` and, with ``eval_frame_ids``,
            ``"eval_frame_ids"``, ``"eval_boxes"``, ``"eval_scores"``.
        """
        metas = getattr(metadata, "video_metadata", metadata)
        if isinstance(metas, Mapping):
            metas = [metas]
        metas = list(metas)
        batch = len(metas)
        get = (lambda k: outputs.get(k)) if isinstance(outputs, Mapping) else (lambda k: getattr(outputs, k, None))
        seconds = _np(get("pred_span_seconds"))
        span_frames = _np(get("pred_span_frames"))
        pred_boxes = _np(get("pred_boxes"))
        pred_scores = _np(get("pred_scores"))
        decoded = _np(get("decoded_frame_mask"))
        sources = get("span_source")
        if pred_boxes is None or pred_boxes.shape[0] != batch:
            raise ValueError(f"outputs.pred_boxes: expected {batch} samples, got {None if pred_boxes is None else pred_boxes.shape}")
        if seconds is None and span_frames is None:
            raise ValueError("outputs: need pred_span_seconds or pred_span_frames")
        if eval_frame_ids is not None:
            eval_list = list(eval_frame_ids)
            if eval_list and not isinstance(eval_list[0], (list, tuple, np.ndarray, type(None))):
                eval_list = [eval_list]
            if len(eval_list) != batch:
                raise ValueError(f"eval_frame_ids: expected {batch} lists, got {len(eval_list)}")
        else:
            eval_list = [None] * batch
        results = []
        for i, meta in enumerate(metas):
            fps = float(meta["fps"])
            seg_start, seg_end = (int(x) for x in meta["segment"])
            ids = [int(f) for f in meta["frame_ids"]]
            n = len(ids)
            if seconds is not None:
                a, b = float(seconds[i, 0]), float(seconds[i, 1])
                start = seg_start + _round_half_up(a * fps)
                end = seg_start + _round_half_up(b * fps)
            else:
                s_idx = int(min(max(span_frames[i, 0], 0), n - 1))
                e_idx = int(min(max(span_frames[i, 1], s_idx), n - 1))
                start, end = ids[s_idx], ids[e_idx] + 1
            start = min(max(start, seg_start), seg_end - 1)
            end = min(max(end, start + 1), seg_end)
            width, height = float(meta["width"]), float(meta["height"])
            boxes_px = _cxcywh_to_xyxy(pred_boxes[i, :n].astype(np.float64), width, height)
            scores = pred_scores[i, :n].astype(np.float64) if pred_scores is not None else np.ones(n)
            ran = decoded[i, :n].astype(bool) if decoded is not None else np.ones(n, dtype=bool)
            # unique decoded frames (an id repeated to complete a temporal group counts once)
            seen: dict[int, int] = {}
            for k in range(n):
                if ran[k] and ids[k] not in seen:
                    seen[ids[k]] = k
            in_span = [(f, k) for f, k in sorted(seen.items()) if start <= f < end]
            kept = [(f, k) for f, k in in_span if threshold is None or scores[k] >= threshold]
            res: dict[str, Any] = {
                "span": {"start_frame": start, "end_frame": end, "start_time": start / fps, "end_time": end / fps},
                "frames": [f for f, _ in kept],
                "boxes": [[float(v) for v in boxes_px[k]] for _, k in kept],
                "scores": [float(scores[k]) for _, k in kept],
                "span_source": (sources[i] if isinstance(sources, (list, tuple)) and i < len(sources) else None),
            }
            if eval_list[i] is not None:
                anchors = in_span if in_span else sorted(seen.items())
                req = [int(f) for f in eval_list[i] if start <= int(f) < end]
                if anchors:
                    af = np.array([f for f, _ in anchors], dtype=np.float64)
                    ab = np.stack([boxes_px[k] for _, k in anchors])
                    asc = np.array([scores[k] for _, k in anchors], dtype=np.float64)
                    rf = np.array(req, dtype=np.float64)
                    eb = np.stack([np.interp(rf, af, ab[:, c]) for c in range(4)], axis=-1) if req else np.zeros((0, 4))
                    es = np.interp(rf, af, asc) if req else np.zeros(0)
                    eb = _clamp(eb, width, height)
                    res["eval_frame_ids"] = req
                    res["eval_boxes"] = [[float(v) for v in b] for b in eb]
                    res["eval_scores"] = [float(s) for s in es]
                else:
                    res["eval_frame_ids"], res["eval_boxes"], res["eval_scores"] = [], [], []
            results.append(res)
        return results


# --------------------------------------------------------------------------------------------- coupled baseline
def parse_coupled_answer(
    text: str, frame_timestamps: Sequence[float], duration: float | None = None
) -> tuple[tuple[float, float] | None, dict[int, list[float]], int]:
    """Parse the coupled baseline's generation back to a tube (robust to malformed output).

    The expected text is ``"From A s to B s."`` on the first line (``From <number> [s] to <number> [s]`` is
    required there, reversed numbers are swapped), then lines ``<t s>: (x1,y1,x2,y2)`` with
    integer or decimal coordinates on the 0–1000 grid. Each box line is assigned to the sampled frame whose
    timestamp is nearest to ``t`` (and within half a sampling step of it).

    Args:
        text: the decoded generation (special tokens removed).
        frame_timestamps: seconds from the segment start of the valid sampled frames, ascending.
        duration: clip duration in seconds (clips the span), optional.

    Returns:
        ``(span, boxes, n_malformed)``: ``span`` is ``(A, B)`` seconds or ``None`` when the first line has no
        two numbers; ``boxes`` maps sampled-frame index -> normalised ``[cx, cy, w, h]`` (first box per frame
        wins); ``n_malformed`` counts the non-empty lines after the span line that are not a valid box line
        (wrong syntax, truncated, coordinates off the grid, empty box, timestamp matching no frame, duplicate
        frame), plus 1 when the span line itself is unparsable.
    """
    if not isinstance(text, str):
        return None, {}, 1
    ts = np.asarray([float(t) for t in frame_timestamps], dtype=np.float64)
    lines = [ln.strip() for ln in text.strip().splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        return None, {}, 1
    malformed = 0
    span = None
    rest = lines
    if not _COUPLED_LINE.match(lines[0]):
        m = _COUPLED_SPAN.search(lines[0])
        span = BridgeSTGProcessor.parse_answer(f"{m.group(1)} {m.group(2)}", duration=duration) if m else None
        rest = lines[1:]
    if span is None:
        malformed += 1
    step = float(np.median(np.diff(ts))) if ts.size > 1 else math.inf
    boxes: dict[int, list[float]] = {}
    for ln in rest:
        m = _COUPLED_LINE.match(ln)
        if m is None or ts.size == 0:
            malformed += 1
            continue
        t, x1, y1, x2, y2 = (float(v) for v in m.groups())
        coords = (x1, y1, x2, y2)
        if not all(math.isfinite(v) and 0 <= v <= COUPLED_GRID for v in coords) or x2 <= x1 or y2 <= y1:
            malformed += 1
            continue
        k = int(np.abs(ts - t).argmin())
        if abs(ts[k] - t) > 0.5 * step + 1e-6 or k in boxes:
            malformed += 1
            continue
        x1, y1, x2, y2 = (v / COUPLED_GRID for v in coords)
        boxes[k] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    return span, boxes, malformed


# --------------------------------------------------------------------------------------------- helpers
def _np(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _clamp(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    out = boxes.copy()
    out[..., 0::2] = np.clip(out[..., 0::2], 0.0, width)
    out[..., 1::2] = np.clip(out[..., 1::2], 0.0, height)
    return out


def _cxcywh_to_xyxy(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Normalised (cx, cy, w, h) (..., 4) -> absolute (x1, y1, x2, y2) clamped to the image."""
    cx, cy, w, h = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    xyxy = np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], axis=-1)
    return _clamp(xyxy, width, height)


def _box_table(boxes: Any, name: str, index: int) -> dict[int, list[float]]:
    if boxes is None:
        return {}
    if isinstance(boxes, Mapping) and "frame_ids" in boxes and "boxes" in boxes:
        fids, bxs = list(boxes["frame_ids"]), list(boxes["boxes"])
        if len(fids) != len(bxs):
            raise AnnotationError(f"sample {index} ({name}): {len(fids)} frame_ids for {len(bxs)} boxes")
        pairs = zip(fids, bxs)
    elif isinstance(boxes, Mapping):
        pairs = boxes.items()
    else:
        raise AnnotationError(
            f"sample {index} ({name}): boxes must be a dict frame_id -> box or {{'frame_ids', 'boxes'}}, got {type(boxes).__name__}"
        )
    table = {}
    for f, b in pairs:
        arr = np.asarray(b, dtype=np.float64)
        if arr.shape != (4,) or not np.all(np.isfinite(arr)) or arr[2] < arr[0] or arr[3] < arr[1]:
            raise AnnotationError(f"sample {index} ({name}): frame {f}: invalid box {b!r} (need finite x1<=x2, y1<=y2)")
        table[int(f)] = arr.tolist()
    return table


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
