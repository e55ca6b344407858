"""The coupled text-box baseline (``BridgeSTGConfig(grounding_mode="coupled")``, docs/method.md §3.13).

The MLLM alone writes the span *and* one box per sampled frame as text, the "entangled" paradigm that
Bridge-STG argues against (LLaVA-ST, PTD style boxes on a 0–1000 grid). It shares the backbone, the
processor and the training loop with Bridge-STG so that the two can be compared at an equal budget; the
bridge and the spatial decoder exist in the model but are not used.

Answer format (training target and what :func:`parse_coupled_answer` reads back)::

    From 1.5s to 4.0s.
    <1.5s>: (120,340,260,610)
    <2.0s>: (131,338,270,605)
    ...

Self-contained remote code: imports only torch, numpy and sibling files.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import numpy as np
import torch

from .box_ops_bridge_stg import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, round_half_up
from .losses_bridge_stg import lm_loss, zero_like


#: coordinate grid of the baseline's boxes (x1, y1, x2, y2 in 0..COUPLED_GRID)
COUPLED_GRID = 1000
#: generation budget per sampled frame: a box line such as "<12.5s>: (1000,1000,1000,1000)" takes up to 28
#: tokens with the Qwen tokenizer and 31 with the compact one (digits are single tokens)
COUPLED_TOKENS_PER_FRAME = 36
#: ``span_source`` values of the baseline: span and boxes parsed / span from the box lines / span without
#: boxes / nothing parsable (an empty tube)
COUPLED_SPAN_SOURCES = ("coupled", "coupled_boxes", "coupled_no_boxes", "unparsable")

_NUM = r"\s*([-+]?\d+(?:\.\d+)?)\s*"
_SPAN = re.compile(rf"from{_NUM}s?\s*to{_NUM}s?", re.IGNORECASE)
_LINE = re.compile(rf"^<{_NUM}s?\s*>\s*:?\s*\({_NUM},{_NUM},{_NUM},{_NUM}\)\s*$")


def format_coupled_answer(
    processor: Any, start_s: float, end_s: float, timestamps: Sequence[float], boxes_cxcywh: Sequence[Sequence[float]]
) -> str:
    """The baseline's answer: the processor's span sentence (e.g. ``"From 3.0s to 7.5s."``) on the first line,
    then one line ``<t s>: (x1,y1,x2,y2)`` per frame (``timestamps`` in seconds written like the prompt's
    ``<3.0s>``, boxes normalised cxcywh written as integers on the 0–1000 grid)."""
    lines = [processor.format_answer(start_s, end_s)]
    for ts, box in zip((processor.format_timestamp(t) for t in timestamps), boxes_cxcywh):
        q = [min(max(round_half_up(float(v) * COUPLED_GRID), 0), COUPLED_GRID) for v in box_cxcywh_to_xyxy(box)]
        lines.append(f"{ts}: ({q[0]},{q[1]},{q[2]},{q[3]})")
    return "\n".join(lines)


def parse_coupled_answer(
    text: str, frame_timestamps: Sequence[float], duration: float | None = None
) -> tuple[tuple[float, float] | None, dict[int, list[float]], int]:
    """Parse the baseline's generation back to a tube (robust to malformed output).

    The first line must hold ``From <number> [s] to <number> [s]`` (reversed numbers are swapped); the
    following lines ``<t s>: (x1,y1,x2,y2)`` with coordinates on the 0–1000 grid. Each box line is assigned
    to the sampled frame whose timestamp is nearest to ``t`` (within half a sampling step).

    Args:
        text: the decoded generation (special tokens removed).
        frame_timestamps: seconds from the segment start of the valid sampled frames, ascending.
        duration: clip duration in seconds (clips the span), optional.

    Returns:
        ``(span, boxes, n_malformed)``: ``span`` is ``(A, B)`` seconds or ``None``; ``boxes`` maps sampled-frame
        index -> normalised ``[cx, cy, w, h]`` (first box per frame wins); ``n_malformed`` counts the non-empty
        lines after the span line that are not a valid box line (wrong syntax, truncated, off the grid, empty
        box, timestamp matching no frame, duplicate frame), plus 1 when the span line is unparsable.
    """
    from .processing_bridge_stg import BridgeSTGProcessor

    if not isinstance(text, str):
        return None, {}, 1
    ts = np.asarray([float(t) for t in frame_timestamps], dtype=np.float64)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return None, {}, 1
    span, rest = None, lines
    if not _LINE.match(lines[0]):
        m = _SPAN.search(lines[0])
        span = BridgeSTGProcessor.parse_answer(f"{m.group(1)} {m.group(2)}", duration=duration) if m else None
        rest = lines[1:]
    malformed = int(span is None)
    step = float(np.median(np.diff(ts))) if ts.size > 1 else math.inf
    boxes: dict[int, list[float]] = {}
    for ln in rest:
        m = _LINE.match(ln)
        if m is None or ts.size == 0:
            malformed += 1
            continue
        t, *coords = (float(v) for v in m.groups())
        x1, y1, x2, y2 = coords
        if not all(math.isfinite(v) and 0 <= v <= COUPLED_GRID for v in coords) or x2 <= x1 or y2 <= y1:
            malformed += 1
            continue
        k = int(np.abs(ts - t).argmin())
        if abs(ts[k] - t) > 0.5 * step + 1e-6 or k in boxes:
            malformed += 1
            continue
        boxes[k] = [float(v) for v in box_xyxy_to_cxcywh(np.asarray(coords) / COUPLED_GRID)]
    return span, boxes, malformed


def coupled_forward(model: Any, input_ids, attention_mask, mm_token_type_ids, pixel_values_videos, video_grid_thw,
                    labels) -> Any:
    """Training forward of the baseline: the MLLM alone on prompt + text answer; ``loss_lm`` only."""
    from .modeling_bridge_stg import BridgeSTGModelOutput

    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    out = model.mllm.model(
        input_ids=input_ids, attention_mask=attention_mask, mm_token_type_ids=mm_token_type_ids,
        pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw, use_cache=False,
    )
    model.mllm.model.rope_deltas = None
    hidden = out.last_hidden_state
    lm = lm_loss(hidden, labels, model.mllm.lm_head) if labels is not None else None
    zero = zero_like(hidden)
    return BridgeSTGModelOutput(
        loss=None if lm is None else model.config.loss_lm_weight * lm, loss_lm=lm if lm is not None else zero,
        loss_l1=zero, loss_giou=zero, loss_presence=zero, loss_relevance=zero, loss_contrastive=zero, loss_span=zero,
        loss_reference=zero, loss_query=zero,
    )


@torch.no_grad()
def coupled_ground(model: Any, input_ids, attention_mask, mm_token_type_ids, pixel_values_videos, video_grid_thw,
                   frame_timestamps, frame_mask, tokenizer, max_new_tokens=None, min_new_tokens=None) -> Any:
    """Inference of the baseline: generate span + one box per frame as text and parse it back to a tube.

    The budget is ``max_new_tokens`` or ``config.max_new_tokens + COUPLED_TOKENS_PER_FRAME * F``;
    ``min_new_tokens`` forces a length (latency benchmarks). An unparsable answer gives an empty tube.
    """
    from .modeling_bridge_stg import BridgeSTGGroundingOutput, frames_in_span

    cfg = model.config
    if tokenizer is None:
        raise ValueError("ground(): the coupled baseline needs `tokenizer=` to read the generated boxes")
    device = input_ids.device
    frame_mask = frame_mask.bool()
    B, Fmax = frame_mask.shape
    im_end = model.im_end_token_id
    budget = max_new_tokens or (cfg.max_new_tokens + COUPLED_TOKENS_PER_FRAME * Fmax)
    extra = {"min_new_tokens": int(min_new_tokens)} if min_new_tokens else {}
    gen = model.mllm.generate(
        input_ids=input_ids, attention_mask=attention_mask, mm_token_type_ids=mm_token_type_ids,
        pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw, max_new_tokens=budget,
        do_sample=False, eos_token_id=im_end, pad_token_id=cfg.mllm_config.get_text_config().pad_token_id,
        suppress_tokens=list(cfg.bridge_token_ids or []) or None, **extra,
    )
    model.mllm.model.rope_deltas = None
    new = gen[:, input_ids.shape[1]:]
    spans_s = torch.zeros(B, 2, device=device)
    spans_f = torch.zeros(B, 2, dtype=torch.long, device=device)
    boxes = torch.zeros(B, Fmax, 4, device=device)
    decode = torch.zeros(B, Fmax, dtype=torch.bool, device=device)
    texts, sources, malformed = [], [], []
    for i in range(B):
        toks = new[i].tolist() if min_new_tokens else model.answer_tokens(new[i].tolist())
        texts.append(tokenizer.decode(toks, skip_special_tokens=True))
        n = int(frame_mask[i].sum())
        t = frame_timestamps[i, :n].float()
        step = float(t[1] - t[0]) if n > 1 else 1.0 / cfg.sample_fps
        span, fboxes, bad = parse_coupled_answer(texts[i], t.tolist(), float(t[-1]) + step)
        malformed.append(bad)
        if span is None and fboxes:  # no span line: the span is the run of frames that got a box
            ks = sorted(fboxes)
            span = (float(t[ks[0]]), float(t[ks[-1]]) + step)
            sources.append("coupled_boxes")
        elif span is not None:
            sources.append("coupled" if fboxes else "coupled_no_boxes")
        else:
            sources.append("unparsable")
        if span is None:
            continue  # empty tube: no decoded frame, zero boxes
        spans_s[i] = torch.tensor(span)
        spans_f[i] = torch.tensor(frames_in_span(t, *span))
        for k, box in fboxes.items():
            boxes[i, k] = torch.tensor(box, device=device)
            decode[i, k] = True
    return BridgeSTGGroundingOutput(
        pred_span_seconds=spans_s, pred_span_frames=spans_f, pred_boxes=boxes, presence_scores=decode.float(),
        decoder_frame_mask=decode, relevance_scores=torch.zeros(B, Fmax, device=device), span_source=sources,
        generated_text=texts, num_malformed=malformed,
    )


__all__ = [
    "COUPLED_GRID", "COUPLED_TOKENS_PER_FRAME", "COUPLED_SPAN_SOURCES", "format_coupled_answer", "parse_coupled_answer",
    "coupled_forward", "coupled_ground",
]
