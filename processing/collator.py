"""Data collator: canonical dataset rows -> model inputs + training targets (design.md §2, docs/method.md §3.7, §3.9).

:class:`BridgeSTGDataCollator` is what ``transformers.Trainer`` (``data_collator=``) or a plain
``torch.utils.data.DataLoader`` (``collate_fn=``) calls on a list of canonical rows
(``processing.schema``; ``docs/data.md``). Per row it

1. checks the row (:func:`~bridge_stg.processing.schema.validate_row`; errors name the ``query_id``);
2. finds the video: the embedded ``video_bytes`` when present, else ``video`` resolved under
   ``video_root`` with :func:`~bridge_stg.processing.paths.resolve_video_path` (absolute paths and
   escapes raise :class:`UnsafePathError`);
3. decodes the frames it needs with the PyAV reader (:func:`bridge_stg.read_video`): the sampling of
   docs/method.md §3.2 over ``[segment_start, segment_end)``. ``rec`` rows are one image, opened with PIL and
   given to the reader as a one-frame clip, which repeats it into the two frames of one temporal group;
4. builds the prompt and tensors with :class:`~bridge_stg.BridgeSTGProcessor`.

Tasks (``task`` column, ``task_ids`` 0 / 1 / 2):

=====  =====================================  ==================================================
task   sequence (training)                    targets
=====  =====================================  ==================================================
stvg   prompt + answer + ``<|im_end|>`` + K   LM labels on the answer (text mode), frame_labels,
       bridge tokens                          boxes on the sampled tube frames (interpolated
                                              between annotated frames)
tvg    same                                   LM labels, frame_labels; ``target_box_mask`` all False
rec    prompt + K bridge tokens (no answer)   no LM labels; frame_labels 1 on both copies of the
                                              image; the box on both
=====  =====================================  ==================================================

Nothing here keeps an open file or a decoder between calls (each call opens what it reads), so the
collator pickles and works inside ``DataLoader`` worker processes.
"""

from __future__ import annotations

import io
import math
import os
import re
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature

from bridge_stg.configuration_bridge_stg import TASK_IDS
from bridge_stg.errors_bridge_stg import AnnotationError, BridgeSTGError, VideoDecodeError
from bridge_stg.modeling_bridge_stg import sample_decoder_frames
from bridge_stg.video_io_bridge_stg import DecodedVideo, read_video

from .paths import resolve_video_path
from .schema import COLUMNS, validate_row

_SAMPLE_INDEX = re.compile(r"\bsample (\d+)\b")


