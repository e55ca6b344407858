"""Bridge-STG: a Qwen-VL temporal MLLM, bridging queries (STSB + ETA) and a query-guided spatial decoder (QGSL).

Self-contained remote code: imports only torch, transformers and sibling files (relative imports).

Read in build order: output dataclasses -> small box/span functions -> bridge (STSB, ETA) -> decoder
(QGSL) -> losses -> ``BridgeSTGPreTrainedModel`` -> ``BridgeSTGForVideoGrounding``.

Shape notation: B batch, L tokens, F sampled frames (padded), G temporal groups, S frames selected for
the decoder (padded), K bridge queries, M memory tokens per frame (padded), D LLM width, d decoder width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForImageTextToText, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput, logging

from .configuration_bridge_stg import BridgeSTGConfig
from .processing_bridge_stg import BridgeSTGProcessor, parse_coupled_answer


logger = logging.get_logger(__name__)

#: generation budget per sampled frame of the coupled baseline: a box line such as "<12.5s>: (1000,1000,1000,1000)"
#: takes up to 28 tokens with the Qwen tokenizer and 31 with the compact one (digits are single tokens)
COUPLED_TOKENS_PER_FRAME = 36

TASK_IDS = {"stvg": 0, "tvg": 1, "rec": 2}


# ----------------------------------------------------------------------------- outputs
@dataclass
class BridgeSTGModelOutput(ModelOutput):
    """
    Output of [`BridgeSTGForVideoGrounding.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): weighted sum of the component losses.
        loss_lm, loss_l1, loss_giou, loss_present, loss_relevance, loss_contrastive, loss_span (`()`):
            the unweighted component losses (0 where a term has nothing to apply to).
        pred_boxes (`(B, F, 4)`): last decoder layer boxes, normalised `(cx, cy, w, h)` relative to the full
            frame, on the sampled frames the decoder ran on (zeros elsewhere). Use
            `BridgeSTGProcessor.post_process_grounding` for pixel boxes in original frame numbers.
        present_logits (`(B, F)`): "target present" logits of the last decoder layer.
        decoded_frame_mask (`(B, F)` bool): frames the decoder ran on.
        layer_boxes (`(num_layers, B, F, 4)`), layer_present_logits (`(num_layers, B, F)`): deep supervision.
        span_start_logits, span_end_logits (`(B, F)`): per-frame temporal logits (-inf on padding).
        relevance_logits (`(B, F)`): frame relevance `alpha * cos(g, e_f) + beta`.
        bridge_queries (`(B, K, d)`): the bridging queries Q_b.
    """

    loss: torch.FloatTensor | None = None
    loss_lm: torch.FloatTensor | None = None
    loss_l1: torch.FloatTensor | None = None
    loss_giou: torch.FloatTensor | None = None
    loss_present: torch.FloatTensor | None = None
    loss_relevance: torch.FloatTensor | None = None
    loss_contrastive: torch.FloatTensor | None = None
    loss_span: torch.FloatTensor | None = None
    pred_boxes: torch.FloatTensor | None = None
    present_logits: torch.FloatTensor | None = None
    decoded_frame_mask: torch.BoolTensor | None = None
    layer_boxes: torch.FloatTensor | None = None
    layer_present_logits: torch.FloatTensor | None = None
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
        pred_span_frames (`(B, 2)` long): first and last sampled-frame index (inclusive) of the span.
        pred_boxes (`(B, F, 4)`): normalised `(cx, cy, w, h)` on the decoded frames (zeros elsewhere).
        pred_scores (`(B, F)`): `sigmoid(present_logit)` on the decoded frames (0 elsewhere).
        decoded_frame_mask (`(B, F)` bool): frames the decoder ran on (ETA: the sampled frames in the span).
        relevance_scores (`(B, F)`): sigmoid of the frame relevance logits.
        span_source (`list[str]`): `"text"`, `"frame"` or `"relevance_fallback"` per sample.
        generated_text (`list[str]`): the MLLM's answer per sample (text mode; empty otherwise).
        num_malformed (`list[int]`, *optional*): coupled baseline only: malformed lines per sample in the
            generated text (see `parse_coupled_answer`); an unparsable answer gives an empty tube and
            `span_source="unparsable"`.
    """

    pred_span_seconds: torch.FloatTensor | None = None
    pred_span_frames: torch.LongTensor | None = None
    pred_boxes: torch.FloatTensor | None = None
    pred_scores: torch.FloatTensor | None = None
    decoded_frame_mask: torch.BoolTensor | None = None
    relevance_scores: torch.FloatTensor | None = None
    span_source: list[str] | None = None
    generated_text: list[str] | None = None
    num_malformed: list[int] | None = None


# ----------------------------------------------------------------------------- box helpers
def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """`(..., 4)` (cx, cy, w, h) -> (x1, y1, x2, y2)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def generalized_box_iou_pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GIoU of matching rows of `a` and `b`, both `(N, 4)` xyxy. Degenerate boxes give finite values."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, :2], b[:, :2])
    rb = torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a + area_b - inter
    iou = inter / union.clamp(min=1e-7)
    lt_c = torch.min(a[:, :2], b[:, :2])
    rb_c = torch.max(a[:, 2:], b[:, 2:])
    area_c = (rb_c - lt_c).clamp(min=0).prod(-1)
    return iou - (area_c - union) / area_c.clamp(min=1e-7)


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


# ----------------------------------------------------------------------------- STSB / ETA
class BridgeSTGLayerFusion(nn.Module):
    """Softmax-weighted fusion of the last L LLM layers (weights start uniform)."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))

    def forward(self, layer_states: list[torch.Tensor]) -> torch.Tensor:
        weights = self.layer_logits.softmax(0)
        fused = weights[0] * layer_states[0]
        for w, s in zip(weights[1:], layer_states[1:]):
            fused = fused + w * s
        return fused


class BridgeSTGBridge(nn.Module):
    """STSB + ETA: bridging queries from the bridge-token states, frame-aligned query positions.

    Owns the K learned bridge-token input embeddings (written into `inputs_embeds`), so freezing or
    LoRA-adapting the LLM never freezes them.
    """

    def __init__(self, config: BridgeSTGConfig):
        super().__init__()
        D, d, K = config.llm_hidden_size, config.decoder_hidden_size, config.num_bridge_queries
        self.bridge_embeddings = nn.Parameter(torch.zeros(K, D))
        self.bridge_fusion = BridgeSTGLayerFusion(config.bridge_num_layers)
        self.frame_fusion = BridgeSTGLayerFusion(config.bridge_num_layers)
        self.query_proj = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, d), nn.GELU(), nn.Linear(d, d))
        self.frame_state_proj = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, d))
        self.time_proj = nn.Linear(d, d)
        self.query_embed = nn.Parameter(torch.zeros(K, d))  # distinguishes the K query slots
        self.hidden = d

    def time_embedding(self, seconds: torch.Tensor) -> torch.Tensor:
        """`(...,)` seconds -> `(..., d)`."""
        return self.time_proj(sine_embedding(seconds, self.hidden, scale=4.0).to(self.time_proj.weight.dtype))


class BridgeSTGVisualMemory(nn.Module):
    """Per-frame decoder memory: `Linear(D, d) + LayerNorm` of the merged visual tokens of the frame's group."""

    def __init__(self, config: BridgeSTGConfig):
        super().__init__()
        self.proj = nn.Linear(config.llm_hidden_size, config.decoder_hidden_size)
        self.norm = nn.LayerNorm(config.decoder_hidden_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(tokens))


# ----------------------------------------------------------------------------- QGSL decoder
class BridgeSTGAttention(nn.Module):
    """Multi-head attention on SDPA. `key_padding_mask` is True where a key is valid."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(hidden, hidden)
        self.k_proj = nn.Linear(hidden, hidden)
        self.v_proj = nn.Linear(hidden, hidden)
        self.o_proj = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        # q (N, Tq, d), k/v (N, Tk, d), key_valid (N, Tk)
        N, Tq, d = q.shape
        h = self.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(N, -1, h, d // h).transpose(1, 2)  # (N, h, T, d/h)

        mask = None
        if key_valid is not None:
            mask = key_valid[:, None, None, :]  # (N, 1, 1, Tk)
        out = F.scaled_dot_product_attention(
            split(self.q_proj(q)), split(self.k_proj(k)), split(self.v_proj(v)), attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        out = out.transpose(1, 2).reshape(N, Tq, d)
        return self.o_proj(out)


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
        memory: torch.Tensor,  # (B, S, M, d)
        memory_pos: torch.Tensor,  # (B, S, M, d)
        memory_valid: torch.Tensor,  # (B, S, M) bool
    ) -> torch.Tensor:
        B, S, K, d = x.shape
        M = memory.shape[2]
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
        # 3. cross-attention from frame f's queries to frame f's memory
        q = (x + pos).reshape(B * S, K, d)
        mv = memory_valid.reshape(B * S, M)
        mv = mv | ~mv.any(-1, keepdim=True)
        y = self.cross_attn(q, (memory + memory_pos).reshape(B * S, M, d), memory.reshape(B * S, M, d), mv)
        x = self.norm3(x + self.dropout(y.view(B, S, K, d)))
        # 4. FFN
        x = self.norm4(x + self.dropout(self.ffn(x)))
        return x


class BridgeSTGHeads(nn.Module):
    """Shared per-layer heads: attention-pool the K queries, predict a box and a "present" logit.

    Box head `reference_point`: every memory token proposes a box centred near its own grid cell
    (offset bounded by tanh to about one cell) and the pooled query's attention over the tokens
    weights the proposals. `mlp`: a 3-layer MLP on the pooled embedding.
    """

    def __init__(self, config: BridgeSTGConfig):
        super().__init__()
        d = config.decoder_hidden_size
        self.box_head_type = config.box_head
        self.pool = nn.Linear(d, 1)
        self.present = nn.Linear(d, 1)
        if self.box_head_type == "mlp":
            self.box_mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 4))
        else:
            self.ref_query = nn.Linear(d, d)
            self.ref_key = nn.Linear(d, d)
            self.ref_cond = nn.Linear(d, d)
            self.ref_mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 4))

    def forward(
        self,
        x: torch.Tensor,  # (B, S, K, d)
        memory: torch.Tensor,  # (B, S, M, d)
        memory_valid: torch.Tensor,  # (B, S, M)
        cell_centres: torch.Tensor,  # (B, S, M, 2) normalised (cx, cy)
        cell_sizes: torch.Tensor,  # (B, S, 2) normalised (w, h) of one grid cell
    ) -> tuple[torch.Tensor, torch.Tensor]:
        attn = self.pool(x).squeeze(-1).softmax(-1)  # (B, S, K)
        h = (attn.unsqueeze(-1) * x).sum(2)  # (B, S, d)
        present = self.present(h).squeeze(-1)  # (B, S)
        if self.box_head_type == "mlp":
            return self.box_mlp(h).sigmoid(), present
        d = h.shape[-1]
        scores = torch.einsum("bsd,bsmd->bsm", self.ref_query(h), self.ref_key(memory)) / math.sqrt(d)
        scores = scores.masked_fill(~memory_valid, torch.finfo(scores.dtype).min)
        weights = scores.softmax(-1)  # (B, S, M)
        raw = self.ref_mlp(F.relu(memory + self.ref_cond(h).unsqueeze(2)))  # (B, S, M, 4)
        centre = cell_centres + torch.tanh(raw[..., :2]) * cell_sizes.unsqueeze(2)
        size = raw[..., 2:].sigmoid()
        token_boxes = torch.cat([centre, size], dim=-1)
        boxes = (weights.unsqueeze(-1) * token_boxes).sum(2).clamp(0.0, 1.0)
        return boxes, present


class BridgeSTGDecoder(nn.Module):
    """The QGSL spatial decoder with deep supervision (heads shared across layers)."""

    def __init__(self, config: BridgeSTGConfig):
        super().__init__()
        self.layers = nn.ModuleList(BridgeSTGDecoderLayer(config) for _ in range(config.decoder_layers))
        self.gradient_checkpointing = False

    def forward(self, pos, frame_valid, memory, memory_pos, memory_valid, heads, cell_centres, cell_sizes):
        x = pos
        boxes, presents = [], []
        for layer in self.layers:
            x = layer(x, pos, frame_valid, memory, memory_pos, memory_valid)
            b, p = heads(x, memory, memory_valid, cell_centres, cell_sizes)
            boxes.append(b)
            presents.append(p)
        return torch.stack(boxes), torch.stack(presents)  # (layers, B, S, 4), (layers, B, S)


class BridgeSTGTemporalHead(nn.Module):
    """Per-frame span logits (start, end) and frame relevance from the frame-aligned states.

    One transformer encoder layer across frames gives each frame its temporal context before the
    start/end logits are read; relevance is `alpha * cos(g, e_f) + beta` (METHOD §3.8).
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
        self.rel_beta = nn.Parameter(torch.tensor(-5.0))

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
        relevance = self.rel_alpha * cos + self.rel_beta
        return start, end, relevance, cos


class BridgeSTGHeadsContainer(nn.Module):
    """All trainable parts outside the MLLM besides bridge and decoder (unique name for PEFT's modules_to_save)."""

    def __init__(self, config: BridgeSTGConfig):
        super().__init__()
        self.memory = BridgeSTGVisualMemory(config)
        self.box_heads = BridgeSTGHeads(config)
        self.temporal = BridgeSTGTemporalHead(config)


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
        if isinstance(module, nn.Linear):
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
        elif isinstance(module, BridgeSTGBridge):
            init.normal_(module.bridge_embeddings, mean=0.0, std=std)
            init.normal_(module.query_embed, mean=0.0, std=std)
            # the time of a frame is the only thing telling apart the two frames of a temporal group:
            # keep its embedding at unit scale instead of the tiny default init
            init.normal_(module.time_proj.weight, mean=0.0, std=module.hidden**-0.5)
        elif isinstance(module, BridgeSTGTemporalHead):
            init.constant_(module.rel_alpha, 10.0)
            init.constant_(module.rel_beta, -5.0)


# ----------------------------------------------------------------------------- the model
class BridgeSTGForVideoGrounding(BridgeSTGPreTrainedModel):
    r"""
    Bridge-STG for spatio-temporal video grounding.

    The MLLM (`self.mllm`, a Qwen2.5-VL / Qwen3-VL `*ForConditionalGeneration`) reads the query and the
    timestamped frame groups and answers the span as text ("From 3.0s to 7.5s."). K bridge tokens after
    the answer are distilled from its last L layers into bridging queries (`self.stg_bridge`); explicit
    temporal alignment places them on the frames of the span; the QGSL decoder (`self.stg_decoder`,
    heads in `self.stg_heads`) regresses one box and a presence score per frame.

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
    ['boxes', 'frames', 'scores', 'span', 'span_source']
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
        self.stg_bridge = BridgeSTGBridge(config)
        self.stg_decoder = BridgeSTGDecoder(config)
        self.stg_heads = BridgeSTGHeadsContainer(config)
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

    # ------------------------------------------------------------------ shared encoder pass
    def _bridge_ids(self, device: torch.device) -> torch.Tensor:
        if self.config.bridge_token_ids is None:
            raise ValueError(
                "bridge_token_ids: not set in the config; add <bridge_i> tokens to the tokenizer and pass their ids"
            )
        return torch.tensor(self.config.bridge_token_ids, device=device)

    def _encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mm_token_type_ids: torch.Tensor,
        video_grid_thw: torch.Tensor,
        frame_timestamps: torch.Tensor,
        frame_mask: torch.Tensor,
        pixel_values_videos: torch.Tensor | None = None,
        video_features: Any | None = None,
    ) -> dict[str, Any]:
        """One MLLM forward; returns last-layer states, bridging queries, frame states and memory."""
        cfg = self.config
        B, Lt = input_ids.shape
        device = input_ids.device
        bridge_ids = self._bridge_ids(device)
        is_bridge = torch.isin(input_ids, bridge_ids)
        counts = is_bridge.sum(1)
        if bool((counts != cfg.num_bridge_queries).any()):
            raise ValueError(
                f"input_ids: every sample needs exactly {cfg.num_bridge_queries} bridge tokens, got {counts.tolist()}"
            )
        if video_features is None:
            video_features = self.mllm.model.get_video_features(pixel_values_videos, video_grid_thw, return_dict=True)
        embeds = self.mllm.get_input_embeddings()(input_ids)
        # bridge tokens take their embeddings from the bridge module (trainable even with a frozen LLM)
        slot = (input_ids.unsqueeze(-1) == bridge_ids).float().argmax(-1)  # (B, L)
        bridge_emb = self.stg_bridge.bridge_embeddings.to(embeds.dtype)[slot]
        embeds = torch.where(is_bridge.unsqueeze(-1), bridge_emb, embeds)
        n_layers = cfg.num_llm_layers
        wanted = list(range(n_layers - cfg.bridge_num_layers + 1, n_layers + 1))  # hidden_states index (0 = embeddings)
        # 3-D M-RoPE positions from the token ids, then a forward on the embeddings alone (Qwen3-VL accepts
        # exactly one of input_ids / inputs_embeds; video placeholders keep their token embedding)
        position_ids = self.mllm.model.compute_3d_position_ids(
            input_ids=input_ids, inputs_embeds=embeds, image_grid_thw=None, video_grid_thw=video_grid_thw, cache=None,
            attention_mask=attention_mask, mm_token_type_ids=mm_token_type_ids,
        )
        self.mllm.model.rope_deltas = None
        out = self.mllm.model(
            input_ids=None,
            position_ids=position_ids,
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            mm_token_type_ids=mm_token_type_ids,
            video_grid_thw=video_grid_thw,
            mm_encoder_outputs={"video": video_features},
            output_hidden_states=True,
            use_cache=False,
        )
        self.mllm.model.rope_deltas = None
        layer_states = [out.hidden_states[i] for i in wanted]  # L x (B, Lt, D)
        # bridging queries Q_b (B, K, d)
        fused_bridge = self.stg_bridge.bridge_fusion([s[is_bridge].view(B, cfg.num_bridge_queries, -1) for s in layer_states])
        queries = self.stg_bridge.query_proj(fused_bridge)
        # frame-aligned group states s_g at every <|vision_end|>
        vend = input_ids == cfg.mllm_config.vision_end_token_id
        groups_per_sample = vend.sum(1)  # (B,)
        expected = (frame_mask.sum(1) + 1) // 2
        if bool((groups_per_sample != expected).any()):
            raise ValueError(
                f"input_ids: <|vision_end|> count {groups_per_sample.tolist()} does not match the temporal groups "
                f"implied by frame_mask {expected.tolist()}"
            )
        G = int(groups_per_sample.max())
        group_valid = torch.arange(G, device=device)[None] < groups_per_sample[:, None]  # (B, G)
        fused_groups = self.stg_bridge.frame_fusion([s[vend] for s in layer_states])  # (ΣG, D)
        group_states = fused_groups.new_zeros(B, G, fused_groups.shape[-1])
        group_states[group_valid] = fused_groups
        Fmax = frame_mask.shape[1]
        frame_group = (torch.arange(Fmax, device=device) // 2).clamp(max=G - 1)  # (F,)
        frame_states = self.stg_bridge.frame_state_proj(group_states[:, frame_group])  # (B, F, d)
        times = self.stg_bridge.time_embedding(frame_timestamps.to(frame_states.dtype))  # (B, F, d)
        # visual memory per group, padded to M tokens
        if cfg.visual_memory == "vision":
            group_tokens = list(video_features.pooler_output)
        else:
            vid_states = out.hidden_states[-1][input_ids == cfg.mllm_config.video_token_id]
            sizes = [int(t * h * w) // cfg.spatial_merge_size**2 for t, h, w in video_grid_thw.tolist()]
            group_tokens = list(torch.split(vid_states, sizes))
        merge = cfg.spatial_merge_size
        grid_hw = [(int(h) // merge, int(w) // merge) for _, h, w in video_grid_thw.tolist()]
        M = max(t.shape[0] for t in group_tokens)
        d = cfg.decoder_hidden_size
        memory = frame_states.new_zeros(B, G, M, d)
        memory_pos = frame_states.new_zeros(B, G, M, d)
        memory_valid = torch.zeros(B, G, M, dtype=torch.bool, device=device)
        centres = frame_states.new_zeros(B, G, M, 2)
        cells = frame_states.new_ones(B, G, 2)
        flat_index = torch.nonzero(group_valid)  # (ΣG, 2) sample, group, in grid-row order
        projected = self.stg_heads.memory(torch.cat(group_tokens, 0).to(frame_states.dtype))
        offsets = [0]
        for t in group_tokens:
            offsets.append(offsets[-1] + t.shape[0])
        pos_cache: dict[tuple[int, int], torch.Tensor] = {}
        for row, (b, g) in enumerate(flat_index.tolist()):
            gh, gw = grid_hw[row]
            n = gh * gw
            memory[b, g, :n] = projected[offsets[row] : offsets[row] + n]
            if (gh, gw) not in pos_cache:
                pos_cache[(gh, gw)] = grid_sine_embedding(gh, gw, d, device).to(frame_states.dtype)
            memory_pos[b, g, :n] = pos_cache[(gh, gw)]
            memory_valid[b, g, :n] = True
            ys = (torch.arange(gh, device=device, dtype=frame_states.dtype) + 0.5) / gh
            xs = (torch.arange(gw, device=device, dtype=frame_states.dtype) + 0.5) / gw
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            centres[b, g, :n] = torch.stack([xx.flatten(), yy.flatten()], -1)
            cells[b, g] = torch.tensor([1.0 / gw, 1.0 / gh], device=device, dtype=frame_states.dtype)
        memory_mean = (memory * memory_valid.unsqueeze(-1)).sum(2) / memory_valid.sum(2, keepdim=True).clamp(min=1)
        start, end, relevance, cos = self.stg_heads.temporal(
            frame_states, times, queries, frame_mask, memory_mean[:, frame_group]
        )
        return dict(
            out=out, queries=queries, frame_states=frame_states, times=times, frame_group=frame_group,
            memory=memory, memory_pos=memory_pos, memory_valid=memory_valid, centres=centres, cells=cells,
            span_start=start, span_end=end, relevance=relevance, cos=cos, video_features=video_features,
        )

    def _run_decoder(self, enc: dict[str, Any], decode_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run QGSL on the frames of `decode_mask` (B, F). Returns layer boxes (Ld, B, F, 4) and logits (Ld, B, F)."""
        B, Fmax = decode_mask.shape
        device = decode_mask.device
        S = max(int(decode_mask.sum(1).max()), 1)
        # pack the selected frames of each sample to the front: frame index per slot (B, S)
        order = torch.argsort((~decode_mask).to(torch.int8), dim=1, stable=True)[:, :S]
        slot_valid = torch.gather(decode_mask, 1, order)
        bidx = torch.arange(B, device=device)[:, None]
        groups = enc["frame_group"][order]  # (B, S)
        times = enc["times"][bidx, order]  # (B, S, d)
        fstate = enc["frame_states"][bidx, order]
        # ETA: P_f^k = Q_b^k + TimeEmb(t_f) + W_s s_g(f) (+ a learned slot embedding)
        pos = (enc["queries"] + self.stg_bridge.query_embed).unsqueeze(1) + (times + fstate).unsqueeze(2)  # (B,S,K,d)
        memory = enc["memory"][bidx, groups]
        memory_pos = enc["memory_pos"][bidx, groups]
        memory_valid = enc["memory_valid"][bidx, groups]
        centres = enc["centres"][bidx, groups]
        cells = enc["cells"][bidx, groups]
        boxes, presents = self.stg_decoder(
            pos, slot_valid, memory, memory_pos, memory_valid, self.stg_heads.box_heads, centres, cells
        )
        n_layers = boxes.shape[0]
        full_boxes = boxes.new_zeros(n_layers, B, Fmax, 4)
        full_logits = presents.new_zeros(n_layers, B, Fmax)
        scatter_idx = order.masked_fill(~slot_valid, Fmax)  # invalid slots go to a dummy column
        full_boxes = torch.cat([full_boxes, full_boxes[:, :, :1]], 2).scatter(
            2, scatter_idx[None, :, :, None].expand(n_layers, B, S, 4), boxes
        )[:, :, :Fmax]
        full_logits = torch.cat([full_logits, full_logits[:, :, :1]], 2).scatter(
            2, scatter_idx[None].expand(n_layers, B, S), presents
        )[:, :, :Fmax]
        return full_boxes, full_logits

    # ------------------------------------------------------------------ training forward
    def _sample_decoder_frames(self, frame_labels: torch.Tensor, frame_mask: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """Positives (frames in the GT span, up to `num_positive_frames`) + negatives (up to `num_negative_frames`)."""
        cfg = self.config
        B, Fmax = frame_mask.shape
        if not cfg.eta:
            sel = frame_mask.clone()
        else:
            rand = torch.rand(B, Fmax, device=frame_mask.device)
            pos = (frame_labels == 1) & frame_mask
            neg = (frame_labels == 0) & frame_mask
            sel = torch.zeros_like(frame_mask)
            for mask, limit in ((pos, cfg.num_positive_frames), (neg, cfg.num_negative_frames)):
                if limit == 0:
                    continue
                score = torch.where(mask, rand, torch.full_like(rand, 2.0))
                rank = score.argsort(1).argsort(1)
                sel |= mask & (rank < limit)
        sel &= (task_ids != TASK_IDS["tvg"]).unsqueeze(1)
        return sel

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
            decoder_frame_mask (`(B, F)`): frames for the decoder; sampled from `frame_labels` when absent.
            task_ids (`(B,)`): 0 stvg, 1 tvg (no decoder), 2 rec (no LM / relevance / span losses).

        Without targets (`frame_labels is None`) the decoder runs over every valid frame and no loss is computed.
        """
        cfg = self.config
        if cfg.grounding_mode == "coupled":
            return self._coupled_forward(input_ids, attention_mask, mm_token_type_ids, pixel_values_videos,
                                         video_grid_thw, labels)
        if frame_mask is None or frame_timestamps is None or video_grid_thw is None:
            raise ValueError("forward needs frame_timestamps, frame_mask and video_grid_thw (use BridgeSTGProcessor)")
        frame_mask = frame_mask.bool()
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if mm_token_type_ids is None:
            raise ValueError("mm_token_type_ids: required for the 3-D positions of the video tokens")
        B = input_ids.shape[0]
        if task_ids is None:
            task_ids = torch.zeros(B, dtype=torch.long, device=input_ids.device)
        enc = self._encode(
            input_ids, attention_mask, mm_token_type_ids, video_grid_thw, frame_timestamps, frame_mask,
            pixel_values_videos=pixel_values_videos,
        )
        has_targets = frame_labels is not None
        if decoder_frame_mask is not None:
            decode = decoder_frame_mask.bool() & frame_mask
        elif has_targets:
            decode = self._sample_decoder_frames(frame_labels, frame_mask, task_ids)
        else:
            decode = frame_mask
        layer_boxes, layer_logits = self._run_decoder(enc, decode)
        zero = layer_boxes.sum() * 0.0
        losses = dict(loss_lm=zero, loss_l1=zero, loss_giou=zero, loss_present=zero, loss_relevance=zero,
                      loss_contrastive=zero, loss_span=zero)
        if labels is not None:
            losses["loss_lm"] = self._lm_loss(enc["out"].last_hidden_state, labels)
        if has_targets:
            losses.update(self._grounding_losses(enc, layer_boxes, layer_logits, decode, frame_mask, frame_labels,
                                                 target_boxes, target_box_mask, task_ids))
        loss = None
        if labels is not None or has_targets:
            loss = (
                cfg.loss_lm_weight * losses["loss_lm"] + cfg.loss_l1_weight * losses["loss_l1"]
                + cfg.loss_giou_weight * losses["loss_giou"] + cfg.loss_present_weight * losses["loss_present"]
                + cfg.loss_relevance_weight * losses["loss_relevance"]
                + cfg.loss_contrastive_weight * losses["loss_contrastive"] + cfg.loss_span_weight * losses["loss_span"]
            )
        return BridgeSTGModelOutput(
            loss=loss, **losses,
            pred_boxes=layer_boxes[-1], present_logits=layer_logits[-1], decoded_frame_mask=decode,
            layer_boxes=layer_boxes, layer_present_logits=layer_logits,
            span_start_logits=enc["span_start"], span_end_logits=enc["span_end"],
            relevance_logits=enc["relevance"], bridge_queries=enc["queries"],
        )

    def _coupled_forward(self, input_ids, attention_mask, mm_token_type_ids, pixel_values_videos, video_grid_thw,
                         labels) -> BridgeSTGModelOutput:
        """Coupled baseline: the MLLM alone on prompt + text answer (span + per-frame boxes); LM loss only."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.mllm.model(
            input_ids=input_ids, attention_mask=attention_mask, mm_token_type_ids=mm_token_type_ids,
            pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw, use_cache=False,
        )
        self.mllm.model.rope_deltas = None
        hidden = out.last_hidden_state
        lm = self._lm_loss(hidden, labels) if labels is not None else None
        zero = hidden.sum() * 0.0
        return BridgeSTGModelOutput(
            loss=None if lm is None else self.config.loss_lm_weight * lm, loss_lm=lm if lm is not None else zero,
            loss_l1=zero, loss_giou=zero, loss_present=zero, loss_relevance=zero, loss_contrastive=zero, loss_span=zero,
        )

    @torch.no_grad()
    def _ground_coupled(self, input_ids, attention_mask, mm_token_type_ids, pixel_values_videos, video_grid_thw,
                        frame_timestamps, frame_mask, tokenizer, max_new_tokens, min_new_tokens) -> BridgeSTGGroundingOutput:
        """Coupled baseline inference: generate span + one box per frame as text, parse it back to a tube."""
        cfg = self.config
        if tokenizer is None:
            raise ValueError("ground(): the coupled baseline needs `tokenizer=` to read the generated boxes")
        device = input_ids.device
        frame_mask = frame_mask.bool()
        B, Fmax = frame_mask.shape
        text_cfg = cfg.mllm_config.get_text_config()
        im_end = int(text_cfg.eos_token_id[0] if isinstance(text_cfg.eos_token_id, list) else text_cfg.eos_token_id)
        budget = max_new_tokens or (cfg.max_new_tokens + COUPLED_TOKENS_PER_FRAME * Fmax)
        extra = {"min_new_tokens": int(min_new_tokens)} if min_new_tokens else {}
        gen = self.mllm.generate(
            input_ids=input_ids, attention_mask=attention_mask, mm_token_type_ids=mm_token_type_ids,
            pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw, max_new_tokens=budget,
            do_sample=False, eos_token_id=im_end, pad_token_id=text_cfg.pad_token_id,
            suppress_tokens=list(cfg.bridge_token_ids or []) or None, **extra,
        )
        self.mllm.model.rope_deltas = None
        new = gen[:, input_ids.shape[1]:]
        spans_s = torch.zeros(B, 2, device=device)
        spans_f = torch.zeros(B, 2, dtype=torch.long, device=device)
        boxes = torch.zeros(B, Fmax, 4, device=device)
        decode = torch.zeros(B, Fmax, dtype=torch.bool, device=device)
        texts, sources, malformed = [], [], []
        for i in range(B):
            toks = new[i].tolist()
            if im_end in toks and not min_new_tokens:
                toks = toks[: toks.index(im_end)]
            texts.append(tokenizer.decode(toks, skip_special_tokens=True))
            n = int(frame_mask[i].sum())
            t = frame_timestamps[i, :n].float()
            step = float(t[1] - t[0]) if n > 1 else 1.0 / cfg.sample_fps
            duration = float(t[-1]) + step
            span, fboxes, bad = parse_coupled_answer(texts[i], t.tolist(), duration)
            malformed.append(bad)
            if span is None and fboxes:
                ks = sorted(fboxes)
                span = (float(t[ks[0]]), float(t[ks[-1]]) + step)
                sources.append("coupled_boxes")
            elif span is not None:
                sources.append("coupled" if fboxes else "coupled_no_boxes")
            else:
                sources.append("unparsable")
            if span is None:
                continue  # empty tube: no decoded frame, zero boxes
            a, b = span
            s, e = _frames_in_span(t, a, b)
            spans_s[i] = torch.tensor([a, b])
            spans_f[i] = torch.tensor([s, e])
            for k, box in fboxes.items():
                boxes[i, k] = torch.tensor(box, device=device)
                decode[i, k] = True
        return BridgeSTGGroundingOutput(
            pred_span_seconds=spans_s, pred_span_frames=spans_f, pred_boxes=boxes, pred_scores=decode.float(),
            decoded_frame_mask=decode, relevance_scores=torch.zeros(B, Fmax, device=device), span_source=sources,
            generated_text=texts, num_malformed=malformed,
        )

    def _lm_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the answer tokens only (logits computed just where a label exists)."""
        shift_labels = labels[:, 1:]
        mask = shift_labels != -100
        if not bool(mask.any()):
            return hidden.sum() * 0.0
        logits = self.mllm.lm_head(hidden[:, :-1][mask])
        return F.cross_entropy(logits.float(), shift_labels[mask])

    def _grounding_losses(self, enc, layer_boxes, layer_logits, decode, frame_mask, frame_labels, target_boxes,
                          target_box_mask, task_ids) -> dict[str, torch.Tensor]:
        cfg = self.config
        out: dict[str, torch.Tensor] = {}
        zero = layer_boxes.sum() * 0.0
        frame_labels = frame_labels.long()
        positive = (frame_labels == 1) & frame_mask
        # box losses: positive decoded frames with a GT box, every decoder layer, equal weights
        if target_boxes is not None and target_box_mask is not None:
            box_sel = decode & positive & target_box_mask.bool()
        else:
            box_sel = torch.zeros_like(decode)
        if bool(box_sel.any()):
            gt = target_boxes[box_sel].to(layer_boxes.dtype)  # (N, 4)
            pred = layer_boxes[:, box_sel]  # (Ld, N, 4)
            out["loss_l1"] = (pred - gt).abs().sum(-1).mean(-1).sum()
            giou = [generalized_box_iou_pairwise(box_cxcywh_to_xyxy(p), box_cxcywh_to_xyxy(gt)) for p in pred]
            out["loss_giou"] = torch.stack([(1 - g).mean() for g in giou]).sum()
        else:
            out["loss_l1"] = out["loss_giou"] = zero
        # present: every decoded frame, every layer
        if bool(decode.any()):
            tgt = positive[decode].to(layer_logits.dtype)
            out["loss_present"] = torch.stack(
                [F.binary_cross_entropy_with_logits(l[decode], tgt) for l in layer_logits]
            ).sum()
        else:
            out["loss_present"] = zero
        # relevance + contrastive over the frames seen in training (stvg, tvg; not rec)
        not_rec = (task_ids != TASK_IDS["rec"]).unsqueeze(1)
        rel_sel = frame_mask & (frame_labels >= 0) & not_rec
        if cfg.eta and cfg.num_negative_frames == 0:
            rel_sel = rel_sel & positive  # ablation: no negative frames at all
        if bool(rel_sel.any()):
            out["loss_relevance"] = F.binary_cross_entropy_with_logits(
                enc["relevance"][rel_sel], positive[rel_sel].to(enc["relevance"].dtype)
            )
            logits = (enc["cos"] / cfg.contrastive_temperature).masked_fill(~rel_sel, float("-inf"))
            has_pos = (positive & rel_sel).any(1) & ((~positive) & rel_sel).any(1)
            if bool(has_pos.any()):
                pos_logits = logits.masked_fill(~positive, float("-inf"))
                nce = torch.logsumexp(logits[has_pos], 1) - torch.logsumexp(pos_logits[has_pos], 1)
                out["loss_contrastive"] = nce.mean()
            else:
                out["loss_contrastive"] = zero
        else:
            out["loss_relevance"] = out["loss_contrastive"] = zero
        # per-frame span head: CE on the first / last positive sampled frame
        span_ok = positive.any(1) & (task_ids != TASK_IDS["rec"])
        if bool(span_ok.any()):
            idx = torch.arange(frame_mask.shape[1], device=frame_mask.device)
            first = torch.where(positive, idx, idx.numel()).min(1).values
            last = torch.where(positive, idx, -1).max(1).values
            out["loss_span"] = 0.5 * (
                F.cross_entropy(enc["span_start"][span_ok].float(), first[span_ok])
                + F.cross_entropy(enc["span_end"][span_ok].float(), last[span_ok])
            )
        else:
            out["loss_span"] = zero
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
        **kwargs: Any,
    ) -> BridgeSTGGroundingOutput:
        r"""
        Ground queries from a prompt that ends at `<|im_start|>assistant\n` (no targets, no bridge tokens).

        Text mode: generate the span answer, append `<|im_end|>` and the bridge tokens, run one forward
        (the vision features are computed once and reused), select the sampled frames in the span (ETA)
        and decode boxes only there. Frame mode: one forward with the bridge tokens appended, span from
        the per-frame start/end logits.

        Args:
            tokenizer: decodes the generated answer in text mode (the processor's tokenizer).
            span_source: override `config.span_source` (`"text"` or `"frame"`).

        Coupled baseline (`config.grounding_mode="coupled"`): generates the span and the per-frame boxes as text
        (budget `max_new_tokens` or `config.max_new_tokens + COUPLED_TOKENS_PER_FRAME * F`; `min_new_tokens=` in kwargs forces a
        length, for latency benchmarks) and parses them with `parse_coupled_answer`.
        """
        cfg = self.config
        if cfg.grounding_mode == "coupled":
            return self._ground_coupled(input_ids, attention_mask, mm_token_type_ids, pixel_values_videos,
                                        video_grid_thw, frame_timestamps, frame_mask, tokenizer, max_new_tokens,
                                        kwargs.get("min_new_tokens"))
        source = span_source or cfg.span_source
        if source not in ("text", "frame"):
            raise ValueError(f"span_source: must be 'text' or 'frame', got {source!r}")
        if source == "text" and tokenizer is None:
            raise ValueError("ground(): span_source='text' needs `tokenizer=` to read the generated answer")
        device = input_ids.device
        frame_mask = frame_mask.bool()
        B = input_ids.shape[0]
        video_features = self.mllm.model.get_video_features(pixel_values_videos, video_grid_thw, return_dict=True)
        im_end = int(cfg.mllm_config.get_text_config().eos_token_id if not isinstance(
            cfg.mllm_config.get_text_config().eos_token_id, list) else cfg.mllm_config.get_text_config().eos_token_id[0])
        answers: list[list[int]] = [[] for _ in range(B)]
        texts = ["" for _ in range(B)]
        if source == "text":
            gen = self.mllm.generate(
                input_ids=input_ids, attention_mask=attention_mask, mm_token_type_ids=mm_token_type_ids,
                pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw,
                max_new_tokens=max_new_tokens or cfg.max_new_tokens, do_sample=False, eos_token_id=im_end,
                suppress_tokens=list(cfg.bridge_token_ids),  # bridge tokens are appended by us, never generated
                pad_token_id=cfg.mllm_config.get_text_config().pad_token_id,
            )
            self.mllm.model.rope_deltas = None
            new = gen[:, input_ids.shape[1]:]
            for i in range(B):
                toks = new[i].tolist()
                if im_end in toks:
                    toks = toks[: toks.index(im_end)]
                answers[i] = toks + [im_end]
                texts[i] = tokenizer.decode(toks, skip_special_tokens=True)
        # rebuild the sequences: prompt (unpadded) + answer + bridge tokens, left-padded
        bridge = list(cfg.bridge_token_ids)
        seqs, types = [], []
        for i in range(B):
            keep = attention_mask[i].bool()
            seqs.append(input_ids[i][keep].tolist() + answers[i] + bridge)
            types.append(mm_token_type_ids[i][keep].tolist() + [0] * (len(answers[i]) + len(bridge)))
        Lmax = max(len(s) for s in seqs)
        pad = int(cfg.mllm_config.get_text_config().pad_token_id or 0)
        ids = torch.full((B, Lmax), pad, dtype=torch.long, device=device)
        tt = torch.zeros((B, Lmax), dtype=torch.long, device=device)
        am = torch.zeros((B, Lmax), dtype=torch.long, device=device)
        for i, (s, t) in enumerate(zip(seqs, types)):
            ids[i, Lmax - len(s):] = torch.tensor(s, device=device)
            tt[i, Lmax - len(s):] = torch.tensor(t, device=device)
            am[i, Lmax - len(s):] = 1
        enc = self._encode(ids, am, tt, video_grid_thw, frame_timestamps, frame_mask, video_features=video_features)
        relevance = enc["relevance"].sigmoid().masked_fill(~frame_mask, 0.0)
        times = frame_timestamps.float()
        Fmax = frame_mask.shape[1]
        spans_s = torch.zeros(B, 2, device=device)
        spans_f = torch.zeros(B, 2, dtype=torch.long, device=device)
        sources: list[str] = []
        for i in range(B):
            n = int(frame_mask[i].sum())
            t = times[i, :n]
            step = float(t[1] - t[0]) if n > 1 else 1.0 / cfg.sample_fps
            duration = float(t[-1]) + step
            parsed = None
            if source == "text":
                parsed = BridgeSTGProcessor.parse_answer(texts[i], duration=duration)
            if source == "frame":
                s, e = _best_span(enc["span_start"][i, :n], enc["span_end"][i, :n])
                a, b = float(t[s]), (float(t[e + 1]) if e + 1 < n else duration)
                sources.append("frame")
            elif parsed is not None:
                a, b = parsed
                s, e = _frames_in_span(t, a, b)
                sources.append("text")
            else:
                s, e = _relevance_run(relevance[i, :n])
                a, b = float(t[s]), (float(t[e + 1]) if e + 1 < n else duration)
                sources.append("relevance_fallback")
            spans_s[i] = torch.tensor([a, b])
            spans_f[i] = torch.tensor([s, e])
        idx = torch.arange(Fmax, device=device)
        if cfg.eta:
            decode = (idx[None] >= spans_f[:, :1]) & (idx[None] <= spans_f[:, 1:]) & frame_mask
        else:
            decode = frame_mask.clone()
        layer_boxes, layer_logits = self._run_decoder(enc, decode)
        boxes = layer_boxes[-1] * decode.unsqueeze(-1)
        scores = layer_logits[-1].sigmoid() * decode
        return BridgeSTGGroundingOutput(
            pred_span_seconds=spans_s, pred_span_frames=spans_f, pred_boxes=boxes, pred_scores=scores,
            decoded_frame_mask=decode, relevance_scores=relevance, span_source=sources, generated_text=texts,
        )


def _frames_in_span(times: torch.Tensor, start_s: float, end_s: float) -> tuple[int, int]:
    """First and last sampled-frame index with `start_s <= t < end_s` (ETA); if none, the frame nearest the middle."""
    inside = ((times >= start_s) & (times < end_s)).nonzero().flatten()
    if inside.numel():
        return int(inside[0]), int(inside[-1])
    nearest = int((times - (start_s + end_s) / 2).abs().argmin())
    return nearest, nearest


def _best_span(start: torch.Tensor, end: torch.Tensor) -> tuple[int, int]:
    """Indices (s, e), s <= e, maximising start[s] + end[e]."""
    n = start.shape[0]
    score = start[:, None] + end[None, :]
    score = score.masked_fill(torch.ones(n, n, dtype=torch.bool, device=start.device).tril(-1), float("-inf"))
    flat = int(score.argmax())
    return flat // n, flat % n


def _relevance_run(prob: torch.Tensor, threshold: float = 0.5) -> tuple[int, int]:
    """Contiguous run of frames with relevance >= threshold around the arg-max frame (METHOD §3.11)."""
    best = int(prob.argmax())
    s = e = best
    while s > 0 and prob[s - 1] >= threshold:
        s -= 1
    while e + 1 < prob.shape[0] and prob[e + 1] >= threshold:
        e += 1
    return s, e


__all__ = [
    "BridgeSTGModelOutput",
    "BridgeSTGGroundingOutput",
    "BridgeSTGPreTrainedModel",
    "BridgeSTGForVideoGrounding",
]
