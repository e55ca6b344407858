"""The ``video-grounding`` pipeline: a video and one or several sentences -> when (span) and where (tube).

Self-contained remote code: imports only torch, numpy, transformers and sibling files (relatively), so a
checkpoint folder saved with ``bridge_stg.model_cards.hub.save_for_hub`` carries it and
``pipeline("video-grounding", model=folder, trust_remote_code=True)`` runs without the package.

```python
>>> from transformers import pipeline
>>> import bridge_stg  # registers "video-grounding" (not needed for a folder loaded with trust_remote_code=True)
>>> grounder = pipeline("video-grounding", model="path/to/checkpoint", trust_remote_code=True)
>>> grounder("clip.mp4", text="the man in red")          # one query  -> one dict
>>> grounder("clip.mp4", text=["the man", "the dog"])    # several    -> one dict per query, one decode
```

Output per query (the video's own frame numbers, seconds from the video start and pixels)::

    {"query": str,
     "span": [start_frame, end_frame],          # half-open frame numbers of the video
     "span_seconds": [start, end],              # seconds from the video start
     "span_source": "text" | "frame" | "relevance_fallback",
     "tube": [{"frame": int, "time": float, "score": float,
               "box": {"xmin": float, "ymin": float, "xmax": float, "ymax": float}}, ...]}
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import numpy as np
import torch
from transformers import Pipeline

from .errors_bridge_stg import InvalidQueryError
from .modeling_bridge_stg import select_video_rows
from .processing_bridge_stg import BridgeSTGProcessor
from .video_io_bridge_stg import DecodedVideo, read_video


class VideoGroundingPipeline(Pipeline):
    r"""
    Spatio-temporal video grounding with [`BridgeSTGForVideoGrounding`]: for each sentence, the frame span in
    which it happens and one box per sampled frame inside the span (the *tube*).

    The video is decoded **once** per call and its frames go through the vision encoder once (both are shared
    by every query on it); the queries are then grounded ``batch_size`` at a time.

    Call arguments:
        inputs: the video (a path, ``bytes``, a binary file object, a ``(T, H, W, 3)`` uint8 array or a list of
            PIL images / arrays), or a dict ``{"video": ..., "text": ..., "video_fps": ...}``, or a list of such
            dicts (one result per dict).
        text (`str` or `list[str]`): the query, or several queries on the same video.
        sample_fps (`float`, *optional*): sampling rate in frames per second (default: the processor's).
        max_frames (`int`, *optional*): at most this many sampled frames (default: the processor's).
        video_fps (`float`, *optional*): native frame rate of an already-decoded array / list of frames (required
            for those).
        threshold (`float`, *optional*): drop tube frames whose presence score is below it.
        batch_size (`int`, *optional*, defaults to 1): queries grounded together in one model call.

    Construction arguments (``pipeline("video-grounding", ...)``): ``model``, ``processor`` (loaded from the
    checkpoint folder when omitted), ``device``, ``dtype`` and any of the call options above as defaults.

    Returns:
        One dict per query (see the module docstring); a single ``str`` query gives a single dict, a list gives a
        list. A list of input dicts gives a list of those.
    """

    _load_processor = None  # resolved in __init__ so that a missing processor gets a clear message
    _load_tokenizer = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False

    def __init__(self, model: Any, processor: Any = None, **kwargs: Any) -> None:
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        if isinstance(dtype, str) and dtype != "auto":
            if not isinstance(getattr(torch, dtype, None), torch.dtype):
                raise ValueError(f"dtype: unknown torch dtype {dtype!r}")
            dtype = getattr(torch, dtype)
        if isinstance(dtype, torch.dtype) and model.dtype != dtype:
            model = model.to(dtype)
        if processor is None:
            processor = self._processor_from_model(model)
        if not callable(getattr(processor, "post_process_grounding", None)):
            raise TypeError(
                f"processor: the video-grounding pipeline needs a BridgeSTGProcessor, got {type(processor).__name__}"
            )
        super().__init__(model=model, processor=processor, **kwargs)
        self.model.eval()

    @staticmethod
    def _processor_from_model(model: Any) -> Any:
        """The processor saved next to the model's weights, or a clear error."""
        source = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None)
        if isinstance(source, str) and os.path.isfile(os.path.join(source, "processor_config.json")):
            return BridgeSTGProcessor.from_pretrained(source)
        raise ValueError(
            f"video-grounding: no processor given and none saved with the model ({source or 'model object'}). "
            "Pass processor=BridgeSTGProcessor(...), or load a folder written by "
            "bridge_stg.model_cards.hub.save_for_hub (Pipeline.save_pretrained does not save the processor)."
        )

    # ------------------------------------------------------------------------------------------- parameters
    def _sanitize_parameters(
        self,
        text: str | Sequence[str] | None = None,
        sample_fps: float | None = None,
        max_frames: int | None = None,
        video_fps: float | None = None,
        threshold: float | None = None,
        **kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        if kwargs:
            raise TypeError(f"video-grounding: unexpected arguments {sorted(kwargs)}")
        pre: dict[str, Any] = {}
        if text is not None:
            pre["text"] = text
        if sample_fps is not None:
            if not (isinstance(sample_fps, (int, float)) and np.isfinite(sample_fps) and sample_fps > 0):
                raise ValueError(f"sample_fps: must be a positive number, got {sample_fps!r}")
            pre["sample_fps"] = float(sample_fps)
        if max_frames is not None:
            if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 2:
                raise ValueError(f"max_frames: must be an integer >= 2, got {max_frames!r}")
            pre["max_frames"] = max_frames
        if video_fps is not None:
            pre["video_fps"] = float(video_fps)
        post: dict[str, Any] = {}
        if threshold is not None:
            if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
                raise ValueError(f"threshold: must be a score in [0, 1], got {threshold!r}")
            post["threshold"] = float(threshold)
        return pre, {}, post

    # ------------------------------------------------------------------------------------------- call
    def __call__(self, inputs: Any = None, text: str | Sequence[str] | None = None, **kwargs: Any) -> Any:
        """Ground ``text`` in ``inputs`` (see the class docstring). ``batch_size`` = queries per model call."""
        if "video" in kwargs:
            if inputs is not None:
                raise TypeError("video-grounding: give the video either positionally or as video=, not both")
            inputs = kwargs.pop("video")
        batch_size = kwargs.pop("batch_size", None) or self._batch_size or 1
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: must be a positive integer, got {batch_size!r}")
        kwargs.pop("num_workers", None)
        pre, fwd, post = self._sanitize_parameters(text=text, **kwargs)
        pre = {**self._preprocess_params, **pre}
        post = {**self._postprocess_params, **post}
        fwd = {**self._forward_params, **fwd}
        pre["batch_size"] = batch_size
        if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(x, dict) for x in inputs):
            return [self.run_single(self._normalise(x, pre), pre, fwd, post) for x in inputs]
        return self.run_single(self._normalise(inputs, pre), pre, fwd, post)

    @staticmethod
    def _normalise(inputs: Any, pre: dict[str, Any]) -> dict[str, Any]:
        if isinstance(inputs, dict):
            unknown = set(inputs) - {"video", "text", "video_fps"}
            if unknown or "video" not in inputs:
                raise ValueError(
                    f"video-grounding: an input dict needs 'video' (+ 'text', 'video_fps'); got keys {sorted(inputs)}"
                )
            item = dict(inputs)
        else:
            item = {"video": inputs}
        if inputs is None or item.get("video") is None:
            raise ValueError("video-grounding: no video given")
        item.setdefault("text", pre.get("text"))
        item.setdefault("video_fps", pre.get("video_fps"))
        if item["text"] is None:
            raise InvalidQueryError("video-grounding: no query given (pass text='...' or a list of queries)")
        return item

    # ------------------------------------------------------------------------------------------- stages
    def preprocess(
        self,
        inputs: dict[str, Any],
        text: Any = None,
        sample_fps: float | None = None,
        max_frames: int | None = None,
        video_fps: float | None = None,
        batch_size: int = 1,
    ) -> dict[str, Any]:
        """Decode the video once, then build the model tensors for the queries, ``batch_size`` per chunk."""
        queries = inputs["text"]
        single = isinstance(queries, str)
        queries = [queries] if single else list(queries)
        if not queries:
            raise InvalidQueryError("video-grounding: the list of queries is empty")
        for i, q in enumerate(queries):
            if not isinstance(q, str) or not q.strip():
                raise InvalidQueryError(f"video-grounding: query {i} is empty or not a string ({q!r})")
        proc = self.processor
        video = inputs["video"]
        reader, decoded_type = _reader_of(proc)
        if isinstance(video, decoded_type):
            decoded = video
        else:
            src = video if not isinstance(video, tuple) else list(video)
            decoded = reader(
                src, sample_fps=sample_fps or proc.sample_fps, max_frames=max_frames or proc.max_frames,
                min_frames=min(proc.min_frames, max_frames or proc.max_frames), video_fps=inputs.get("video_fps"),
            )
        chunks = []
        for start in range(0, len(queries), batch_size):
            part = queries[start: start + batch_size]
            enc = proc(videos=[decoded] * len(part), text=part)
            chunks.append({"tensors": dict(enc.items()), "video_metadata": enc.video_metadata})
        return {"queries": queries, "single": single, "chunks": chunks}

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        outputs = []
        dtype = self.model.dtype
        one_video = None  # the vision encoder's output for the video, computed once for every query on it
        for chunk in model_inputs["chunks"]:
            tensors = dict(chunk["tensors"])
            tensors.pop("frame_ids", None)
            if tensors["pixel_values_videos"].is_floating_point():
                tensors["pixel_values_videos"] = tensors["pixel_values_videos"].to(dtype)
            n_rows = int(tensors["video_grid_thw"].shape[0]) // tensors["input_ids"].shape[0]  # grid rows per query
            if one_video is None:
                patches = int(tensors["video_grid_thw"][:n_rows].prod(-1).sum())
                one_video = self.model.encode_video(tensors["pixel_values_videos"][:patches], tensors["video_grid_thw"][:n_rows])
            features = select_video_rows(one_video, list(range(n_rows)) * tensors["input_ids"].shape[0])
            out = self.model.ground(**tensors, tokenizer=self.processor.tokenizer, video_features=features)
            fields = {k: v for k, v in out.items() if k in (
                "pred_span_seconds", "pred_span_frames", "pred_boxes", "presence_scores", "decoder_frame_mask", "span_source",
            )}
            for k, v in list(fields.items()):
                if isinstance(v, torch.Tensor) and v.is_floating_point():
                    fields[k] = v.float()
            outputs.append({"outputs": fields, "video_metadata": chunk["video_metadata"]})
        return {"queries": model_inputs["queries"], "single": model_inputs["single"], "chunks": outputs}

    def postprocess(self, model_outputs: dict[str, Any], threshold: float | None = None) -> Any:
        """Map each query's span and boxes to frame numbers, seconds and pixels of the video."""
        results: list[dict[str, Any]] = []
        queries = iter(model_outputs["queries"])
        for chunk in model_outputs["chunks"]:
            metas = chunk["video_metadata"]
            for res, meta in zip(self.processor.post_process_grounding(chunk["outputs"], metas, threshold=threshold), metas):
                results.append(_format_result(next(queries), res, meta))
        return results[0] if model_outputs["single"] else results


def _reader_of(processor: Any) -> tuple[Any, type]:
    """``read_video`` and ``DecodedVideo`` of the module that defines the processor's class.

    With the package installed, ``pipeline(folder, trust_remote_code=True)`` runs this file from the checkpoint
    while ``AutoProcessor`` returns the package's processor class; the processor only accepts frames decoded by
    *its own* reader module (an ``isinstance`` check), so the video is decoded with that one.
    """
    module = sys.modules.get(type(processor).__module__)
    reader, decoded_type = getattr(module, "read_video", None), getattr(module, "DecodedVideo", None)
    if callable(reader) and isinstance(decoded_type, type):
        return reader, decoded_type
    return read_video, DecodedVideo


def _format_result(query: str, res: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """``post_process_grounding`` output -> the pipeline's documented dict (zero-shot detection style boxes)."""
    seg_t0 = float(meta.get("segment_start_time", 0.0))
    time_of = {int(f): seg_t0 + float(t) for f, t in zip(meta["frame_ids"], meta["timestamps"])}
    fps = float(meta["fps"])
    tube = []
    for frame, box, score in zip(res["frames"], res["boxes"], res["scores"]):
        x1, y1, x2, y2 = (float(v) for v in box)
        tube.append({
            "frame": int(frame),
            "time": time_of.get(int(frame), int(frame) / fps),
            "score": float(score),
            "box": {"xmin": x1, "ymin": y1, "xmax": x2, "ymax": y2},
        })
    return {
        "query": query,
        "span": [int(v) for v in res["span"]],
        "span_seconds": [float(v) for v in res["span_seconds"]],
        "span_source": res.get("span_source"),
        "tube": tube,
    }


__all__ = ["VideoGroundingPipeline"]