class BridgeSTGBatch(BatchFeature):
    """A `BatchFeature` whose ``video_metadata`` attribute (one dict per row) survives pickling, so it comes
    back from ``DataLoader`` worker processes. Like any attribute, it is not a key: ``model(**batch)`` and
    ``Trainer`` never see it (and code that rebuilds the mapping, e.g. ``Trainer._prepare_inputs`` or
    ``pin_memory``, drops it: keep the list when you need it)."""

    video_metadata: list[dict[str, Any]]

    def __getstate__(self) -> dict[str, Any]:
        return {"data": self.data, "video_metadata": self.__dict__.get("video_metadata")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.data = state["data"]
        if state.get("video_metadata") is not None:
            self.video_metadata = state["video_metadata"]


class BridgeSTGDataCollator:
    r"""Collate canonical dataset rows into a batch for [`BridgeSTGForVideoGrounding`].

    Args:
        processor ([`BridgeSTGProcessor`]): builds the prompt and tensors; its ``sample_fps`` /
            ``max_frames`` / ``min_frames`` are the sampling defaults.
        video_root (`str`, *optional*): folder the ``video`` column is relative to. Needed for every row
            without embedded ``video_bytes``.
        training (`bool`, defaults to `True`): `True`: training sequences (answer + bridge tokens, right
            padding) with ``labels``, ``frame_labels``, ``target_boxes``, ``target_box_mask``.
            `False`: inference prompts for ``model.ground`` (left padding, no answer, no targets).
        seed (`int`, defaults to 0): seed of the decoder-frame draw (only with ``num_positive_frames`` /
            ``num_negative_frames``); the draw for a row depends on ``(seed, epoch, query_id)`` only, so it is
            the same in any worker process and after resuming.
        sample_fps (`float`, *optional*), max_frames (`int`, *optional*), min_frames (`int`, *optional*):
            override the processor's sampling.
        num_positive_frames (`int`, *optional*), num_negative_frames (`int`, *optional*): when given
            (training only), the collator draws ``decoder_frame_mask`` itself with the model's
            ``sample_decoder_frames`` (docs/method.md §3.7) from its own seeded draw; none for ``tvg``.
            When both are `None` the key is left out and the model draws the frames from its own config.
        check_size (`bool`, defaults to `True`): raise [`AnnotationError`] when the decoded video's size
            differs from the row's ``width`` / ``height`` (the boxes would be normalised by the wrong size).
        max_length (`int`, *optional*): passed to the processor (longest accepted prompt).

    Returns (``__call__``):
        [`BridgeSTGBatch`] (a `BatchFeature`) with the keys of design.md §2 (B rows, L tokens, F = max sampled frames):
        ``input_ids``, ``attention_mask``, ``mm_token_type_ids`` (B, L); ``pixel_values_videos``
        (ΣN_patches, C·tp·p·p); ``video_grid_thw`` (ΣG, 3); ``frame_timestamps`` (B, F) float; ``frame_mask``
        (B, F) bool; ``frame_ids`` (B, F) long (−1 padding); ``task_ids`` (B,) long; when training also
        ``labels`` (B, L), ``frame_labels`` (B, F), ``target_boxes`` (B, F, 4) normalised cxcywh,
        ``target_box_mask`` (B, F) bool and, with the frame counts set, ``decoder_frame_mask`` (B, F) bool.
        The attribute ``video_metadata`` (not a key: the Trainer never passes it to the model) holds one
        dict per row with the processor's metadata (``fps, num_frames, width, height, segment,
        frame_ids, timestamps, ...``) plus ``query_id, video_id, task, query_type``; pass the batch (or
        that list) to ``processor.post_process_grounding``.
    """

    def __init__(
        self,
        processor: Any,
        video_root: str | os.PathLike[str] | None = None,
        training: bool = True,
        seed: int = 0,
        sample_fps: float | None = None,
        max_frames: int | None = None,
        min_frames: int | None = None,
        num_positive_frames: int | None = None,
        num_negative_frames: int | None = None,
        check_size: bool = True,
        max_length: int | None = None,
    ) -> None:
        if processor is None or not callable(processor):
            raise ValueError("processor: a BridgeSTGProcessor is required")
        self.processor = processor
        self.video_root = None if video_root is None else str(video_root)
        self.training = bool(training)
        self.seed = int(seed)
        self.sample_fps = float(sample_fps) if sample_fps is not None else float(processor.sample_fps)
        if not (math.isfinite(self.sample_fps) and self.sample_fps > 0):
            raise ValueError(f"sample_fps: must be a positive number, got {sample_fps!r}")
        self.max_frames = int(max_frames) if max_frames is not None else int(processor.max_frames)
        self.min_frames = int(min_frames) if min_frames is not None else int(processor.min_frames)
        if self.max_frames < 2 or self.max_frames % 2 or not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(
                f"max_frames/min_frames: need an even max_frames >= min_frames >= 1, got {self.max_frames}/{self.min_frames}"
            )
        for name, value in (("num_positive_frames", num_positive_frames), ("num_negative_frames", num_negative_frames)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name}: must be a non-negative integer or None, got {value!r}")
        if (num_positive_frames is None) != (num_negative_frames is None):
            raise ValueError("num_positive_frames and num_negative_frames: give both or neither")
        self.num_positive_frames = num_positive_frames
        self.num_negative_frames = num_negative_frames
        self.check_size = bool(check_size)
        self.max_length = max_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the decoder-frame draw per epoch (only used with ``num_positive_frames``)."""
        self.epoch = int(epoch)

    # ----------------------------------------------------------------------------- rows
    @staticmethod
    def _query_id(row: Any, index: int) -> str:
        if not isinstance(row, Mapping):
            raise TypeError(f"row {index}: expected a mapping (a canonical dataset row), got {type(row).__name__}")
        qid = row.get("query_id")
        return str(qid) if qid is not None else f"<row {index} without query_id>"

    def check_row(self, row: Mapping[str, Any], index: int = 0) -> None:
        """Validate the canonical fields of ``row`` (extra columns are ignored); raise naming the query_id."""
        qid = self._query_id(row, index)
        validate_row({k: v for k, v in row.items() if k in COLUMNS}, source="collator", record=f"query_id {qid!r}")

    def video_source(self, row: Mapping[str, Any]) -> bytes | Path:
        """The embedded ``video_bytes`` of ``row`` or its ``video`` path resolved (safely) under ``video_root``."""
        qid = str(row.get("query_id"))
        data = row.get("video_bytes")
        if data is not None:
            if not isinstance(data, (bytes, bytearray)) or len(data) == 0:
                raise VideoDecodeError(f"query_id {qid!r}: video_bytes is empty or not bytes")
            return bytes(data)
        if self.video_root is None:
            raise VideoDecodeError(
                f"query_id {qid!r}: the row has no embedded video_bytes and the collator has no video_root "
                f"to resolve video {row.get('video')!r}"
            )
        return resolve_video_path(self.video_root, row["video"], f"query_id {qid!r}")

    def load_video(self, row: Mapping[str, Any]) -> DecodedVideo:
        """Decode the sampled frames of one (checked) row over ``[segment_start, segment_end)``.

        Returns a `DecodedVideo` with ``frames`` (T, H, W, 3) uint8 (T even; a ``rec`` image is repeated
        to T = 2). Errors are re-raised with the row's ``query_id``.
        """
        qid = str(row["query_id"])
        source = self.video_source(row)
        segment = (int(row["segment_start"]), int(row["segment_end"]))
        try:
            if row["task"] == "rec":
                image = _open_image(source, qid)
                video = read_video(
                    image[None], sample_fps=self.sample_fps, max_frames=self.max_frames, min_frames=self.min_frames,
                    segment=segment, video_fps=float(row["fps"]),
                )
            else:
                video = read_video(
                    source if isinstance(source, bytes) else str(source), sample_fps=self.sample_fps, max_frames=self.max_frames,
                    min_frames=self.min_frames, segment=segment,
                )
        except BridgeSTGError as exc:
            raise _renamed(exc, f"query_id {qid!r} ({row['video']}): {exc}") from exc
        meta = video.metadata
        if self.check_size and (int(meta.width), int(meta.height)) != (int(row["width"]), int(row["height"])):
            raise AnnotationError(
                f"query_id {qid!r} ({row['video']}): the decoded video is {meta.width}x{meta.height} but the row says "
                f"{row['width']}x{row['height']}; its boxes would be normalised by the wrong size (check_size=False "
                "to accept)"
            )
        return video

    # ----------------------------------------------------------------------------- main entry
    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> BridgeSTGBatch:
        """Collate ``rows`` (a list of canonical dataset rows) into one batch; see the class docstring."""
        if isinstance(rows, Mapping) or not isinstance(rows, Sequence):
            raise TypeError(f"rows: expected a list of row dicts, got {type(rows).__name__}")
        if len(rows) == 0:
            raise ValueError("rows: empty batch")
        qids = [self._query_id(r, i) for i, r in enumerate(rows)]
        for i, row in enumerate(rows):
            self.check_row(row, i)
        videos = [self.load_video(row) for row in rows]
        tasks = [str(row["task"]) for row in rows]
        task_ids = [TASK_IDS[t] for t in tasks]
        kwargs: dict[str, Any] = dict(
            videos=videos, text=[row["query"] for row in rows],
            segments=[(int(r["segment_start"]), int(r["segment_end"])) for r in rows],
            task_ids=task_ids, training=self.training, max_length=self.max_length, return_tensors="pt",
        )
        if self.training:
            kwargs["target_spans"] = [(int(r["tube_start"]), int(r["tube_end"])) for r in rows]
            kwargs["target_boxes"] = [
                None if t == "tvg" else {"frame_ids": list(r["frame_ids"]), "boxes": [list(b) for b in r["boxes"]]}
                for t, r in zip(tasks, rows)
            ]
            kwargs["with_answer"] = [t != "rec" for t in tasks]
        try:
            batch = self.processor(**kwargs)
        except BridgeSTGError as exc:
            match = _SAMPLE_INDEX.search(str(exc))
            who = f"query_id {qids[int(match.group(1))]!r}" if match and int(match.group(1)) < len(qids) else f"query_ids {qids}"
            raise _renamed(exc, f"{who}: {exc}") from exc
        if self.training and self.num_positive_frames is not None:
            batch["decoder_frame_mask"] = self._decoder_frames(batch["frame_labels"], batch["frame_mask"], qids, tasks)
        metadata = batch.video_metadata
        for meta, row in zip(metadata, rows):
            meta.update(query_id=str(row["query_id"]), video_id=str(row["video_id"]), task=str(row["task"]),
                        query_type=row.get("query_type"))
        out = BridgeSTGBatch(data=dict(batch.items()))
        out.video_metadata = metadata
        return out

    def _decoder_frames(
        self, frame_labels: torch.Tensor, frame_mask: torch.Tensor, qids: list[str], tasks: list[str]
    ) -> torch.Tensor:
        """``(B, F)`` bool from the model's ``sample_decoder_frames``; the random draw of row ``i`` comes from
        ``default_rng([seed, epoch, crc32(query_id)])``, so it is the same in any worker and after resuming."""
        scores = torch.from_numpy(np.stack([
            np.random.default_rng([self.seed, self.epoch, zlib.crc32(qid.encode("utf-8"))]).random(frame_mask.shape[1])
            for qid in qids
        ])).float()
        task_ids = torch.tensor([TASK_IDS[t] for t in tasks])
        return sample_decoder_frames(frame_labels, frame_mask.bool(), task_ids, self.num_positive_frames,
                                     self.num_negative_frames, scores=scores)


# --------------------------------------------------------------------------------------------- helpers
def _renamed(exc: BridgeSTGError, message: str) -> BridgeSTGError:
    """The same error class with a message that names the row."""
    try:
        return type(exc)(message)
    except TypeError:  # an error class with a different constructor: keep the base class
        return BridgeSTGError(message)


def _open_image(source: bytes | Path, qid: str) -> np.ndarray:
    """One image (REC row) as ``(H, W, 3)`` uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise VideoDecodeError(f"query_id {qid!r}: image {str(source)!r} not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        where = "<video_bytes>" if isinstance(source, bytes) else str(source)
        raise VideoDecodeError(f"query_id {qid!r}: cannot read the image {where!r} ({exc})") from None


__all__ = ["BridgeSTGDataCollator", "BridgeSTGBatch"]
