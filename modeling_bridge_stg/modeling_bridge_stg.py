"""Bridge-STG: a Qwen-VL temporal MLLM, bridging queries (STSB + ETA) and a query-guided spatial decoder (QGSL).

Self-contained remote code: imports only torch, transformers and sibling files (relative imports).

Read in build order (docs/method.md §3): output dataclasses -> STSB, the spatio-temporal semantic bridge, with
ETA, the explicit temporal alignment (docs/method.md §3.4–§3.5) -> QGSL, the query-guided spatial decoder (docs/method.md §3.6) ->
``BridgeSTGPreTrainedModel`` -> ``BridgeSTGForVideoGrounding`` (encoder pass, decoder pass, training forward,
``ground``). Losses are in ``losses_bridge_stg.py``, box and span arithmetic in ``box_ops_bridge_stg.py``, the
coupled text-box baseline in ``coupled_bridge_stg.py``.

Shape notation: B batch, L tokens, F sampled frames (padded), G temporal groups, S frames selected for
the decoder (padded), K bridge queries, M memory tokens per frame (padded), D LLM width, d decoder width,
Ld decoder layers.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForImageTextToText, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput, logging

from . import losses_bridge_stg as losses
from .configuration_bridge_stg import COMPONENT_LOSSES, TASK_IDS, BridgeSTGConfig
from .coupled_bridge_stg import COUPLED_SPAN_SOURCES, coupled_forward, coupled_ground


logger = logging.get_logger(__name__)

#: where a predicted span comes from (``BridgeSTGGroundingOutput.span_source``): the MLLM's text answer, the
#: per-frame start/end head, the relevance fallback when the text does not parse, or the coupled baseline
SPAN_SOURCES = ("text", "frame", "relevance_fallback", *COUPLED_SPAN_SOURCES)


# ----------------------------------------------------------------------------- outputs
@dataclass
class BridgeSTGModelOutput(ModelOutput):
    """
    Output of [`BridgeSTGForVideoGrounding.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): weighted sum of the component losses.
        loss_lm, loss_l1, loss_giou, loss_presence, loss_relevance, loss_contrastive, loss_span, loss_reference,
            loss_query (`()`):
            the unweighted component losses (0 where a term has nothing to apply to).
        pred_boxes (`(B, F, 4)`): last decoder layer boxes, normalised `(cx, cy, w, h)` relative to the full
            frame, on the sampled frames the decoder ran on (zeros elsewhere). Use
            `BridgeSTGProcessor.post_process_grounding` for pixel boxes in original frame numbers.
        presence_logits (`(B, F)`): "target present" logits of the last decoder layer.
        decoder_frame_mask (`(B, F)` bool): frames the decoder ran on.
        layer_boxes (`(Ld, B, F, 4)`), layer_presence_logits (`(Ld, B, F)`): every decoder layer (deep supervision).
        span_start_logits, span_end_logits (`(B, F)`): per-frame temporal logits (-inf on padding).
        relevance_logits (`(B, F)`): frame relevance `alpha * cos(g, e_f) + beta`.
        bridge_queries (`(B, K, d)`): the bridging queries Q_b.
    """

    loss: torch.FloatTensor | None = None
    loss_lm: torch.FloatTensor | None = None
    loss_l1: torch.FloatTensor | None = None
    loss_giou: torch.FloatTensor | None = None
    loss_presence: torch.FloatTensor | None = None
    loss_relevance: torch.FloatTensor | None = None
    loss_contrastive: torch.FloatTensor | None = None
    loss_span: torch.FloatTensor | None = None
    loss_reference: torch.FloatTensor | None = None
    loss_query: torch.FloatTensor | None = None
    pred_boxes: torch.FloatTensor | None = None
    presence_logits: torch.FloatTensor | None = None
    decoder_frame_mask: torch.BoolTensor | None = None
    layer_boxes: torch.FloatTensor | None = None
    layer_presence_logits: torch.FloatTensor | None = None
    span_start_logits: torch.FloatTensor | None = None
    span_end_logits: torch.FloatTensor | None = None
    relevance_logits: torch.FloatTensor | None = None
    bridge_queries: torch.FloatTensor | None = None


@dataclass
class BridgeSTGGroundingOutput(ModelOutput):
    """
    Output of [`BridgeSTGForVideoGrounding.ground`] (inference, no targets).

    Args:
        pred_span_seconds (`(B, 2)`): predicted span `[A, B)` in seconds from the segment start.
        pred_span_frames (`(B, 2)` long): the span as half-open sampled-frame indices `[first, last + 1)`.
        pred_boxes (`(B, F, 4)`): normalised `(cx, cy, w, h)` on the decoded frames (zeros elsewhere).
        presence_scores (`(B, F)`): `sigmoid(presence logit)` on the decoded frames (0 elsewhere).
        decoder_frame_mask (`(B, F)` bool): frames the decoder ran on (ETA: the sampled frames in the span).
        relevance_scores (`(B, F)`): sigmoid of the frame relevance logits.
        span_source (`list[str]`): one of `SPAN_SOURCES` per sample.
        generated_text (`list[str]`): the MLLM's answer per sample (text mode; empty otherwise).
        num_malformed (`list[int]`, *optional*): coupled baseline only: malformed lines per sample in the
            generated text (see `parse_coupled_answer`).
    """

    pred_span_seconds: torch.FloatTensor | None = None
    pred_span_frames: torch.LongTensor | None = None
    pred_boxes: torch.FloatTensor | None = None
    presence_scores: torch.FloatTensor | None = None
    decoder_frame_mask: torch.BoolTensor | None = None
    relevance_scores: torch.FloatTensor | None = None
    span_source: list[str] | None = None
    generated_text: list[str] | None = None
    num_malformed: list[int] | None = None


@dataclass
class BridgeSTGEncoderOutput:
    """What one MLLM pass gives the bridge, the decoder and the temporal heads (internal; not a model output).

    Args:
        last_hidden_state (`(B, L, D)`, *optional*): last-layer LLM states (for the LM loss; training only).
        bridge_queries (`(B, K, d)`): Q_b.
        frame_states (`(B, F, d)`): `W_s · s_g(f)`, the fused state of each frame's group `<|vision_end|>`.
        time_embeddings (`(B, F, d)`): `TimeEmb(t_f)`.
        frame_group (`(F,)` long): temporal group of each frame slot.
        memory, memory_pos (`(B, G, M, d)`), memory_valid (`(B, G, M)` bool): decoder memory per group.
        cell_centres (`(B, G, M, 2)`), cell_sizes (`(B, G, 2)`): normalised grid cell of each memory token.
        span_start_logits, span_end_logits, relevance_logits, relevance_cosine (`(B, F)`): temporal heads.
        video_features: the vision encoder's output (reused by a second pass on the same video).
        frame_evidence (`(B, G, 2, M, d)`, *optional*): with `config.frame_evidence`, each frame's own visual evidence
            per memory token (added to its group's memory).
    """

    last_hidden_state: torch.Tensor | None
    bridge_queries: torch.Tensor
    frame_states: torch.Tensor
    time_embeddings: torch.Tensor
    frame_group: torch.Tensor
    memory: torch.Tensor
    memory_pos: torch.Tensor
    memory_valid: torch.Tensor
    cell_centres: torch.Tensor
    cell_sizes: torch.Tensor
    span_start_logits: torch.Tensor
    span_end_logits: torch.Tensor
    relevance_logits: torch.Tensor
    relevance_cosine: torch.Tensor
    video_features: Any
    frame_evidence: torch.Tensor | None = None


# ----------------------------------------------------------------------------- position embeddings
def sine_embedding(values: torch.Tensor, dim: int, scale: float = 1.0, temperature: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of real values: `(...,)` -> `(..., dim)` (dim even)."""
    half = dim // 2
    freqs = temperature ** (-torch.arange(half, device=values.device, dtype=torch.float32) / half)
    angles = values.float().unsqueeze(-1) * scale * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def grid_sine_embedding(height: int, width: int, dim: int, device: torch.device) -> torch.Tensor:
    """2D sine position embedding over a merged-token grid in raster order: `(height*width, dim)`."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    emb_y = sine_embedding(yy.flatten(), dim // 2, scale=2 * math.pi * 8)
    emb_x = sine_embedding(xx.flatten(), dim // 2, scale=2 * math.pi * 8)
    return torch.cat([emb_y, emb_x], dim=-1)


# ----------------------------------------------------------------------------- STSB + ETA
class BridgeSTGLayerFusion(nn.Module):
    """Softmax-weighted fusion of the last L LLM layers (weights start uniform); with `hidden`, each layer is
    LayerNorm-ed first (the LLM's last layer is after its final norm, the others are raw residual streams)."""

    def __init__(self, num_layers: int, hidden: int | None = None):
        super().__init__()
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(num_layers)) if hidden else None

    def forward(self, layer_states: list[torch.Tensor]) -> torch.Tensor:
        if self.norms is not None:
            layer_states = [norm(s) for norm, s in zip(self.norms, layer_states)]
        weights = self.layer_logits.softmax(0)
        fused = weights[0] * layer_states[0]
        for w, s in zip(weights[1:], layer_states[1:]):
            fused = fused + w * s
        return fused


class BridgeSTGAttention(nn.Module):
    """Multi-head attention on SDPA. `key_valid` (N, Tk) is True where a key is valid."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(hidden, hidden)
        self.k_proj = nn.Linear(hidden, hidden)
        self.v_proj = nn.Linear(hidden, hidden)
        self.o_proj = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor | None = None,
                projected: bool = False) -> torch.Tensor:
        """`projected=True`: `k` and `v` are already the key / value projections (computed once and shared)."""
        N, Tq, d = q.shape  # q (N, Tq, d), k / v (N, Tk, d)
        h = self.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(N, -1, h, d // h).transpose(1, 2)  # (N, h, T, d/h)

        mask = key_valid[:, None, None, :] if key_valid is not None else None  # (N, 1, 1, Tk)
        keys, values = (k, v) if projected else (self.k_proj(k), self.v_proj(v))
        out = F.scaled_dot_product_attention(
            split(self.q_proj(q)), split(keys), split(values), attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.o_proj(out.transpose(1, 2).reshape(N, Tq, d))


class BridgeSTGTemporalHead(nn.Module):
    """Per-frame span logits (start, end) and frame relevance from the frame-aligned states (docs/method.md §3.8).

    One transformer encoder layer across frames gives each frame its temporal context before the
    start/end logits are read; relevance is `alpha * cos(g, e_f) + beta`.
    """

    def __init__(self, config: BridgeSTGConfig):
        super().__init__()
        d = config.decoder_hidden_size
        self.query_to_frame = nn.Linear(d, d)
        self.context = BridgeSTGAttention(d, config.decoder_heads, 0.0)
        self.norm1 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.norm2 = nn.LayerNorm(d)
        self.span = nn.Linear(d, 2)
        self.rel_query = nn.Linear(d, d)
        self.rel_frame = nn.Linear(d, d)
        self.rel_alpha = nn.Parameter(torch.tensor(10.0))
        self.rel_beta = nn.Parameter(torch.tensor(float(config.relevance_bias_init)))

    def forward(self, frame_states, times, queries, frame_mask, frame_memory_mean):
        # frame_states, times, frame_memory_mean: (B, F, d); queries: (B, K, d); frame_mask: (B, F)
        q_mean = queries.mean(1)  # (B, d)
        x = frame_states + times + self.query_to_frame(q_mean).unsqueeze(1)
        valid = frame_mask | ~frame_mask.any(-1, keepdim=True)
        x = self.norm1(x + self.context(x, x, x, valid))
        x = self.norm2(x + self.ffn(x))
        logits = self.span(x)  # (B, F, 2)
        neg = torch.finfo(logits.dtype).min
        start = logits[..., 0].masked_fill(~frame_mask, neg)
        end = logits[..., 1].masked_fill(~frame_mask, neg)
        g = F.normalize(self.rel_query(q_mean), dim=-1)  # (B, d)
        e = F.normalize(self.rel_frame(frame_memory_mean + times), dim=-1)  # (B, F, d)
        cos = torch.einsum("bd,bfd->bf", g, e)
        return start, end, self.rel_alpha * cos + self.rel_beta, cos


class BridgeSTGSemanticBridge(nn.Module):
    """STSB (docs/method.md §3.4) with ETA (§3.5): bridging queries from the bridge tokens' states, frame-aligned
    query positions for the decoder, and the temporal heads.

    Owns the K learned bridge-token input embeddings (written into `inputs_embeds`), so freezing or
    LoRA-adapting the LLM never freezes them.
    """

    def __init__(self, config: BridgeSTGConfig):
        super().__init__()
        D, d, K = config.llm_hidden_size, config.decoder_hidden_size, config.num_bridge_queries
        self.bridge_embeddings = nn.Parameter(torch.zeros(K, D))
        norm = D if config.fusion_layer_norm else None
        self.bridge_fusion = BridgeSTGLayerFusion(config.bridge_num_layers, norm)
        self.frame_fusion = BridgeSTGLayerFusion(config.bridge_num_layers, norm)
        self.query_proj = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, d), nn.GELU(), nn.Linear(d, d),
                                        *([nn.LayerNorm(d)] if config.bridge_query_norm else []))
        self.frame_state_proj = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, d))
        self.time_proj = nn.Linear(d, d)
        self.query_embed = nn.Parameter(torch.zeros(K, d))  # distinguishes the K query slots
        self.temporal_head = BridgeSTGTemporalHead(config)
        self.hidden = d
        self.bridge_in_decoder = config.bridge_in_decoder
        # `loss_query`: mean(Q_b) -> LLM width, scored against the LLM's input embeddings (docs/method.md §3.25)
        self.text_head = nn.Linear(d, D) if config.loss_query_weight > 0 else None

    def embed_bridge_tokens(self, embeds: torch.Tensor, input_ids: torch.Tensor, bridge_ids: torch.Tensor) -> torch.Tensor:
        """`(B, L, D)` embeddings with the bridge tokens' rows taken from `bridge_embeddings`."""
        is_bridge = torch.isin(input_ids, bridge_ids)
        slot = (input_ids.unsqueeze(-1) == bridge_ids).float().argmax(-1)  # (B, L)
        return torch.where(is_bridge.unsqueeze(-1), self.bridge_embeddings.to(embeds.dtype)[slot], embeds)

    def time_embedding(self, seconds: torch.Tensor) -> torch.Tensor:
        """`(...,)` seconds -> `(..., d)`."""
        return self.time_proj(sine_embedding(seconds, self.hidden, scale=4.0).to(self.time_proj.weight.dtype))

    def bridging_queries(self, bridge_states: list[torch.Tensor]) -> torch.Tensor:
        """Q_b `(B, K, d)` from the last L layers' states at the K bridge positions (L tensors `(B, K, D)`)."""
        return self.query_proj(self.bridge_fusion(bridge_states))

    def group_states(self, group_rows: list[torch.Tensor], group_valid: torch.Tensor) -> torch.Tensor:
        """s_g `(B, G, D)`: the fused last-L-layer state at each temporal group's `<|vision_end|>` (zeros on padding);
        `group_rows` are the L layers' states at those tokens, `(ΣG, D)` each in (sample, group) order."""
        fused = self.frame_fusion(group_rows)  # (ΣG, D)
        out = fused.new_zeros(*group_valid.shape, fused.shape[-1])
        out[group_valid] = fused
        return out

    def query_positions(self, queries: torch.Tensor, times: torch.Tensor, frame_states: torch.Tensor) -> torch.Tensor:
        """ETA: `P_f^k = Q_b^k + e_k + TimeEmb(t_f) + W_s s_g(f)`, `(B, S, K, d)` for the S selected frames.

        `queries` (B, K, d); `times`, `frame_states` (B, S, d); `e_k` is a learned embedding of query slot k. With
        `config.bridge_in_decoder=False` (ablation) Q_b is left out.
        """
        slots = queries + self.query_embed if self.bridge_in_decoder else self.query_embed.expand_as(queries)
        return slots.unsqueeze(1) + (times + frame_states).unsqueeze(2)


def sample_decoder_frames(
    frame_labels: torch.Tensor, frame_mask: torch.Tensor, task_ids: torch.Tensor, num_positive: int, num_negative: int,
    eta: bool = True, scores: torch.Tensor | None = None, contiguous: bool = False,
) -> torch.Tensor:
    """Positive / negative frame sampling for the decoder in training (docs/method.md §3.7).

    `random`: up to `num_positive` frames inside the ground-truth span (label 1) and `num_negative` outside
    (label 0), uniformly without replacement: the frames of each kind with the lowest random `scores` (`(B, F)`
    in [0, 1), drawn with `torch.rand` when not given; the collator passes its own seeded draw).
    `contiguous`: one run of up to `num_positive` consecutive positives (a random window of the span) and the
    `num_negative` frames outside the span nearest to it (ties broken by `scores`), like the predicted span the
    decoder sees at inference. Without ETA every valid frame is selected. `tvg` rows (no boxes) get none.
    Returns `(B, F)` bool.
    """
    positive, negative = (frame_labels == 1) & frame_mask, (frame_labels == 0) & frame_mask
    if eta and scores is None:
        scores = torch.rand(frame_mask.shape, device=frame_mask.device)
    if not eta:
        selected = frame_mask.clone()
    elif contiguous:
        selected = _contiguous_frames(positive, negative, scores, num_positive, num_negative)
    else:
        selected = torch.zeros_like(frame_mask)
        for kind, limit in (positive, num_positive), (negative, num_negative):
            if limit == 0:
                continue
            rank = torch.where(kind, scores, torch.full_like(scores, 2.0)).argsort(1).argsort(1)
            selected |= kind & (rank < limit)
    return selected & (task_ids != TASK_IDS["tvg"]).unsqueeze(1)


def _contiguous_frames(positive: torch.Tensor, negative: torch.Tensor, scores: torch.Tensor, num_positive: int,
                       num_negative: int) -> torch.Tensor:
    """`(B, F)`: a window of consecutive positives and the nearest negatives (see `sample_decoder_frames`)."""
    B, Fn = positive.shape
    idx = torch.arange(Fn, device=positive.device)
    selected = torch.zeros_like(positive)
    for b in range(B):
        pos = idx[positive[b]]
        if pos.numel() and num_positive > 0:
            length = min(num_positive, pos.numel())
            first = int((scores[b, 0] * (pos.numel() - length + 1)).floor().clamp(max=pos.numel() - length))
            selected[b, pos[first: first + length]] = True
        neg = idx[negative[b]]
        if neg.numel() and num_negative > 0:
            centre = pos.float().mean() if pos.numel() else torch.tensor(Fn / 2.0, device=positive.device)
            distance = (neg.float() - centre).abs() + scores[b, neg] * 0.5  # ties broken by the draw
            selected[b, neg[distance.argsort()[:num_negative]]] = True
    return selected


# ----------------------------------------------------------------------------- QGSL
@dataclass
class BridgeSTGSlotMemory:
    """The decoder memory of the S selected frames, kept per temporal group: both frames of a group read the same
    merged tokens, so every linear map of the memory is computed once per group and gathered per frame.

    Args:
        memory, memory_pos (`(B, G', M, d)`): projected tokens and their 2D sine positions of the G' groups the
            selected frames belong to.
        valid (`(B, S, M)` bool): real tokens of each selected frame.
        slot_group (`(B, S)` long): each selected frame's group (an index into the G' groups).
        evidence (`(B, S, M, d)`, *optional*): each frame's own evidence (`config.frame_evidence`), added to its
            group's tokens.
    """

    memory: torch.Tensor
    memory_pos: torch.Tensor
    valid: torch.Tensor
    slot_group: torch.Tensor
    evidence: torch.Tensor | None = None

    def _gather(self, per_group: torch.Tensor) -> torch.Tensor:
        bidx = torch.arange(per_group.shape[0], device=per_group.device)[:, None]
        return per_group[bidx, self.slot_group]  # (B, S, M, ·)

    def values(self) -> torch.Tensor:
        """`(B, S, M, d)`: each selected frame's memory tokens."""
        out = self._gather(self.memory)
        return out if self.evidence is None else out + self.evidence

    def project(self, linear: nn.Linear, with_pos: bool = False) -> torch.Tensor:
        """`linear(memory [+ pos])` per selected frame, `(B, S, M, out)`, computed on the G groups (plus the linear part
        applied to the per-frame evidence, when there is some)."""
        out = self._gather(linear(self.memory + self.memory_pos if with_pos else self.memory))
        return out if self.evidence is None else out + F.linear(self.evidence, linear.weight)


class BridgeSTGDecoderLayer(GradientCheckpointingLayer):
    """One QGSL layer: query self-attention | temporal attention | cross-attention to the frame | FFN (post-norm)."""

    def __init__(self, config: BridgeSTGConfig):
        super().__init__()
        d, h, p = config.decoder_hidden_size, config.decoder_heads, config.decoder_dropout
        self.self_attn = BridgeSTGAttention(d, h, p)
        self.temporal_attn = BridgeSTGAttention(d, h, p)
        self.cross_attn = BridgeSTGAttention(d, h, p)
        self.norm1, self.norm2, self.norm3, self.norm4 = (nn.LayerNorm(d) for _ in range(4))
        self.ffn = nn.Sequential(nn.Linear(d, config.decoder_ffn_dim), nn.GELU(), nn.Dropout(p), nn.Linear(config.decoder_ffn_dim, d))
        self.dropout = nn.Dropout(p)

    def forward(
        self,
        x: torch.Tensor,  # (B, S, K, d)
        pos: torch.Tensor,  # (B, S, K, d)
        frame_valid: torch.Tensor,  # (B, S) bool
        memory: BridgeSTGSlotMemory,
    ) -> torch.Tensor:
        B, S, K, d = x.shape
        M = memory.valid.shape[2]
        # 1. self-attention among the K queries of a frame
        q = (x + pos).reshape(B * S, K, d)
        y = self.self_attn(q, q, x.reshape(B * S, K, d)).view(B, S, K, d)
        x = self.norm1(x + self.dropout(y))
        # 2. temporal attention across the selected frames, per query slot k
        xt = x.transpose(1, 2).reshape(B * K, S, d)  # (B*K, S, d)
        pt = pos.transpose(1, 2).reshape(B * K, S, d)
        valid = frame_valid[:, None, :].expand(B, K, S).reshape(B * K, S)
        safe_valid = valid | ~valid.any(-1, keepdim=True)  # all-padding rows attend to something harmless
        y = self.temporal_attn(xt + pt, xt + pt, xt, safe_valid).view(B, K, S, d).transpose(1, 2)
        x = self.norm2(x + self.dropout(y))
        # 3. cross-attention from frame f's queries to frame f's memory (key / value projections once per group)
        q = (x + pos).reshape(B * S, K, d)
        mv = memory.valid.reshape(B * S, M)
        mv = mv | ~mv.any(-1, keepdim=True)
        keys = memory.project(self.cross_attn.k_proj, with_pos=True).reshape(B * S, M, d)
        values = memory.project(self.cross_attn.v_proj).reshape(B * S, M, d)
        y = self.cross_attn(q, keys, values, mv, projected=True)
        x = self.norm3(x + self.dropout(y.view(B, S, K, d)))
        # 4. FFN
        return self.norm4(x + self.dropout(self.ffn(x)))


def _peak_neighbourhood(scores: torch.Tensor, cell_centres: torch.Tensor, cell_sizes: torch.Tensor) -> torch.Tensor:
    """`(B, S, M)` bool: the tokens whose grid cell is the highest-scoring token's cell or one of its 8 neighbours
    (centres at most one cell apart on both axes)."""
    top = scores.argmax(-1)  # (B, S)
    peak = cell_centres.gather(2, top[..., None, None].expand(*top.shape, 1, 2))  # (B, S, 1, 2)
    reach = cell_sizes.unsqueeze(2) * 1.5  # half-way to the second ring: robust to rounding of the centres
    return ((cell_centres - peak).abs() < reach).all(-1)


class BridgeSTGDecoderHeads(nn.Module):
    """Heads shared by every decoder layer: attention-pool the K queries, predict a box and a presence logit.

    Box head `reference_point`: every memory token proposes a box centred near its own grid cell
    (offset bounded by tanh to about one cell) and the pooled query's attention over the tokens
    weights the proposals (with `config.reference_query_pos`, the pooled query plus the pooled query positions).
    `mlp`: a 3-layer MLP on the pooled embedding.
    """

    def __init__(self, config: BridgeSTGConfig):
        super().__init__()
        d = config.decoder_hidden_size
        self.box_head_type = config.box_head
        self.pool = nn.Linear(d, 1)
        self.presence = nn.Linear(d, 1)
        if self.box_head_type == "mlp":
            self.box_mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 4))
        else:
            self.ref_query = nn.Linear(d, d)
            self.ref_key = nn.Linear(d, d)
            self.ref_cond = nn.Linear(d, d)
            self.ref_mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 4))
            # `reference_learned_scale`: log of the scale applied to the scores before the softmax (0 at init)
            self.ref_log_scale = nn.Parameter(torch.zeros(())) if config.reference_learned_scale else None
            # the readout in eval mode (inference) and in train mode (`reference_readout_training`)
            self.readout = config.reference_readout
            self.readout_training = config.reference_readout_training
        self.query_pos = config.reference_query_pos

    def forward(
        self,
        x: torch.Tensor,  # (B, S, K, d)
        memory: BridgeSTGSlotMemory,
        cell_centres: torch.Tensor,  # (B, S, M, 2) normalised (cx, cy)
        cell_sizes: torch.Tensor,  # (B, S, 2) normalised (w, h) of one grid cell
        ref_keys: torch.Tensor | None = None,  # (B, S, M, d) `ref_key(memory)`, shared by the layers
        pos: torch.Tensor | None = None,  # (B, S, K, d) the query positions; read with `config.reference_query_pos`
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Boxes `(B, S, 4)` normalised cxcywh, presence logits `(B, S)` and the reference-point scores `(B, S, M)`
        (the logits of the softmax over memory tokens; `None` for the MLP head)."""
        attn = self.pool(x).squeeze(-1).softmax(-1)  # (B, S, K)
        h = (attn.unsqueeze(-1) * x).sum(2)  # (B, S, d)
        presence = self.presence(h).squeeze(-1)  # (B, S)
        if self.box_head_type == "mlp":
            return self.box_mlp(h).sigmoid(), presence, None
        d = h.shape[-1]
        keys = memory.project(self.ref_key) if ref_keys is None else ref_keys
        if self.query_pos and pos is None:
            raise ValueError("reference_query_pos: the box head needs the query positions (pos)")
        match = h if not self.query_pos else h + (attn.unsqueeze(-1) * pos).sum(2)  # what the tokens are scored with
        scores = torch.einsum("bsd,bsmd->bsm", self.ref_query(match), keys) / math.sqrt(d)
        floor = torch.finfo(scores.dtype).min
        masked = scores.masked_fill(~memory.valid, floor)
        if self.ref_log_scale is None:
            logits = masked  # (B, S, M)
        else:  # scaled before the padding is masked, so a padded token stays at the floor (no overflow)
            logits = (scores * self.ref_log_scale.exp()).masked_fill(~memory.valid, floor)
        if (self.readout_training if self.training else self.readout) == "peak":  # the top token's cell + 8 around it
            logits = logits.masked_fill(~_peak_neighbourhood(masked, cell_centres, cell_sizes), floor)
        weights = logits.softmax(-1)
        scores = masked
        raw = self.ref_mlp(F.relu(memory.values() + self.ref_cond(h).unsqueeze(2)))  # (B, S, M, 4)
        centre = cell_centres + torch.tanh(raw[..., :2]) * cell_sizes.unsqueeze(2)
        token_boxes = torch.cat([centre, raw[..., 2:].sigmoid()], dim=-1)
        return (weights.unsqueeze(-1) * token_boxes).sum(2).clamp(0.0, 1.0), presence, scores


class BridgeSTGVisualMemory(nn.Module):
    """Per-frame decoder memory: `Linear(D, d) + LayerNorm` of the merged visual tokens of the frame's group."""

    def __init__(self, config: BridgeSTGConfig):
        super().__init__()
        self.proj = nn.Linear(config.llm_hidden_size, config.decoder_hidden_size)
        self.norm = nn.LayerNorm(config.decoder_hidden_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(tokens))


def frame_pixels_per_token(pixel_values: torch.Tensor, merge: int, temporal_patch: int) -> torch.Tensor:
    """`(N_tokens, temporal_patch, merge² · 3 · p · p)`: each merged token's pixels, split into the frames of its group.

    `pixel_values` is the processor's `(ΣN_patches, 3 · temporal_patch · p · p)` (rows in merge-block order, values as
    `(3, temporal_patch, p, p)`)."""
    n_tok = pixel_values.shape[0] // merge**2
    per_frame = pixel_values.reshape(n_tok, merge**2, 3, temporal_patch, -1).permute(0, 3, 1, 2, 4)
    return per_frame.reshape(n_tok, temporal_patch, -1)


def pad_groups(flat: torch.Tensor, grid_hw: list[tuple[int, int]], group_valid: torch.Tensor, M: int) -> torch.Tensor:
    """`(B, G, M, *rest)`: per-token rows `flat` (`(ΣN, *rest)`, the valid groups' tokens in (sample, group) order,
    `h * w` of them per group as in `grid_hw`) placed at their group, zeros past each group's tokens and in invalid
    groups."""
    B, G = group_valid.shape
    out = flat.new_zeros(B, G, M, *flat.shape[1:])
    offset = 0
    for row, (b, g) in enumerate(torch.nonzero(group_valid).tolist()):
        n = grid_hw[row][0] * grid_hw[row][1]
        out[b, g, :n] = flat[offset: offset + n]
        offset += n
    return out


#: the per-token statistics of `flow_statistics`
FLOW_FEATURES = 4


def flow_statistics(pixel_values: torch.Tensor, grid_hw: list[tuple[int, int]], merge: int, temporal_patch: int,
                    patch: int, eps: float = 1e-2) -> torch.Tensor:
    """`(N_tokens, 4)`: gradient-based (Lucas–Kanade) motion statistics of each merged token, between the first and
    the last frame of its temporal group (docs/method.md §3.30).

    Each group's two frames are put back together from the processor's patches and smoothed by a 3x3 mean. With `I`
    their mean, `I_t` their difference and `I_x`, `I_y` central differences of `I`, summed over the colour channels and
    averaged over the token's cell: `u = -<I_x I_t> / (<I_x² + I_y²> + eps)` and `v` likewise with `I_y`. Under
    brightness constancy (`I_t ≈ -(u I_x + v I_y)`) their signs are the direction of the move whatever the contrast
    between an object and its background, also for moves larger than a pixel (an edge's leading and trailing strips
    agree in sign). The features are `tanh(u)`, `tanh(v)`, `log1p(<|I_t|>)` (how much changes) and
    `log1p(<I_x² + I_y²>)` (how much edge there is to see it on). Tokens are in (group, raster) order, as the rows of
    `frame_pixels_per_token`.
    """
    per_token = frame_pixels_per_token(pixel_values, merge, temporal_patch)  # (N, T, mh · mw · C · p · p)
    out, offset = [], 0
    side = merge * patch
    for gh, gw in grid_hw:
        n = gh * gw
        # (gh, gw, T, mh, mw, C, p, p) -> (T, C, gh·mh·p, gw·mw·p)
        frames = per_token[offset: offset + n].reshape(gh, gw, temporal_patch, merge, merge, 3, patch, patch)
        frames = frames.permute(2, 5, 0, 3, 6, 1, 4, 7).reshape(temporal_patch, 3, gh * side, gw * side).float()
        offset += n
        first, last = frames[0], frames[-1]
        mean = F.avg_pool2d(((first + last) / 2)[None], 3, 1, 1, count_include_pad=False)[0]
        it = F.avg_pool2d((last - first)[None], 3, 1, 1, count_include_pad=False)[0]
        ix = F.pad(mean[:, :, 2:] - mean[:, :, :-2], (1, 1)) / 2
        iy = F.pad(mean[:, 2:, :] - mean[:, :-2, :], (0, 0, 1, 1)) / 2

        def cell_mean(z: torch.Tensor) -> torch.Tensor:  # channels summed, averaged over each token's cell -> (n,)
            return F.avg_pool2d(z.sum(0, keepdim=True)[None], side)[0, 0].reshape(n)

        edges = cell_mean(ix * ix + iy * iy)
        u, v = -cell_mean(ix * it) / (edges + eps), -cell_mean(iy * it) / (edges + eps)
        out.append(torch.stack([torch.tanh(u), torch.tanh(v), torch.log1p(cell_mean(it.abs())), torch.log1p(edges)], -1))
    return torch.cat(out, 0)


class BridgeSTGMotionEvidence(nn.Module):
    """`config.motion_evidence`: a motion feature per memory token, from the pixels of its 3x3 grid neighbourhood in the
    group's two frames (docs/method.md §3.25).

    Each merged token's pixels are projected per frame (`frame`), the two projections and their difference are mixed
    by a small MLP (`mix`), and each token's feature becomes the projection of its own and its 8 neighbours' mixed
    features, concatenated in raster order with zeros off the grid (`spread`), then normalised.
    """

    def __init__(self, config: BridgeSTGConfig):
        super().__init__()
        d = config.decoder_hidden_size
        pixels = config.spatial_merge_size**2 * 3 * config.patch_size**2  # one frame's pixels under a merged token
        self.frame = nn.Linear(pixels, d)
        self.mix = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Linear(d, d))
        self.spread = nn.Linear(9 * d, d)
        self.norm = nn.LayerNorm(d)
        # `config.motion_flow`: each token's `flow_statistics`, projected and added to its mixed feature
        self.flow = nn.Linear(FLOW_FEATURES, d) if config.motion_flow else None
        self.patch = config.patch_size

    def forward(self, pixel_values: torch.Tensor, grid_hw: list[tuple[int, int]], group_valid: torch.Tensor, M: int,
                merge: int, temporal_patch: int) -> torch.Tensor:
        """`(B, G, M, d)` from the processor's `pixel_values` (see `frame_pixels_per_token`)."""
        e = self.frame(frame_pixels_per_token(pixel_values, merge, temporal_patch).to(self.frame.weight.dtype))  # (N, T, d)
        first, last = e[:, 0], e[:, -1]
        mixed = self.mix(torch.cat([first, last, last - first], dim=-1))  # (N, d)
        if self.flow is not None:
            stats = flow_statistics(pixel_values, grid_hw, merge, temporal_patch, self.patch)
            mixed = mixed + self.flow(stats.to(self.flow.weight.dtype))
        d = mixed.shape[-1]
        neighbourhoods, offset = [], 0
        for gh, gw in grid_hw:
            n = gh * gw
            grid = F.pad(mixed[offset: offset + n].reshape(gh, gw, d).permute(2, 0, 1), (1, 1, 1, 1))  # (d, gh+2, gw+2)
            around = torch.cat([grid[:, i: i + gh, j: j + gw] for i in range(3) for j in range(3)], dim=0)  # (9d, gh, gw)
            neighbourhoods.append(around.reshape(9 * d, n).t())
            offset += n
        return pad_groups(self.norm(self.spread(torch.cat(neighbourhoods, 0))), grid_hw, group_valid, M)


