"""Rewards for reinforcement fine-tuning of Bridge-STG with TRL's ``GRPOTrainer`` (docs/training.md §6).

Every reward has TRL's ``reward_funcs`` signature: it is called with the prompts, the decoded ``completions``
(strings), their token ids and every column of the dataset rows as keyword lists (one entry per completion), and
returns one float per completion (``None`` where the reward does not apply: TRL leaves it out for that completion).

======================  ===============================================================================================
``format_reward``       1 for an answer in the template ``From A s to B s.`` with ``0 <= A < B <= duration``; 0.5 when
                        it is not in that form but :meth:`BridgeSTGProcessor.parse_answer` still reads a non-empty span
                        from it (extra text, reversed or out-of-range numbers); 0 when no span can be read
``temporal_iou_reward`` tIoU of the sampled span with the ground-truth span, seconds mapped to frame numbers exactly as
                        ``post_process_grounding`` does; 0 when no span can be read
:class:`TubeReward`     vIoU of the tube that the bridge and the spatial decoder build from the sampled span: the
                        completion, ``<|im_end|>`` and the K bridge tokens are fed after the prompt (the training
                        layout), ETA selects the sampled frames inside the sampled span, the boxes are post-processed
                        to pixels and scored against the ground-truth boxes by the metric itself
                        (``compute_stvg_metrics``); 0 when no span can be read, ``None`` for rows without boxes (``tvg``)
======================  ===============================================================================================

The rows are the canonical dataset rows (``docs/schema.md``): the rewards read ``fps``, ``segment_start``,
``segment_end``, ``tube_start``, ``tube_end`` and, for the tube, ``query_id``, ``frame_ids``, ``boxes``, ``task``. The
tube reward also needs the prompt and video tensors the completion was sampled from: the GRPO trainer
(:class:`bridge_stg.training.grpo.BridgeSTGGRPOTrainer`) passes them as the extra column ``grounding_video``
(:class:`GroundingVideo`, one per completion).
"""

from __future__ import annotations

import math
import re
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from bridge_stg.box_ops_bridge_stg import span_iou
from bridge_stg.errors_bridge_stg import BridgeSTGError
from bridge_stg.processing_bridge_stg import BridgeSTGProcessor

#: the answer template of ``BridgeSTGProcessor.format_answer`` ("From 3.0s to 7.5s."), whitespace-tolerant
ANSWER_TEMPLATE = re.compile(r"\s*From\s+(\d+(?:\.\d+)?)\s*s\s+to\s+(\d+(?:\.\d+)?)\s*s\s*\.?\s*")
#: the reward names a recipe can list (``bridge-stg train --method grpo --rewards ...``), in their default order
REWARD_NAMES = ("format", "temporal_iou", "tube_viou")


# ------------------------------------------------------------------------------------------------ spans
def _duration(fps: float, segment_start: int, segment_end: int) -> float:
    return (int(segment_end) - int(segment_start)) / float(fps)


def answer_span_frames(text: str, fps: float, segment_start: int, segment_end: int) -> tuple[int, int] | None:
    """The span a text answer states, as half-open frame ids of the video: parsed by
    :meth:`BridgeSTGProcessor.parse_answer` (clipped to the segment's duration) and mapped from seconds to frames by
    the processor's own post-processing (``seconds x fps``, halves rounded up, inside the segment). ``None`` when the
    text holds no span."""
    parsed = BridgeSTGProcessor.parse_answer(text, duration=_duration(fps, segment_start, segment_end))
    if parsed is None:
        return None
    meta = {"fps": float(fps), "segment": [int(segment_start), int(segment_end)], "frame_ids": []}
    fields = {"pred_span_seconds": np.asarray([parsed], dtype=np.float64)}
    return BridgeSTGProcessor._span_frames(fields, 0, meta)  # the same mapping as post_process_grounding


def _check_lengths(name: str, n: int, **columns: Sequence[Any]) -> None:
    for key, values in columns.items():
        if values is None or len(values) != n:
            got = None if values is None else len(values)
            raise BridgeSTGError(f"{name}: column {key!r} has {got} entries for {n} completions (the dataset rows must "
                                 "carry it)")