class BridgeSTGSpatialDecoder(nn.Module):
    """QGSL (docs/method.md §3.6): the visual memory, the decoder layers and their shared heads (deep supervision)."""

    def __init__(self, config: BridgeSTGConfig):
        super().__init__()
        self.memory = BridgeSTGVisualMemory(config)
        self.layers = nn.ModuleList(BridgeSTGDecoderLayer(config) for _ in range(config.decoder_layers))
        self.heads = BridgeSTGDecoderHeads(config)
        self.hidden = config.decoder_hidden_size
        if config.frame_evidence:
            # one frame's pixels under a merged token: merge² patches of 3 x patch x patch values
            pixels = config.spatial_merge_size**2 * 3 * config.patch_size**2
            self.frame_evidence = nn.Sequential(nn.Linear(pixels, config.decoder_hidden_size),
                                                nn.LayerNorm(config.decoder_hidden_size))
        else:
            self.frame_evidence = None
        self.motion_evidence = BridgeSTGMotionEvidence(config) if config.motion_evidence else None

    def build_memory(
        self, group_tokens: list[torch.Tensor], grid_hw: list[tuple[int, int]], group_valid: torch.Tensor, dtype: torch.dtype,
    ) -> tuple[torch.Tensor, ...]:
        """Project and pad the merged tokens of every temporal group.

        Args:
            group_tokens: one `(h*w, D)` tensor per valid group, in (sample, group) order.
            grid_hw: the merged grid `(h, w)` of each of them.
            group_valid: `(B, G)` bool.

        Returns:
            `memory`, `memory_pos` (`(B, G, M, d)`), `memory_valid` (`(B, G, M)`), `cell_centres` (`(B, G, M, 2)`)
            and `cell_sizes` (`(B, G, 2)`).
        """
        B, G = group_valid.shape
        device, d = group_valid.device, self.hidden
        M = max(t.shape[0] for t in group_tokens)
        memory = pad_groups(self.memory(torch.cat(group_tokens, 0).to(dtype)), grid_hw, group_valid, M).to(dtype)
        memory_pos = torch.zeros_like(memory)
        memory_valid = torch.zeros(B, G, M, dtype=torch.bool, device=device)
        centres = torch.zeros(B, G, M, 2, device=device, dtype=dtype)
        cells = torch.ones(B, G, 2, device=device, dtype=dtype)
        pos_cache = {}
        for row, (b, g) in enumerate(torch.nonzero(group_valid).tolist()):
            gh, gw = grid_hw[row]
            n = gh * gw
            if (gh, gw) not in pos_cache:
                pos_cache[(gh, gw)] = grid_sine_embedding(gh, gw, d, device).to(dtype)
            memory_pos[b, g, :n] = pos_cache[(gh, gw)]
            memory_valid[b, g, :n] = True
            ys = (torch.arange(gh, device=device, dtype=dtype) + 0.5) / gh
            xs = (torch.arange(gw, device=device, dtype=dtype) + 0.5) / gw
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            centres[b, g, :n] = torch.stack([xx.flatten(), yy.flatten()], -1)
            cells[b, g] = torch.tensor([1.0 / gw, 1.0 / gh], device=device, dtype=dtype)
        return memory, memory_pos, memory_valid, centres, cells

    def build_frame_evidence(
        self, pixel_values: torch.Tensor, grid_hw: list[tuple[int, int]], group_valid: torch.Tensor, M: int,
        merge: int, temporal_patch: int,
    ) -> torch.Tensor:
        """Each frame's own evidence per merged token, `(B, G, temporal_patch, M, d)`.

        The merge² patches of a token are split into the frames of the group (`frame_pixels_per_token`), and each
        frame's pixels are projected to the decoder width.
        """
        per_frame = frame_pixels_per_token(pixel_values, merge, temporal_patch)
        ev = self.frame_evidence(per_frame.to(self.frame_evidence[0].weight.dtype))  # (N, temporal_patch, d)
        return pad_groups(ev, grid_hw, group_valid, M).transpose(2, 3)

    def forward(self, pos, frame_valid, memory: BridgeSTGSlotMemory, cell_centres, cell_sizes):
        """Run the layers from `x = pos`; return every layer's boxes `(Ld, B, S, 4)`, presence logits `(Ld, B, S)`
        and reference-point scores `(Ld, B, S, M)` (`None` for the MLP box head)."""
        x = pos
        boxes, presences, scores = [], [], []
        ref_keys = memory.project(self.heads.ref_key) if self.heads.box_head_type != "mlp" else None  # once, all layers
        for layer in self.layers:
            x = layer(x, pos, frame_valid, memory)
            b, p, r = self.heads(x, memory, cell_centres, cell_sizes, ref_keys, pos)
            boxes.append(b)
            presences.append(p)
            scores.append(r)
        return torch.stack(boxes), torch.stack(presences), None if scores[0] is None else torch.stack(scores)