# ------------------------------------------------------------------------------------------------ plain rewards
def format_reward(completions: Sequence[str], fps: Sequence[float], segment_start: Sequence[int],
                  segment_end: Sequence[int], **kwargs: Any) -> list[float]:
    """1.0 for an answer in the processor's template ``From A s to B s.`` with ``0 <= A < B <= duration`` of the
    segment; 0.5 for text from which :meth:`BridgeSTGProcessor.parse_answer` still reads a non-empty span (other words
    around it, reversed or out-of-range numbers); 0.0 otherwise."""
    _check_lengths("format_reward", len(completions), fps=fps, segment_start=segment_start, segment_end=segment_end)
    out = []
    for text, f, s, e in zip(completions, fps, segment_start, segment_end):
        duration = _duration(f, s, e)
        match = ANSWER_TEMPLATE.fullmatch(text) if isinstance(text, str) else None
        if match is not None:
            a, b = float(match.group(1)), float(match.group(2))
            if 0.0 <= a < b <= duration:
                out.append(1.0)
                continue
        parsed = BridgeSTGProcessor.parse_answer(text, duration=duration)
        out.append(0.5 if parsed is not None and parsed[1] > parsed[0] else 0.0)
    return out


def temporal_iou_reward(completions: Sequence[str], fps: Sequence[float], segment_start: Sequence[int],
                        segment_end: Sequence[int], tube_start: Sequence[int], tube_end: Sequence[int],
                        **kwargs: Any) -> list[float]:
    """Temporal IoU of the span the answer states (:func:`answer_span_frames`) with the ground-truth span
    ``[tube_start, tube_end)``, both half-open frame ids: the metric's tIoU (``span_iou``). 0.0 when the answer holds
    no span."""
    n = len(completions)
    _check_lengths("temporal_iou_reward", n, fps=fps, segment_start=segment_start, segment_end=segment_end,
                   tube_start=tube_start, tube_end=tube_end)
    out = []
    for text, f, s, e, ts, te in zip(completions, fps, segment_start, segment_end, tube_start, tube_end):
        span = answer_span_frames(text, f, s, e)
        out.append(0.0 if span is None else float(span_iou(int(ts), int(te), span[0], span[1])))
    return out