# ----------------------------------------------------------------------------- pretrained base
class BridgeSTGPreTrainedModel(PreTrainedModel):
    config_class = BridgeSTGConfig
    config: BridgeSTGConfig
    base_model_prefix = "bridge_stg"
    main_input_name = "input_ids"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = [
        "BridgeSTGDecoderLayer",
        "Qwen2_5_VLDecoderLayer",
        "Qwen2_5_VLVisionBlock",
        "Qwen3VLTextDecoderLayer",
        "Qwen3VLVisionBlock",
    ]
    _supports_sdpa = True
    _supports_flash_attn = True
    # forward takes **kwargs (processor extras) but computes its own mean losses: let Trainer scale for
    # gradient accumulation
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear) and self.config.decoder_init == "fan_in":
            # PyTorch's default for nn.Linear: U(±1/sqrt(fan_in)) for weights and biases
            bound = 1.0 / math.sqrt(module.weight.shape[1])
            init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, BridgeSTGLayerFusion):
            init.zeros_(module.layer_logits)
        elif isinstance(module, BridgeSTGSemanticBridge):
            init.normal_(module.bridge_embeddings, mean=0.0, std=std)
            init.normal_(module.query_embed, mean=0.0, std=std)
            # the time of a frame is the only thing telling apart the two frames of a temporal group:
            # keep its embedding at unit scale instead of the tiny default init
            init.normal_(module.time_proj.weight, mean=0.0, std=module.hidden**-0.5)
        elif isinstance(module, BridgeSTGDecoderHeads) and getattr(module, "ref_log_scale", None) is not None:
            init.zeros_(module.ref_log_scale)
        elif isinstance(module, BridgeSTGTemporalHead):
            init.constant_(module.rel_alpha, 10.0)
            init.constant_(module.rel_beta, float(self.config.relevance_bias_init))


# ----------------------------------------------------------------------------- the model
class BridgeSTGForVideoGrounding(BridgeSTGPreTrainedModel):
    r"""
    Bridge-STG for spatio-temporal video grounding.

    The MLLM (`self.mllm`, a Qwen2.5-VL / Qwen3-VL `*ForConditionalGeneration`) reads the query and the
    timestamped frame groups and answers the span as text ("From 3.0s to 7.5s."). K bridge tokens after
    the answer are distilled from its last L layers into bridging queries by STSB (`self.stsb`); explicit
    temporal alignment places them on the frames of the span; the QGSL decoder (`self.qgsl`) regresses one
    box and a presence score per frame.

    Example:

    ```python
    >>> import torch
    >>> from bridge_stg import BridgeSTGConfig, BridgeSTGForVideoGrounding, BridgeSTGProcessor
    >>> from bridge_stg.training.tiny import tiny_mllm_config, tiny_bridge_kwargs
    >>> from bridge_stg.processing.tokenizer import build_compact_tokenizer, bridge_token_ids
    >>> tok = build_compact_tokenizer(num_bridge_queries=4)
    >>> config = BridgeSTGConfig(mllm_config=tiny_mllm_config("qwen2_5_vl", tok),
    ...     bridge_token_ids=bridge_token_ids(tok, 4), **tiny_bridge_kwargs())
    >>> model = BridgeSTGForVideoGrounding(config).eval()
    >>> processor = BridgeSTGProcessor.from_model_config(config, tok)
    >>> video = torch.randint(0, 255, (16, 56, 56, 3), dtype=torch.uint8).numpy()
    >>> inputs = processor(videos=video, text="the red square", video_fps=4.0, return_tensors="pt")
    >>> out = model.ground(**inputs, tokenizer=tok)
    >>> results = processor.post_process_grounding(out, inputs.video_metadata)
    >>> sorted(results[0])
    ['boxes', 'frames', 'scores', 'span', 'span_seconds', 'span_source']
    ```
    """

    def __init__(self, config: BridgeSTGConfig):
        super().__init__(config)
        if config.mllm_config is None:
            raise ValueError(
                "mllm_config: BridgeSTGConfig has no backbone. Pass a Qwen2.5-VL / Qwen3-VL config "
                "(e.g. AutoConfig.from_pretrained('Qwen/Qwen2.5-VL-7B-Instruct')) or use "
                "BridgeSTGForVideoGrounding.from_mllm_pretrained(...)."
            )
        self.mllm = AutoModelForImageTextToText.from_config(config.mllm_config)
        self.stsb = BridgeSTGSemanticBridge(config)
        self.qgsl = BridgeSTGSpatialDecoder(config)
        self.post_init()

    # ------------------------------------------------------------------ HF plumbing
    def get_input_embeddings(self) -> nn.Module:
        return self.mllm.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.mllm.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.mllm.get_output_embeddings()

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, **kwargs):
        """Resize the MLLM's embeddings (e.g. after adding the bridge tokens) and keep the configs in sync."""
        emb = self.mllm.resize_token_embeddings(new_num_tokens, pad_to_multiple_of=pad_to_multiple_of, **kwargs)
        self.config.mllm_config.get_text_config().vocab_size = emb.weight.shape[0]
        return emb

    @classmethod
    def from_mllm_pretrained(
        cls,
        pretrained_model_name_or_path: str,
        bridge_token_ids: list[int] | None = None,
        vocab_size: int | None = None,
        mllm_kwargs: dict[str, Any] | None = None,
        **bridge_kwargs: Any,
    ) -> "BridgeSTGForVideoGrounding":
        """Start from pretrained Qwen-VL weights (Hub id or local folder) with a fresh bridge and decoder.

        Args:
            pretrained_model_name_or_path: a Qwen2.5-VL / Qwen3-VL `*ForConditionalGeneration` checkpoint.
            bridge_token_ids: ids of `<bridge_0..K-1>` in the tokenizer (after adding them).
            vocab_size: the tokenizer length after adding the tokens; the embeddings grow to it when they have
                fewer rows (released Qwen-VL checkpoints have spare rows, so they are left as they are).
            mllm_kwargs: forwarded to the MLLM's `from_pretrained` (e.g. `dtype`, `attn_implementation`).
            **bridge_kwargs: `BridgeSTGConfig` fields (K, decoder sizes, loss weights...).
        """
        mllm = AutoModelForImageTextToText.from_pretrained(pretrained_model_name_or_path, **(mllm_kwargs or {}))
        rows = mllm.get_input_embeddings().weight.shape[0]
        if vocab_size is not None and vocab_size > rows:
            mllm.resize_token_embeddings(vocab_size)
            mllm.config.get_text_config().vocab_size = rows = vocab_size
        if bridge_token_ids is not None and max(bridge_token_ids) >= rows:
            raise ValueError(f"bridge_token_ids: id {max(bridge_token_ids)} is outside the {rows} embedding rows "
                             "of the MLLM (pass vocab_size = len(tokenizer))")
        config = BridgeSTGConfig(mllm_config=mllm.config, bridge_token_ids=bridge_token_ids, **bridge_kwargs)
        model = cls(config)
        model.mllm = mllm
        model.to(dtype=next(mllm.parameters()).dtype)
        return model

    @property
    def im_end_token_id(self) -> int:
        """`<|im_end|>`, the end of the answer (the text config's first eos id)."""
        eos = self.config.mllm_config.get_text_config().eos_token_id
        return int(eos[0] if isinstance(eos, list) else eos)

    def _bridge_ids(self, device: torch.device) -> torch.Tensor:
        if self.config.bridge_token_ids is None:
            raise ValueError(
                "bridge_token_ids: not set in the config; add <bridge_i> tokens to the tokenizer and pass their ids"
            )
        return torch.tensor(self.config.bridge_token_ids, device=device)

    # ------------------------------------------------------------------ encoder pass (MLLM -> bridge)
    def _llm_layer_states(self, input_ids, attention_mask, mm_token_type_ids, video_grid_thw, video_features):
        """One MLLM forward on the token embeddings (bridge rows from STSB); returns the output and the last
        L layers' hidden states `(B, L, D)` each."""
        cfg = self.config
        embeds = self.mllm.get_input_embeddings()(input_ids)
        embeds = self.stsb.embed_bridge_tokens(embeds, input_ids, self._bridge_ids(input_ids.device))
        # 3-D M-RoPE positions from the token ids, then a forward on the embeddings alone (Qwen3-VL accepts
        # exactly one of input_ids / inputs_embeds; video placeholders keep their token embedding)
        position_ids = self.mllm.model.compute_3d_position_ids(
            input_ids=input_ids, inputs_embeds=embeds, image_grid_thw=None, video_grid_thw=video_grid_thw, cache=None,
            attention_mask=attention_mask, mm_token_type_ids=mm_token_type_ids,
        )
        self.mllm.model.rope_deltas = None
        out = self.mllm.model(
            input_ids=None, position_ids=position_ids, inputs_embeds=embeds, attention_mask=attention_mask,
            mm_token_type_ids=mm_token_type_ids, video_grid_thw=video_grid_thw,
            mm_encoder_outputs={"video": video_features}, output_hidden_states=True, use_cache=False,
        )
        self.mllm.model.rope_deltas = None
        n = cfg.num_llm_layers
        return out, [out.hidden_states[i] for i in range(n - cfg.bridge_num_layers + 1, n + 1)]  # 0 = embeddings

    def _check_layout(self, input_ids: torch.Tensor, frame_mask: torch.Tensor,
                      bridge: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The bridge-token and `<|vision_end|>` masks `(B, L)`, checked against K (or, `bridge=False`, against no
        bridge token: a prompt) and the temporal groups."""
        cfg = self.config
        is_bridge = torch.isin(input_ids, self._bridge_ids(input_ids.device))
        counts = is_bridge.sum(1)
        if bool((counts != (cfg.num_bridge_queries if bridge else 0)).any()):
            raise ValueError(
                f"input_ids: every sample needs exactly {cfg.num_bridge_queries if bridge else 0} bridge tokens, "
                f"got {counts.tolist()}"
            )
        vision_end = input_ids == cfg.mllm_config.vision_end_token_id
        groups, expected = vision_end.sum(1), (frame_mask.sum(1) + 1) // 2
        if bool((groups != expected).any()):
            raise ValueError(
                f"input_ids: <|vision_end|> count {groups.tolist()} does not match the temporal groups "
                f"implied by frame_mask {expected.tolist()}"
            )
        return is_bridge, vision_end

    def _group_tokens(self, video_rows: torch.Tensor | None, video_grid_thw: torch.Tensor, video_features: Any) -> list:
        """The visual memory tokens of every temporal group: merged vision tokens, or (`visual_memory="llm"`) the
        last-layer LLM states at the video tokens (`video_rows`, `(Σtokens, D)` in (sample, group) order)."""
        cfg = self.config
        if cfg.visual_memory == "vision":
            return list(video_features.pooler_output)
        sizes = [int(t * h * w) // cfg.spatial_merge_size**2 for t, h, w in video_grid_thw.tolist()]
        return list(torch.split(video_rows, sizes))

    def _encode(self, input_ids, attention_mask, mm_token_type_ids, video_grid_thw, frame_timestamps, frame_mask,
                pixel_values_videos=None, video_features=None) -> BridgeSTGEncoderOutput:
        """One MLLM pass over the full sequences (prompt [+ answer] + bridge tokens: training, frame-mode inference);
        returns everything the decoder and the temporal heads need (see `BridgeSTGEncoderOutput`)."""
        cfg = self.config
        is_bridge, vision_end = self._check_layout(input_ids, frame_mask)
        if video_features is None:
            video_features = self.encode_video(pixel_values_videos, video_grid_thw, frame_mask)
        out, layer_states = self._llm_layer_states(input_ids, attention_mask, mm_token_type_ids, video_grid_thw, video_features)
        B, K = input_ids.shape[0], cfg.num_bridge_queries
        video_rows = out.hidden_states[-1][input_ids == cfg.mllm_config.video_token_id] if cfg.visual_memory == "llm" else None
        return self._assemble(
            bridge_states=[s[is_bridge].view(B, K, -1) for s in layer_states], group_rows=[s[vision_end] for s in layer_states],
            groups=vision_end.sum(1), video_rows=video_rows, video_grid_thw=video_grid_thw, frame_timestamps=frame_timestamps,
            frame_mask=frame_mask, pixel_values_videos=pixel_values_videos, video_features=video_features,
            last_hidden_state=out.last_hidden_state,
        )

    def _may_share_prefix(self, batch_size: int) -> bool:
        """Whether queries of a batch can share a video prefix: the query after the video, two samples or more."""
        return self.config.query_position == "after_video" and batch_size > 1

    def _shared_prefixes(self, input_ids, attention_mask, owner: list[int]) -> list[list[int]] | None:
        """With the query after the video: the samples of the batch that share their video (`owner`, from
        `_video_owners`) and every token up to the last `<|vision_end|>` (several queries on one video), grouped in
        first-seen order; None when no two do."""
        if not self._may_share_prefix(input_ids.shape[0]):
            return None
        vision_end = self.config.mllm_config.vision_end_token_id
        groups: dict[tuple, list[int]] = {}
        for i in range(input_ids.shape[0]):
            seq = input_ids[i][attention_mask[i].bool()].tolist()
            if vision_end not in seq:  # not a video prompt: `_encode` reports it
                return None
            end = len(seq) - seq[::-1].index(vision_end)
            groups.setdefault((owner[i], tuple(seq[:end])), []).append(i)
        return list(groups.values()) if any(len(g) > 1 for g in groups.values()) else None

    def _shared_positions(self, input_ids, attention_mask, mm_token_type_ids, video_grid_thw):
        """The 3-D M-RoPE positions of the full (left-padded) sequences `(3, B, L)` and their rope deltas `(B, 1)`."""
        positions = self.mllm.model.compute_3d_position_ids(
            input_ids=input_ids, inputs_embeds=None, image_grid_thw=None, video_grid_thw=video_grid_thw, cache=None,
            attention_mask=attention_mask, mm_token_type_ids=mm_token_type_ids,
        )
        deltas = self.mllm.model.rope_deltas
        self.mllm.model.rope_deltas = None
        return positions, deltas

    def _prefill_prefix(self, first, input_ids, attention_mask, mm_token_type_ids, positions, video_grid_thw,
                        video_features, row_start) -> tuple[Any, int, torch.Tensor]:
        """One forward over sample `first`'s video prefix (every token up to its last `<|vision_end|>`) at the positions
        of its full sequence, with the cache; returns the output (hidden states of every layer), the prefix length and
        the sample's tokens without padding."""
        keep = attention_mask[first].bool()
        seq = input_ids[first][keep]
        P = int(torch.nonzero(seq == self.config.mllm_config.vision_end_token_id)[-1]) + 1
        rows = list(range(row_start[first], row_start[first + 1]))
        prefix = self.mllm.model(
            input_ids=None, inputs_embeds=self.mllm.get_input_embeddings()(seq[None, :P]),
            position_ids=positions[:, first][:, keep][:, None, :P], attention_mask=torch.ones_like(seq[None, :P]),
            mm_token_type_ids=mm_token_type_ids[first][keep][None, :P], video_grid_thw=video_grid_thw[rows],
            mm_encoder_outputs={"video": select_video_rows(video_features, rows)}, output_hidden_states=True,
            use_cache=True,
        )
        self.mllm.model.rope_deltas = None
        return prefix, P, seq

    def _suffix_block(self, members, input_ids, attention_mask, positions, P):
        """The tokens after the shared prefix of each sample of `members`, left-padded to one block: ids and mask
        `(N, S)` and, unless `positions` is None (generation computes its own), positions `(3, N, S)` (those of the
        full sequences; a pad slot, never attended to, takes the position of the sample's first token)."""
        device = input_ids.device
        pad = int(self.config.mllm_config.get_text_config().pad_token_id or 0)
        tails = [input_ids[i][attention_mask[i].bool()][P:] for i in members]
        S = max(len(t) for t in tails)
        ids = torch.full((len(members), S), pad, dtype=torch.long, device=device)
        mask = torch.zeros(len(members), S, dtype=attention_mask.dtype, device=device)
        pos = None if positions is None else torch.zeros(3, len(members), S, dtype=positions.dtype, device=device)
        for j, i in enumerate(members):
            t = len(tails[j])
            ids[j, S - t:], mask[j, S - t:] = tails[j], 1
            if pos is not None:
                pos_i = positions[:, i][:, attention_mask[i].bool()][:, P:]
                pos[:, j, S - t:], pos[:, j, : S - t] = pos_i, pos_i[:, :1]
        return ids, mask, pos

    def _encode_shared_prefix(self, input_ids, attention_mask, mm_token_type_ids, video_grid_thw, frame_timestamps,
                              frame_mask, pixel_values_videos, video_features, groups) -> BridgeSTGEncoderOutput:
        """Frame-mode encoder pass for queries after the video, the video prefix prefilled once per group of
        `_shared_prefixes`: the prefix (system prompt, video, up to the last `<|vision_end|>`) runs once, its cache is
        repeated for the group's queries, and each query's suffix (query, `<|im_end|>`..., the K bridge tokens) runs on
        top of it. Positions are those of the full sequences, so the states equal `_encode`'s (up to float rounding).
        """
        cfg = self.config
        device = input_ids.device
        is_bridge, vision_end = self._check_layout(input_ids, frame_mask)
        B, n = input_ids.shape[0], cfg.num_llm_layers
        layers = range(n - cfg.bridge_num_layers + 1, n + 1)
        positions, _ = self._shared_positions(input_ids, attention_mask, mm_token_type_ids, video_grid_thw)
        row_start = _grid_rows(video_grid_thw, frame_mask)[1]  # the groups were formed by `_shared_prefixes`
        bridge: list[list[torch.Tensor]] = [[None] * B for _ in layers]
        group_rows: list[list[torch.Tensor]] = [[None] * B for _ in layers]
        video_rows: list[torch.Tensor | None] = [None] * B
        for members in groups:
            prefix, P, seq = self._prefill_prefix(members[0], input_ids, attention_mask, mm_token_type_ids, positions,
                                                  video_grid_thw, video_features, row_start)
            cache = prefix.cache
            cache.batch_repeat_interleave(len(members))
            suffix, suffix_mask, suffix_pos = self._suffix_block(members, input_ids, attention_mask, positions, P)
            embeds = self.stsb.embed_bridge_tokens(self.mllm.get_input_embeddings()(suffix), suffix, self._bridge_ids(device))
            out = self.mllm.model(
                input_ids=None, inputs_embeds=embeds, position_ids=suffix_pos, cache=cache,
                attention_mask=torch.cat([torch.ones(len(members), P, dtype=suffix_mask.dtype, device=device), suffix_mask], 1),
                mm_token_type_ids=torch.zeros_like(suffix), output_hidden_states=True, use_cache=True,
            )
            self.mllm.model.rope_deltas = None
            on_bridge = torch.isin(suffix, self._bridge_ids(device))
            for a, layer in enumerate(layers):
                for j, i in enumerate(members):
                    bridge[a][i] = out.hidden_states[layer][j][on_bridge[j]]
            self._scatter_prefix_states(prefix, P, members, seq, group_rows, video_rows)
        return self._assemble(
            bridge_states=[torch.stack(b) for b in bridge], group_rows=[torch.cat(g) for g in group_rows],
            groups=vision_end.sum(1), video_rows=torch.cat(video_rows) if cfg.visual_memory == "llm" else None,
            video_grid_thw=video_grid_thw, frame_timestamps=frame_timestamps, frame_mask=frame_mask,
            pixel_values_videos=pixel_values_videos, video_features=video_features,
        )

    def _scatter_prefix_states(self, prefix, P, members, seq, group_rows, video_rows) -> None:
        """Copy the prefix's states at its `<|vision_end|>` tokens (last L layers) and, for `visual_memory="llm"`, its
        last-layer states at the video tokens into the slots of every sample of `members`."""
        cfg = self.config
        n = cfg.num_llm_layers
        ends = seq[:P] == cfg.mllm_config.vision_end_token_id
        for a, layer in enumerate(range(n - cfg.bridge_num_layers + 1, n + 1)):
            for i in members:
                group_rows[a][i] = prefix.hidden_states[layer][0][ends]
        if cfg.visual_memory == "llm":
            video = seq[:P] == cfg.mllm_config.video_token_id
            for i in members:
                video_rows[i] = prefix.hidden_states[-1][0][video]

    def _assemble(self, bridge_states, group_rows, groups, video_rows, video_grid_thw, frame_timestamps, frame_mask,
                  pixel_values_videos, video_features, last_hidden_state=None) -> BridgeSTGEncoderOutput:
        """From the LLM states the bridge needs (the bridge tokens' and each `<|vision_end|>`'s, last L layers) to the
        encoder output: Q_b, frame states, time embeddings, the decoder memory, the temporal heads."""
        cfg = self.config
        device = frame_mask.device
        queries = self.stsb.bridging_queries(bridge_states)  # (B, K, d)
        G = int(groups.max())
        group_valid = torch.arange(G, device=device)[None] < groups[:, None]  # (B, G)
        frame_group = (torch.arange(frame_mask.shape[1], device=device) // 2).clamp(max=G - 1)  # (F,)
        group_states = self.stsb.group_states(group_rows, group_valid)  # (B, G, D)
        frame_states = self.stsb.frame_state_proj(group_states[:, frame_group])  # (B, F, d)
        times = self.stsb.time_embedding(frame_timestamps.float())  # (B, F, d); seconds stay float32 (bf16 rounds them)
        merge = cfg.spatial_merge_size
        grid_hw = [(int(h) // merge, int(w) // merge) for _, h, w in video_grid_thw.tolist()]
        tokens = self._group_tokens(video_rows, video_grid_thw, video_features)
        memory, memory_pos, memory_valid, centres, cells = self.qgsl.build_memory(tokens, grid_hw, group_valid, frame_states.dtype)
        needs_pixels = [n for n in ("motion_evidence", "frame_evidence") if getattr(self.qgsl, n) is not None]
        if needs_pixels and pixel_values_videos is None:
            raise ValueError(f"{needs_pixels[0]}: the decoder needs pixel_values_videos (each frame's own pixels)")
        if self.qgsl.motion_evidence is not None:
            memory = memory + self.qgsl.motion_evidence(pixel_values_videos, grid_hw, group_valid, memory.shape[2], merge,
                                                        cfg.temporal_patch_size)
        evidence = None
        if self.qgsl.frame_evidence is not None:
            evidence = self.qgsl.build_frame_evidence(pixel_values_videos, grid_hw, group_valid, memory.shape[2], merge,
                                                      cfg.temporal_patch_size)
        memory_mean = (memory * memory_valid.unsqueeze(-1)).sum(2) / memory_valid.sum(2, keepdim=True).clamp(min=1)
        start, end, relevance, cos = self.stsb.temporal_head(frame_states, times, queries, frame_mask, memory_mean[:, frame_group])
        return BridgeSTGEncoderOutput(
            last_hidden_state=last_hidden_state, bridge_queries=queries, frame_states=frame_states,
            time_embeddings=times, frame_group=frame_group, memory=memory, memory_pos=memory_pos,
            memory_valid=memory_valid, cell_centres=centres, cell_sizes=cells, span_start_logits=start,
            span_end_logits=end, relevance_logits=relevance, relevance_cosine=cos, video_features=video_features,
            frame_evidence=evidence,
        )

    def _video_owners(self, pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor,
                      frame_mask: torch.Tensor | None) -> tuple[list[int], list[int], list[int], list[int]]:
        """Which samples of a batch show the same video (equal grid rows and pixels): grid rows per sample, the first
        grid row and first patch of every row, and per sample the index of its distinct video (first-seen order)."""
        rows_per_sample, row_start = _grid_rows(video_grid_thw, frame_mask)
        patches = (video_grid_thw[:, 0] * video_grid_thw[:, 1] * video_grid_thw[:, 2]).tolist()
        pixel_start = [0]
        for n in patches:
            pixel_start.append(pixel_start[-1] + int(n))
        firsts: list[int] = []
        owner: list[int] = []
        for i in range(len(rows_per_sample)):
            lo, hi = row_start[i], row_start[i + 1]
            for u, j in enumerate(firsts):
                jl, jh = row_start[j], row_start[j + 1]
                if torch.equal(video_grid_thw[lo:hi], video_grid_thw[jl:jh]) and torch.equal(
                        pixel_values_videos[pixel_start[lo]:pixel_start[hi]], pixel_values_videos[pixel_start[jl]:pixel_start[jh]]):
                    owner.append(u)
                    break
            else:
                owner.append(len(firsts))
                firsts.append(i)
        return rows_per_sample, row_start, pixel_start, owner

    # ------------------------------------------------------------------ the vision encoder, once per video
    def encode_video(self, pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor,
                     frame_mask: torch.Tensor | None = None) -> Any:
        """The vision encoder's output for a batch, run once per distinct video.

        Samples whose grid rows and pixels are equal (several queries on one video) share one encoder pass; the
        output holds one entry per grid row of the batch, as the MLLM's forward expects (`mm_encoder_outputs`).
        `frame_mask` `(B, F)` gives each sample's number of temporal groups (without it every row is its own video).
        """
        return self._encode_video(pixel_values_videos, video_grid_thw,
                                  self._video_owners(pixel_values_videos, video_grid_thw, frame_mask))

    def _encode_video(self, pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor,
                      owners: tuple[list[int], list[int], list[int], list[int]]) -> Any:
        """`encode_video` with the batch's `_video_owners` already computed (`ground` needs them twice)."""
        rows_per_sample, row_start, pixel_start, owner = owners
        unique = [owner.index(u) for u in range(max(owner) + 1)]  # the first sample of each distinct video
        if len(unique) == len(rows_per_sample):
            return self.mllm.model.get_video_features(pixel_values_videos, video_grid_thw, return_dict=True)
        rows = [r for i in unique for r in range(row_start[i], row_start[i + 1])]
        pixels = torch.cat([pixel_values_videos[pixel_start[r]:pixel_start[r + 1]] for r in rows])
        features = self.mllm.model.get_video_features(pixels, video_grid_thw[rows], return_dict=True)
        local_start = [0]
        for i in unique:
            local_start.append(local_start[-1] + rows_per_sample[i])
        select = [local_start[owner[i]] + k for i in range(len(rows_per_sample)) for k in range(rows_per_sample[i])]
        return select_video_rows(features, select)

    # ------------------------------------------------------------------ decoder pass (ETA -> QGSL)
    def _run_decoder(self, enc: BridgeSTGEncoderOutput, decode_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run QGSL on the frames of `decode_mask` (B, F). Returns every layer's boxes `(Ld, B, F, 4)`, presence
        logits `(Ld, B, F)` and reference-point scores `(Ld, B, F, M)` (`None` for the MLP box head)."""
        B, Fmax = decode_mask.shape
        S = max(int(decode_mask.sum(1).max()), 1)
        # pack the selected frames of each sample to the front: frame index per slot (B, S)
        order = torch.argsort((~decode_mask).to(torch.int8), dim=1, stable=True)[:, :S]
        slot_valid = torch.gather(decode_mask, 1, order)
        bidx = torch.arange(B, device=decode_mask.device)[:, None]
        groups = enc.frame_group[order]  # (B, S)
        pos = self.stsb.query_positions(enc.bridge_queries, enc.time_embeddings[bidx, order], enc.frame_states[bidx, order])
        evidence = None
        if enc.frame_evidence is not None:
            evidence = enc.frame_evidence[bidx, groups, order % enc.frame_evidence.shape[2]]  # (B, S, M, d)
        # the groups the selected frames belong to, packed (a group's two frames are consecutive slots): the memory's
        # linear maps run once per packed group, never on the groups ETA left out
        change = torch.ones_like(groups, dtype=torch.bool)
        change[:, 1:] = groups[:, 1:] != groups[:, :-1]
        packed = change.long().cumsum(1) - 1  # (B, S): slot -> packed group
        source = torch.zeros(B, int(packed.max()) + 1, dtype=torch.long, device=groups.device).scatter(1, packed, groups)
        memory = BridgeSTGSlotMemory(enc.memory[bidx, source], enc.memory_pos[bidx, source],
                                     enc.memory_valid[bidx, groups], packed, evidence)
        boxes, presences, scores = self.qgsl(
            pos, slot_valid, memory, enc.cell_centres[bidx, groups], enc.cell_sizes[bidx, groups],
        )
        return tuple(None if t is None else _scatter_slots(t, order, slot_valid, Fmax) for t in (boxes, presences, scores))

    # ------------------------------------------------------------------ training forward
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        mm_token_type_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        frame_timestamps: torch.FloatTensor | None = None,
        frame_mask: torch.BoolTensor | None = None,
        frame_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        frame_labels: torch.LongTensor | None = None,
        target_boxes: torch.FloatTensor | None = None,
        target_box_mask: torch.BoolTensor | None = None,
        decoder_frame_mask: torch.BoolTensor | None = None,
        task_ids: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> BridgeSTGModelOutput:
        r"""
        Training / scoring forward on full sequences (prompt [+ answer] + bridge tokens).

        Args:
            frame_timestamps (`(B, F)`): seconds from the segment start of each sampled frame.
            frame_mask (`(B, F)` bool): valid sampled frames (temporal group g = frames 2g, 2g+1).
            frame_ids (`(B, F)`): original frame ids; not used by the network (carried for post-processing).
            labels (`(B, L)`): LM targets (answer + `<|im_end|>`), -100 elsewhere.
            frame_labels (`(B, F)`): 1 inside the GT span, 0 outside, -100 padding.
            target_boxes (`(B, F, 4)`): GT boxes, normalised (cx, cy, w, h); `target_box_mask (B, F)` where they exist.
            decoder_frame_mask (`(B, F)`): frames for the decoder; drawn by `sample_decoder_frames` when absent.
            task_ids (`(B,)`): 0 stvg, 1 tvg (no decoder), 2 rec (no LM / relevance / span losses).

        Without targets (`frame_labels is None`) the decoder runs over every valid frame and no loss is computed.
        """
        cfg = self.config
        if cfg.grounding_mode == "coupled":
            return coupled_forward(self, input_ids, attention_mask, mm_token_type_ids, pixel_values_videos,
                                   video_grid_thw, labels)
        if frame_mask is None or frame_timestamps is None or video_grid_thw is None:
            raise ValueError("forward needs frame_timestamps, frame_mask and video_grid_thw (use BridgeSTGProcessor)")
        if mm_token_type_ids is None:
            raise ValueError("mm_token_type_ids: required for the 3-D positions of the video tokens")
        frame_mask = frame_mask.bool()
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        if task_ids is None:
            task_ids = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        enc = self._encode(input_ids, attention_mask, mm_token_type_ids, video_grid_thw, frame_timestamps, frame_mask,
                           pixel_values_videos=pixel_values_videos)
        if decoder_frame_mask is not None:
            decode = decoder_frame_mask.bool() & frame_mask
        elif frame_labels is not None:
            decode = sample_decoder_frames(frame_labels, frame_mask, task_ids, cfg.num_positive_frames,
                                           cfg.num_negative_frames, eta=cfg.eta, contiguous=cfg.decoder_frame_sampling == "contiguous")
        else:
            decode = frame_mask
        layer_boxes, layer_logits, layer_scores = self._run_decoder(enc, decode)
        terms = dict.fromkeys(COMPONENT_LOSSES, losses.zero_like(layer_boxes))
        if labels is not None:
            terms["loss_lm"] = losses.lm_loss(enc.last_hidden_state, labels, self.mllm.lm_head)
        if frame_labels is not None:
            terms.update(self._grounding_losses(enc, layer_boxes, layer_logits, layer_scores, decode, frame_mask,
                                                frame_labels, target_boxes, target_box_mask, task_ids))
        if self.stsb.text_head is not None and (labels is not None or frame_labels is not None):
            terms["loss_query"] = self._query_loss(enc, input_ids, attention_mask, mm_token_type_ids, labels)
        loss = None
        if labels is not None or frame_labels is not None:
            loss = sum(getattr(cfg, f"{name}_weight") * value for name, value in terms.items())
        return BridgeSTGModelOutput(
            loss=loss, **terms, pred_boxes=layer_boxes[-1], presence_logits=layer_logits[-1], decoder_frame_mask=decode,
            layer_boxes=layer_boxes, layer_presence_logits=layer_logits, span_start_logits=enc.span_start_logits,
            span_end_logits=enc.span_end_logits, relevance_logits=enc.relevance_logits, bridge_queries=enc.bridge_queries,
        )

    def _query_loss(self, enc: BridgeSTGEncoderOutput, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    mm_token_type_ids: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """`loss_query`: the prompt's text tokens (not video, vision markers, bridge tokens, `<|im_end|>` or the answer)
        as a bag of words, predicted from the mean bridging query through the LLM's input embeddings (detached, so the
        vocabulary is not reshaped by it). The prompt's template tokens are the same in every sample; the words that
        differ are the query's, which is what the loss makes the bridge carry."""
        mc = self.config.mllm_config
        special = torch.cat([self._bridge_ids(input_ids.device), torch.tensor(
            [mc.video_token_id, mc.vision_start_token_id, mc.vision_end_token_id, self.im_end_token_id],
            device=input_ids.device)])
        text = attention_mask.bool() & (mm_token_type_ids == 0) & ~torch.isin(input_ids, special)
        if labels is not None:
            text &= labels == -100
        vocab = self.mllm.get_input_embeddings().weight.detach()
        if self.config.loss_query_tokens == "distinct" and text.shape[0] > 1:  # drop the tokens every prompt has
            rows = torch.arange(text.shape[0], device=text.device)[:, None].expand_as(input_ids)
            present = torch.zeros(text.shape[0], vocab.shape[0], device=text.device, dtype=torch.bool)
            present[rows[text], input_ids[text]] = True  # (B, V): which tokens each prompt's bag has
            text = text & ~present.all(0)[input_ids]
        logits = self.stsb.text_head(enc.bridge_queries.mean(1)) @ vocab.t().to(enc.bridge_queries.dtype)
        return losses.bag_of_words_loss(logits, input_ids, text)

    def _grounding_losses(self, enc, layer_boxes, layer_logits, layer_scores, decode, frame_mask, frame_labels,
                          target_boxes, target_box_mask, task_ids) -> dict[str, torch.Tensor]:
        """The decoder and temporal-head losses (docs/method.md §3.8) on the frames each term applies to."""
        cfg = self.config
        out: dict[str, torch.Tensor] = {}
        positive = (frame_labels.long() == 1) & frame_mask
        not_rec = task_ids != TASK_IDS["rec"]
        # boxes: positive decoded frames with a GT box, every decoder layer
        box_sel = decode & positive & target_box_mask.bool() if target_boxes is not None and target_box_mask is not None \
            else torch.zeros_like(decode)
        if bool(box_sel.any()):
            out["loss_l1"], out["loss_giou"] = losses.box_losses(layer_boxes[:, box_sel], target_boxes[box_sel])
            if layer_scores is not None and cfg.loss_reference_weight > 0:
                cells = torch.cat([enc.cell_centres, enc.cell_sizes.unsqueeze(2).expand_as(enc.cell_centres)], -1)
                out["loss_reference"] = losses.reference_loss(
                    layer_scores[:, box_sel], enc.memory_valid[:, enc.frame_group][box_sel],
                    cells[:, enc.frame_group][box_sel], target_boxes[box_sel], kind=cfg.reference_supervision)
        # presence: every decoded frame, every layer
        if bool(decode.any()):
            out["loss_presence"] = losses.presence_loss(layer_logits[:, decode], positive[decode])
        # relevance + contrastive: the frames seen in training (stvg, tvg; not rec)
        rel_sel = frame_mask & (frame_labels >= 0) & not_rec.unsqueeze(1)
        if cfg.eta and cfg.num_negative_frames == 0:
            rel_sel = rel_sel & positive  # ablation: no negative frames at all
        if bool(rel_sel.any()):
            out["loss_relevance"] = losses.relevance_loss(enc.relevance_logits[rel_sel], positive[rel_sel])
            out["loss_contrastive"] = losses.contrastive_loss(enc.relevance_cosine, positive, rel_sel,
                                                              cfg.contrastive_temperature)
        # per-frame span head: first / last positive sampled frame
        span_ok = positive.any(1) & not_rec
        if bool(span_ok.any()):
            out["loss_span"] = losses.span_loss(enc.span_start_logits[span_ok], enc.span_end_logits[span_ok],
                                                positive[span_ok])
        return out

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def ground(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        mm_token_type_ids: torch.LongTensor,
        pixel_values_videos: torch.FloatTensor,
        video_grid_thw: torch.LongTensor,
        frame_timestamps: torch.FloatTensor,
        frame_mask: torch.BoolTensor,
        tokenizer: Any | None = None,
        span_source: str | None = None,
        max_new_tokens: int | None = None,
        video_features: Any | None = None,
        **kwargs: Any,
    ) -> BridgeSTGGroundingOutput:
        r"""
        Ground queries from a prompt that ends at `<|im_start|>assistant\n` (no targets, no bridge tokens).

        1. The vision encoder runs once per distinct video of the batch (`encode_video`), or not at all when
           `video_features` (its output for these inputs) is given; the features are reused below.
        2. Text mode: the MLLM generates the span answer (one prefill of the prompt); the frame states are read from
           that prefill, and `<|im_end|>` + the K bridge tokens continue the generation's cache (Q_b). Frame mode:
           one forward over the prompt + the K bridge tokens gives Q_b and the frame states. In both modes, with the
           query after the video (`query_position="after_video"`), the queries of the batch on one video share one
           prefill of the video prefix (its cache repeated for each query).
        4. The span: parsed from the answer (the relevance run when it does not parse), or read from the
           per-frame start / end logits (frame mode).
        5. ETA selects the sampled frames inside the span; QGSL decodes boxes only there.

        Args:
            tokenizer: decodes the generated answer in text mode (the processor's tokenizer).
            span_source: override `config.span_source` (`"text"` or `"frame"`).
            max_new_tokens: generation budget (default `config.max_new_tokens`).
            video_features: the vision encoder's output for these inputs' grid rows (`encode_video`), e.g. computed
                once for several queries on one video.

        The coupled baseline (`config.grounding_mode="coupled"`) is run by `coupled_bridge_stg.coupled_ground`
        (`min_new_tokens=` in kwargs forces a generation length, for latency benchmarks).
        """
        if self.config.grounding_mode == "coupled":
            return coupled_ground(self, input_ids, attention_mask, mm_token_type_ids, pixel_values_videos,
                                  video_grid_thw, frame_timestamps, frame_mask, tokenizer, max_new_tokens,
                                  kwargs.get("min_new_tokens"))
        source = span_source or self.config.span_source
        if source not in ("text", "frame"):
            raise ValueError(f"span_source: must be 'text' or 'frame', got {source!r}")
        if source == "text" and tokenizer is None:
            raise ValueError("ground(): span_source='text' needs `tokenizer=` to read the generated answer")
        frame_mask = frame_mask.bool()
        # which samples show the same video: one encoder pass per video, one prefill per video with the query after it
        owners = None
        if video_features is None or self._may_share_prefix(input_ids.shape[0]):
            owners = self._video_owners(pixel_values_videos, video_grid_thw, frame_mask)
        if video_features is None:
            video_features = self._encode_video(pixel_values_videos, video_grid_thw, owners)
        owner = owners[3] if owners is not None else []
        if source == "text":  # generate the answer; the bridge tokens continue the generation's cache
            shared = self._shared_prefixes(input_ids, attention_mask, owner)
            generating = self._encode_generating if shared is None else partial(self._generate_shared_prefix, groups=shared)
            enc, texts = generating(input_ids, attention_mask, mm_token_type_ids, video_grid_thw, frame_timestamps,
                                    frame_mask, pixel_values_videos, video_features, tokenizer, max_new_tokens)
        else:  # frame mode: one forward over the prompt + the bridge tokens
            texts = ["" for _ in range(input_ids.shape[0])]
            ids, mask, types = self._append_bridge_tokens(input_ids, attention_mask, mm_token_type_ids,
                                                          [[] for _ in range(input_ids.shape[0])])
            shared = self._shared_prefixes(ids, mask, owner)
            if shared is not None:  # several queries after one video: its prefix is prefilled once
                enc = self._encode_shared_prefix(ids, mask, types, video_grid_thw, frame_timestamps, frame_mask,
                                                 pixel_values_videos, video_features, shared)
            else:
                enc = self._encode(ids, mask, types, video_grid_thw, frame_timestamps, frame_mask,
                                   pixel_values_videos=pixel_values_videos, video_features=video_features)
        relevance = enc.relevance_logits.sigmoid().masked_fill(~frame_mask, 0.0)
        spans_s, spans_f, sources = self._predict_spans(enc, relevance, texts, frame_timestamps, frame_mask, source)
        idx = torch.arange(frame_mask.shape[1], device=frame_mask.device)
        decode = (idx[None] >= spans_f[:, :1]) & (idx[None] < spans_f[:, 1:]) & frame_mask if self.config.eta \
            else frame_mask.clone()
        layer_boxes, layer_logits, _ = self._run_decoder(enc, decode)
        return BridgeSTGGroundingOutput(
            pred_span_seconds=spans_s, pred_span_frames=spans_f, pred_boxes=layer_boxes[-1] * decode.unsqueeze(-1),
            presence_scores=layer_logits[-1].sigmoid() * decode, decoder_frame_mask=decode, relevance_scores=relevance,
            span_source=sources, generated_text=texts,
        )

    def _encode_generating(self, input_ids, attention_mask, mm_token_type_ids, video_grid_thw, frame_timestamps,
                           frame_mask, pixel_values_videos, video_features, tokenizer, max_new_tokens):
        """Text mode in one pass: greedy generation of the span answer, the frame states captured from its prefill,
        then `<|im_end|>` + the bridge tokens fed on top of its cache. Returns the encoder output and the answers."""
        cfg = self.config
        _, vision_end = self._check_layout(input_ids, frame_mask, bridge=False)
        video_mask = input_ids == cfg.mllm_config.video_token_id
        with self._capture_prefill(vision_end, video_mask) as captured:
            gen = self.mllm.generate(
                input_ids=input_ids, attention_mask=attention_mask, mm_token_type_ids=mm_token_type_ids,
                video_grid_thw=video_grid_thw, mm_encoder_outputs={"video": video_features},
                **self._generation_kwargs(max_new_tokens),
            )
        self.mllm.model.rope_deltas = None
        generated = gen.sequences[:, input_ids.shape[1]:]
        texts = self._answers(generated, tokenizer)
        bridge_states = self._continue_with_bridge_tokens(gen.cache, generated, input_ids, attention_mask,
                                                          mm_token_type_ids, video_grid_thw)
        enc = self._assemble(
            bridge_states=bridge_states, group_rows=captured["groups"], groups=vision_end.sum(1),
            video_rows=captured.get("video"), video_grid_thw=video_grid_thw, frame_timestamps=frame_timestamps,
            frame_mask=frame_mask, pixel_values_videos=pixel_values_videos, video_features=video_features,
        )
        return enc, texts

    def _generation_kwargs(self, max_new_tokens: int | None) -> dict[str, Any]:
        """Greedy decoding of the span answer, up to `<|im_end|>`; the bridge tokens are never generated (we append
        them)."""
        cfg = self.config
        return dict(max_new_tokens=max_new_tokens or cfg.max_new_tokens, do_sample=False,
                    eos_token_id=self.im_end_token_id, suppress_tokens=list(cfg.bridge_token_ids),
                    pad_token_id=cfg.mllm_config.get_text_config().pad_token_id, return_dict_in_generate=True)

    def answer_tokens(self, row: Sequence[int]) -> list[int]:
        """A generated row's answer: its tokens before the first `<|im_end|>` (all of them when it has none, i.e. the
        generation was cut by its token budget)."""
        row = [int(t) for t in row]
        return row[: row.index(self.im_end_token_id)] if self.im_end_token_id in row else row

    def _answers(self, generated: torch.Tensor, tokenizer: Any) -> list[str]:
        """The decoded answers of generated token rows, each up to its `<|im_end|>`."""
        return [tokenizer.decode(self.answer_tokens(row), skip_special_tokens=True) for row in generated.tolist()]

    def _generate_shared_prefix(self, input_ids, attention_mask, mm_token_type_ids, video_grid_thw, frame_timestamps,
                                frame_mask, pixel_values_videos, video_features, tokenizer, max_new_tokens, groups):
        """Text mode for queries after the video, the video prefix prefilled once per group of `_shared_prefixes`: the
        prefix's cache is repeated for the group's queries, `generate` continues it with each query (its tokens
        left-padded after the prefix, masked) and writes the answers, then `<|im_end|>` + the bridge tokens continue the
        generation's cache. Positions are those of the full sequences (the rope deltas of the full prompts), so the
        answers and states equal `_encode_generating`'s (up to float rounding)."""
        cfg = self.config
        device = input_ids.device
        _, vision_end = self._check_layout(input_ids, frame_mask, bridge=False)
        B, L = input_ids.shape[0], cfg.bridge_num_layers
        positions, deltas = self._shared_positions(input_ids, attention_mask, mm_token_type_ids, video_grid_thw)
        row_start = _grid_rows(video_grid_thw, frame_mask)[1]  # the groups were formed by `_shared_prefixes`
        texts: list[str] = [""] * B
        bridge: list[list[torch.Tensor]] = [[None] * B for _ in range(L)]
        group_rows: list[list[torch.Tensor]] = [[None] * B for _ in range(L)]
        video_rows: list[torch.Tensor | None] = [None] * B
        for members in groups:
            first = members[0]
            prefix, P, seq = self._prefill_prefix(first, input_ids, attention_mask, mm_token_type_ids, positions,
                                                  video_grid_thw, video_features, row_start)
            cache = prefix.cache
            cache.batch_repeat_interleave(len(members))
            suffix, suffix_mask, _ = self._suffix_block(members, input_ids, attention_mask, None, P)
            head_types = mm_token_type_ids[first][attention_mask[first].bool()][:P]
            ids = torch.cat([seq[:P].expand(len(members), P), suffix], 1)
            mask = torch.cat([torch.ones(len(members), P, dtype=suffix_mask.dtype, device=device), suffix_mask], 1)
            types = torch.cat([head_types.expand(len(members), P), torch.zeros_like(suffix)], 1)
            grid = video_grid_thw[[r for i in members for r in range(row_start[i], row_start[i + 1])]]
            # the uncached tokens hold no video: generate takes their 3-D positions from these deltas (its "continue
            # from a cache" path); the mask's zeros between prefix and query are the left padding of the queries
            self.mllm.model.rope_deltas = deltas[members]
            try:
                gen = self.mllm.generate(input_ids=ids, attention_mask=mask, mm_token_type_ids=types,
                                         video_grid_thw=grid, cache=cache, **self._generation_kwargs(max_new_tokens))
            finally:
                self.mllm.model.rope_deltas = None
            generated = gen.sequences[:, ids.shape[1]:]
            for j, text in enumerate(self._answers(generated, tokenizer)):
                texts[members[j]] = text
            states = self._continue_with_bridge_tokens(gen.cache, generated, ids, mask, types, grid)
            for a in range(L):
                for j, i in enumerate(members):
                    bridge[a][i] = states[a][j]
            self._scatter_prefix_states(prefix, P, members, seq, group_rows, video_rows)
        enc = self._assemble(
            bridge_states=[torch.stack(b) for b in bridge], group_rows=[torch.cat(g) for g in group_rows],
            groups=vision_end.sum(1), video_rows=torch.cat(video_rows) if cfg.visual_memory == "llm" else None,
            video_grid_thw=video_grid_thw, frame_timestamps=frame_timestamps, frame_mask=frame_mask,
            pixel_values_videos=pixel_values_videos, video_features=video_features,
        )
        return enc, texts

    @contextmanager
    def _capture_prefill(self, vision_end: torch.Tensor, video_mask: torch.Tensor):
        """Forward hooks on the last L LLM layers (and the final norm, which gives the last of them) that keep, from
        the first call (the prefill of the prompt), the states at `<|vision_end|>` (and at the video tokens for
        `visual_memory="llm"`): the frame states of a generation without a second pass over the prompt."""
        cfg = self.config
        lm = self.mllm.model.language_model
        n, L = cfg.num_llm_layers, cfg.bridge_num_layers
        captured: dict[str, Any] = {"groups": [None] * L}
        length = vision_end.shape[1]

        def hook_for(slot: int, last: bool):
            def hook(module, args, output):
                hidden = output[0] if isinstance(output, tuple) else output
                if hidden.shape[1] != length or captured["groups"][slot] is not None:
                    return  # a decoding step, or the prefill already seen
                captured["groups"][slot] = hidden[vision_end]
                if last and cfg.visual_memory == "llm":
                    captured["video"] = hidden[video_mask]
            return hook

        # hidden_states[j] is layer j's output (1-based); the last one is after the final norm
        modules = [(lm.layers[j - 1], False) for j in range(n - L + 1, n)] + [(lm.norm, True)]
        handles = [m.register_forward_hook(hook_for(slot, last)) for slot, (m, last) in enumerate(modules)]
        try:
            yield captured
        finally:
            for h in handles:
                h.remove()
        if any(g is None for g in captured["groups"]):
            raise RuntimeError("ground(): the prefill of the prompt was not observed (generation did not run)")

    def _continue_with_bridge_tokens(self, cache, generated, input_ids, attention_mask, mm_token_type_ids,
                                     video_grid_thw) -> list[torch.Tensor]:
        """Feed, on top of a generation's cache, the tokens of the training layout not in it yet (the answer's last
        token and `<|im_end|>` where they are missing) and the K bridge tokens; return the last L layers' states at
        the bridge tokens, L tensors `(B, K, D)`.

        The cache holds the (left-padded) prompt and every generated token but the last; pads that `generate`
        appends after a sample's end are masked. Positions are those of the same tokens in the contiguous training
        sequence prompt + answer + `<|im_end|>` + bridge tokens (`compute_3d_position_ids` on it).
        """
        cfg = self.config
        device = input_ids.device
        B, T = generated.shape
        K, im_end = cfg.num_bridge_queries, self.im_end_token_id
        pad = int(cfg.mllm_config.get_text_config().pad_token_id or 0)
        bridge = list(cfg.bridge_token_ids)
        gen_mask = torch.zeros(B, T - 1, dtype=attention_mask.dtype, device=device)  # generated tokens in the cache
        cont = torch.full((B, K + 2), pad, dtype=torch.long, device=device)
        cont_mask = torch.zeros(B, K + 2, dtype=attention_mask.dtype, device=device)
        answers = []
        for i, row in enumerate(generated.tolist()):
            answer = self.answer_tokens(row) + [im_end]
            answers.append(answer)
            gen_mask[i, : min(len(answer), T - 1)] = 1
            unfed = answer[T - 1:]  # what the cache lacks: the last generated token and / or an appended <|im_end|>
            tail = unfed + bridge
            cont[i, K + 2 - len(tail):] = torch.tensor(tail, device=device)
            cont_mask[i, K + 2 - len(tail):] = 1
        ids, mask, types = self._append_bridge_tokens(input_ids, attention_mask, mm_token_type_ids, answers)
        full_positions = self.mllm.model.compute_3d_position_ids(
            input_ids=ids, inputs_embeds=None, image_grid_thw=None, video_grid_thw=video_grid_thw, cache=None,
            attention_mask=mask, mm_token_type_ids=types,
        )  # (3, B, L'): the training layout's positions
        self.mllm.model.rope_deltas = None
        positions = full_positions[..., -(K + 2):].clone()
        for i in range(B):  # masked slots: any position (they are never attended to)
            first = int((cont_mask[i] == 0).sum())
            if first:
                positions[:, i, :first] = positions[:, i, first: first + 1]
        embeds = self.stsb.embed_bridge_tokens(self.mllm.get_input_embeddings()(cont), cont, self._bridge_ids(device))
        out = self.mllm.model(
            input_ids=None, inputs_embeds=embeds, position_ids=positions, cache=cache,
            attention_mask=torch.cat([attention_mask, gen_mask, cont_mask], 1),
            mm_token_type_ids=torch.zeros_like(cont), output_hidden_states=True, use_cache=True,
        )
        self.mllm.model.rope_deltas = None
        n = cfg.num_llm_layers
        return [out.hidden_states[j][:, -K:] for j in range(n - cfg.bridge_num_layers + 1, n + 1)]

    def _append_bridge_tokens(self, input_ids, attention_mask, mm_token_type_ids, answers):
        """Prompt (unpadded) + answer + the K bridge tokens per sample, left-padded again: ids, mask, types `(B, L')`."""
        device = input_ids.device
        bridge = list(self.config.bridge_token_ids)
        seqs, types = [], []
        for i, answer in enumerate(answers):
            keep = attention_mask[i].bool()
            seqs.append(input_ids[i][keep].tolist() + answer + bridge)
            types.append(mm_token_type_ids[i][keep].tolist() + [0] * (len(answer) + len(bridge)))
        B, Lmax = len(seqs), max(len(s) for s in seqs)
        pad = int(self.config.mllm_config.get_text_config().pad_token_id or 0)
        ids = torch.full((B, Lmax), pad, dtype=torch.long, device=device)
        tt = torch.zeros((B, Lmax), dtype=torch.long, device=device)
        am = torch.zeros((B, Lmax), dtype=torch.long, device=device)
        for i, (s, t) in enumerate(zip(seqs, types)):
            ids[i, Lmax - len(s):] = torch.tensor(s, device=device)
            tt[i, Lmax - len(s):] = torch.tensor(t, device=device)
            am[i, Lmax - len(s):] = 1
        return ids, am, tt

    def _predict_spans(self, enc, relevance, texts, frame_timestamps, frame_mask, source):
        """Per sample the span in seconds `(B, 2)`, as half-open sampled-frame indices `(B, 2)`, and its source."""
        from .processing_bridge_stg import BridgeSTGProcessor

        device = frame_mask.device
        B = frame_mask.shape[0]
        spans_s = torch.zeros(B, 2, device=device)
        spans_f = torch.zeros(B, 2, dtype=torch.long, device=device)
        sources: list[str] = []
        times = frame_timestamps.float()
        for i in range(B):
            n = int(frame_mask[i].sum())
            t = times[i, :n]
            duration = sampled_duration(t, self.config.sample_fps)
            parsed = BridgeSTGProcessor.parse_answer(texts[i], duration=duration) if source == "text" else None
            if source == "frame":
                s, e = best_span(enc.span_start_logits[i, :n], enc.span_end_logits[i, :n])
                sources.append("frame")
            elif parsed is not None:
                s, e = frames_in_span(t, *parsed)
                sources.append("text")
            else:
                s, e = relevance_run(relevance[i, :n])
                sources.append("relevance_fallback")
            if parsed is None:
                parsed = span_seconds(t, s, e, duration, self.config.span_edges)
            spans_s[i] = torch.tensor(parsed)
            spans_f[i] = torch.tensor([s, e])
        return spans_s, spans_f, sources


def sampled_duration(times: torch.Tensor, sample_fps: float) -> float:
    """The seconds a sample's frames cover: the last sampled frame's timestamp plus one sampling step (`1 /
    sample_fps` when there is a single frame); the end of a span that runs past the last frame."""
    step = float(times[1] - times[0]) if times.shape[0] > 1 else 1.0 / sample_fps
    return float(times[-1]) + step


def span_seconds(times: torch.Tensor, start: int, end: int, duration: float, edges: str = "sampled") -> tuple[float, float]:
    """`[start, end)` sampled-frame indices -> `[A, B)` seconds (`config.span_edges`).

    `"sampled"`: `A = times[start]`, `B = times[end]` (`duration` when `end` is past the last frame). `"midpoint"`: each
    edge half-way between the edge frame inside the span and its neighbour outside (`times[0]` before the first frame,
    `duration` after the last)."""
    n = times.shape[0]
    after = float(times[end]) if end < n else duration
    if edges == "sampled":
        return float(times[start]), after
    before = float(times[start - 1] + times[start]) / 2 if start > 0 else float(times[0])
    return before, (float(times[end - 1]) + after) / 2 if end < n else duration


def _grid_rows(video_grid_thw: torch.Tensor, frame_mask: torch.Tensor | None) -> tuple[list[int], list[int]]:
    """Grid rows (temporal groups) per sample, from `frame_mask` `(B, F)` (without it every row is its own sample), and
    the first grid row of every sample (with the total at the end)."""
    rows_per_sample = ([1] * int(video_grid_thw.shape[0]) if frame_mask is None
                       else [int(n) for n in ((frame_mask.sum(1) + 1) // 2).tolist()])
    row_start = [0]
    for n in rows_per_sample:
        row_start.append(row_start[-1] + n)
    return rows_per_sample, row_start


def select_video_rows(features: Any, rows: list[int]) -> Any:
    """The vision encoder's output restricted / repeated to the grid rows ``rows`` (in that order): per-row fields
    (``pooler_output``, Qwen3-VL's ``deepstack_features``) are re-indexed; ``last_hidden_state`` (per patch, not
    used by the MLLM's forward) is dropped."""
    out = copy.copy(features)
    out["pooler_output"] = tuple(features.pooler_output[r] for r in rows)
    if getattr(features, "deepstack_features", None) is not None:
        out["deepstack_features"] = [tuple(layer[r] for r in rows) for layer in features.deepstack_features]
    out["last_hidden_state"] = None
    return out


def _scatter_slots(values: torch.Tensor, order: torch.Tensor, slot_valid: torch.Tensor, num_frames: int) -> torch.Tensor:
    """`(Ld, B, S, ...)` per decoder slot -> `(Ld, B, F, ...)` per frame (zeros where the decoder did not run)."""
    Ld, B, S = values.shape[:3]
    index = order.masked_fill(~slot_valid, num_frames)  # invalid slots go to a dummy last column
    index = index[None].reshape(1, B, S, *([1] * (values.dim() - 3))).expand_as(values)
    out = values.new_zeros(Ld, B, num_frames + 1, *values.shape[3:]).scatter(2, index, values)
    return out[:, :, :num_frames]


# ----------------------------------------------------------------------------- span helpers
def frames_in_span(times: torch.Tensor, start_s: float, end_s: float) -> tuple[int, int]:
    """ETA frame selection: the sampled frames with `start_s <= t < end_s`, as half-open indices `[first, last + 1)`;
    if none, the frame nearest the middle of the span."""
    inside = ((times >= start_s) & (times < end_s)).nonzero().flatten()
    if inside.numel():
        return int(inside[0]), int(inside[-1]) + 1
    nearest = int((times - (start_s + end_s) / 2).abs().argmin())
    return nearest, nearest + 1


def best_span(start: torch.Tensor, end: torch.Tensor) -> tuple[int, int]:
    """Half-open indices `[s, e + 1)`, `s <= e`, maximising `start[s] + end[e]`."""
    n = start.shape[0]
    score = start[:, None] + end[None, :]
    score = score.masked_fill(torch.ones(n, n, dtype=torch.bool, device=start.device).tril(-1), float("-inf"))
    flat = int(score.argmax())
    return flat // n, flat % n + 1


def relevance_run(prob: torch.Tensor, threshold: float = 0.5) -> tuple[int, int]:
    """The contiguous run of frames with relevance >= threshold around the arg-max frame (docs/method.md §3.11),
    as half-open indices."""
    best = int(prob.argmax())
    s = e = best
    while s > 0 and prob[s - 1] >= threshold:
        s -= 1
    while e + 1 < prob.shape[0] and prob[e + 1] >= threshold:
        e += 1
    return s, e + 1


__all__ = [
    "SPAN_SOURCES",
    "BridgeSTGModelOutput",
    "BridgeSTGGroundingOutput",
    "BridgeSTGPreTrainedModel",
    "BridgeSTGForVideoGrounding",
    "sample_decoder_frames",
]