# ------------------------------------------------------------------------------------------------ what the tube reward sees
@dataclass(eq=False)
class GroundingPrompts:
    """The grounding prompts and video tensors of the distinct rows of one generation batch: one inference-collator
    call (``BridgeSTGDataCollator(training=False)``: left-padded prompts ending at ``assistant\\n``) and one pass of
    the vision encoder, shared by every completion sampled from them.

    Args:
        batch: the collator's tensors (``input_ids``, ``attention_mask``, ``mm_token_type_ids`` (U, L),
            ``pixel_values_videos``, ``video_grid_thw``, ``frame_timestamps``, ``frame_mask`` (U, F)), on the model's device.
        metadata: the collator's ``video_metadata`` (one dict per row: fps, size, segment, sampled frame ids).
        video_features: ``model.encode_video`` of the batch (one entry per grid row), computed without gradient.
    """

    batch: Mapping[str, torch.Tensor]
    metadata: list[dict[str, Any]]
    video_features: Any

    def __post_init__(self) -> None:
        groups = ((self.batch["frame_mask"].sum(1) + 1) // 2).tolist()
        patches = self.batch["video_grid_thw"].prod(-1).tolist()
        self._rows, self._pixels, row, pix = [], [], 0, 0
        for g in groups:
            self._rows.append(list(range(row, row + int(g))))
            n = int(sum(patches[row: row + int(g)]))
            self._pixels.append(slice(pix, pix + n))
            row, pix = row + int(g), pix + n

    def __len__(self) -> int:
        return len(self.metadata)

    def grid_rows(self, index: int) -> list[int]:
        """Row ``index``'s rows of ``video_grid_thw`` (one per temporal group)."""
        return self._rows[index]

    def pixel_rows(self, index: int) -> slice:
        """Row ``index``'s rows of ``pixel_values_videos``."""
        return self._pixels[index]


@dataclass(eq=False)
class GroundingVideo:
    """The prompt and video a completion was sampled from: row ``index`` of ``prompts``."""

    prompts: GroundingPrompts
    index: int

    def __repr__(self) -> str:  # TRL prints reward kwargs in a warning: keep it short
        return f"GroundingVideo(row {self.index} of {len(self.prompts)})"


def video_inputs(samples: Sequence[GroundingVideo], with_pixels: bool = False) -> dict[str, Any]:
    """The MLLM's video inputs for a batch of completions: ``video_grid_thw`` of their rows and either the vision
    encoder's output for them (``mm_encoder_outputs``: no second encoder pass) or, ``with_pixels`` (a trainable
    vision encoder), ``pixel_values_videos``. Every sample must come from the same :class:`GroundingPrompts`."""
    from bridge_stg.modeling_bridge_stg import select_video_rows

    prompts = samples[0].prompts
    if any(s.prompts is not prompts for s in samples):
        raise RuntimeError("video_inputs: the completions come from different generation batches")
    rows = [r for s in samples for r in prompts.grid_rows(s.index)]
    out: dict[str, Any] = {"video_grid_thw": prompts.batch["video_grid_thw"][rows]}
    if with_pixels:
        pix = prompts.batch["pixel_values_videos"]
        out["pixel_values_videos"] = torch.cat([pix[prompts.pixel_rows(s.index)] for s in samples])
    else:
        out["mm_encoder_outputs"] = {"video": select_video_rows(prompts.video_features, rows)}
    return out


# ------------------------------------------------------------------------------------------------ tube reward
def _autocast(model: torch.nn.Module) -> Any:
    """Mixed dtypes (float32 trainable weights next to 16-bit frozen ones) run under autocast to the 16-bit dtype, as
    the training forward does under ``--bf16``; a model of one dtype runs as it is."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    half = [d for d in (torch.bfloat16, torch.float16) if d in dtypes]
    if len(dtypes) > 1 and half:
        device = next(model.parameters()).device
        return torch.autocast(device.type, dtype=half[0])
    return nullcontext()


class TubeReward:
    """The tube reward: vIoU of the tube the bridge and the spatial decoder build from the *sampled* span.

    Per completion, as ``model.ground()`` does after its own generation: the prompt, the completion (cut after its
    first ``<|im_end|>``, which is appended when the completion was truncated) and the K bridge tokens go through the
    MLLM (one forward on the training layout, the video features reused); STSB gives the bridging queries; the span is
    the one the completion states (``_predict_spans`` in text mode); ETA selects the sampled frames inside it (all
    frames when ``config.eta`` is off); QGSL decodes the boxes; ``post_process_grounding`` maps them to pixels on the
    metric protocol's frames; ``compute_stvg_metrics`` scores the tube against the row's ground-truth boxes. A
    completion with no readable span gets 0 (``model.ground`` would fall back to the relevance run; the sampled policy
    stated no span). Rows without boxes (``tvg``) get ``None``.

    Args:
        model: the ``BridgeSTGForVideoGrounding`` whose MLLM is the policy (the same module object: the reward sees the
            current weights, LoRA adapters included).
        processor: its ``BridgeSTGProcessor``.
        protocol: the metric protocol (default: ``tubedetr`` when every row's fps allows it, else ``sampled``; see
            :func:`bridge_stg.training.predict.choose_protocol`).
        batch_size: completions per forward pass.
    """

    __name__ = "tube_viou"  # the name TRL logs the reward under (rewards/tube_viou/mean)

    def __init__(self, model: Any, processor: Any, protocol: str | None = None, batch_size: int = 8) -> None:
        from .trainer import unwrap_bridge_model

        if int(batch_size) < 1:
            raise ValueError(f"TubeReward: batch_size must be >= 1, got {batch_size!r}")
        self.model = unwrap_bridge_model(model)
        self.processor = processor
        self.protocol = protocol
        self.batch_size = int(batch_size)

    def __call__(self, completions: Sequence[str], completion_ids: Sequence[Sequence[int]],
                 grounding_video: Sequence[GroundingVideo] | None = None, **rows: Any) -> list[float | None]:
        n = len(completions)
        if grounding_video is None:
            raise BridgeSTGError("tube_viou: no 'grounding_video' column: the tube reward needs the prompt and video tensors "
                                 "of each completion (train with BridgeSTGGRPOTrainer)")
        needed = ("query_id", "fps", "segment_start", "segment_end", "tube_start", "tube_end", "frame_ids", "boxes")
        _check_lengths("tube_viou", n, grounding_video=grounding_video, completion_ids=completion_ids,
                       **{k: rows.get(k) for k in needed})
        tasks = rows.get("task") or ["stvg"] * n
        out: list[float | None] = [None] * n
        todo = [j for j in range(n) if tasks[j] == "stvg" and len(rows["boxes"][j])]
        model = self.model
        modes = [(m, m.training) for m in model.modules()]  # restored one by one: the policy trains, the rest may not
        model.eval()
        try:
            for s in range(0, len(todo), self.batch_size):
                chunk = todo[s: s + self.batch_size]
                by_prompts: dict[int, list[int]] = {}
                for j in chunk:  # one forward per generation batch (always one in training)
                    by_prompts.setdefault(id(grounding_video[j].prompts), []).append(j)
                for group in by_prompts.values():
                    scores = self._score([grounding_video[j] for j in group], [completion_ids[j] for j in group],
                                         [{k: rows[k][j] for k in needed} | {"query_id": f"{rows['query_id'][j]}#{j}"}
                                          for j in group])
                    for j, v in zip(group, scores):
                        out[j] = v
        finally:
            for module, mode in modes:
                module.training = mode
        return out

    @torch.no_grad()
    def _score(self, samples: Sequence[GroundingVideo], completion_ids: Sequence[Sequence[int]],
               refs: Sequence[Mapping[str, Any]]) -> list[float]:
        from bridge_stg.evaluation import compute_stvg_metrics

        from .predict import choose_protocol, eval_frame_ids_for, results_to_prediction_rows

        model, prompts = self.model, samples[0].prompts
        idx = [s.index for s in samples]
        b = prompts.batch
        answers, texts = [], []
        for ids in completion_ids:
            cut = model.answer_tokens(ids)
            answers.append(cut + [model.im_end_token_id])
            texts.append(self.processor.tokenizer.decode(cut, skip_special_tokens=True))
        seq, mask, types = model._append_bridge_tokens(b["input_ids"][idx], b["attention_mask"][idx],
                                                       b["mm_token_type_ids"][idx], answers)
        video = video_inputs(samples, with_pixels=False)
        frame_ts, frame_mask = b["frame_timestamps"][idx], b["frame_mask"][idx].bool()
        pixels = torch.cat([b["pixel_values_videos"][prompts.pixel_rows(i)] for i in idx])
        with _autocast(model):
            enc = model._encode(seq, mask, types, video["video_grid_thw"], frame_ts, frame_mask,
                                pixel_values_videos=pixels, video_features=video["mm_encoder_outputs"]["video"])
            relevance = enc.relevance_logits.sigmoid().masked_fill(~frame_mask, 0.0)
            spans_s, spans_f, sources = model._predict_spans(enc, relevance, texts, frame_ts, frame_mask, "text")
            frames = torch.arange(frame_mask.shape[1], device=frame_mask.device)
            decode = ((frames[None] >= spans_f[:, :1]) & (frames[None] < spans_f[:, 1:]) & frame_mask) if model.config.eta \
                else frame_mask.clone()
            layer_boxes, layer_logits, _ = model._run_decoder(enc, decode)
        outputs = {"pred_span_seconds": spans_s.float(), "pred_boxes": (layer_boxes[-1] * decode.unsqueeze(-1)).float(),
                   "presence_scores": (layer_logits[-1].sigmoid() * decode).float(), "decoder_frame_mask": decode,
                   "span_source": sources}
        metas = [prompts.metadata[i] for i in idx]
        protocol = self.protocol or choose_protocol(refs)
        results = self.processor.post_process_grounding(outputs, metas, eval_frame_ids=eval_frame_ids_for(refs, protocol))
        preds = results_to_prediction_rows(results, metas, query_ids=[r["query_id"] for r in refs])
        per_query = compute_stvg_metrics(refs, preds, protocol=protocol, return_per_query=True)["per_query"]
        viou = dict(zip(per_query["query_id"], per_query["vIoU"]))
        return [float(viou[r["query_id"]]) if src == "text" else 0.0 for r, src in zip(refs, sources)]


# ------------------------------------------------------------------------------------------------ by name
def build_reward_funcs(names: Sequence[str], model: Any = None, processor: Any = None, protocol: str | None = None,
                       tube_batch_size: int = 8) -> list[Callable[..., list[float | None]]]:
    """The reward functions named in ``names`` (:data:`REWARD_NAMES`), in that order; ``tube_viou`` needs the model
    and processor. Raises ``ValueError`` naming an unknown or repeated name."""
    names = list(names)
    unknown = [n for n in names if n not in REWARD_NAMES]
    if unknown or not names:
        raise ValueError(f"rewards: unknown {unknown or 'none given'}; choose from {list(REWARD_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"rewards: each reward at most once, got {names}")
    funcs: list[Callable[..., list[float | None]]] = []
    for name in names:
        if name == "format":
            funcs.append(format_reward)
        elif name == "temporal_iou":
            funcs.append(temporal_iou_reward)
        else:
            if model is None or processor is None:
                raise ValueError("rewards: tube_viou needs the model and its processor")
            funcs.append(TubeReward(model, processor, protocol=protocol, batch_size=tube_batch_size))
    return funcs


def reward_is_finite(values: Sequence[float | None]) -> bool:
    """Every reward a float in [0, 1] or None (what the three rewards promise; used by the tests and the benchmark)."""
    return all(v is None or (math.isfinite(v) and 0.0 <= v <= 1.0) for v in values)


__all__ = [
    "ANSWER_TEMPLATE", "REWARD_NAMES", "answer_span_frames", "format_reward", "temporal_iou_reward", "GroundingPrompts",
    "GroundingVideo", "video_inputs", "TubeReward", "build_reward_funcs", "reward_is_finite",
]
