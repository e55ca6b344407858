"""Losses of Bridge-STG (docs/method.md §3.8): small named units, each documented with its tensor shapes.

Self-contained remote code: imports only torch and sibling files.

Shape notation: B batch, L tokens, F sampled frames (padded), Ld decoder layers, N selected items.
Every unit computes in float32 whatever the model's dtype (a bf16 box or GIoU loses the precision the regression
needs) and returns a scalar tensor; a term with nothing to apply to returns an exact 0 that stays attached
to the graph (so every parameter still receives a gradient, as DDP requires).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .box_ops_bridge_stg import box_cxcywh_to_xyxy, box_iou, generalized_box_iou


def zero_like(reference: torch.Tensor) -> torch.Tensor:
    """A scalar 0 attached to ``reference``'s graph."""
    return reference.sum() * 0.0


def lm_loss(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module) -> torch.Tensor:
    """Cross-entropy of the next token on the answer tokens only (``loss_lm``).

    Args:
        hidden: ``(B, L, D)`` last-layer LLM states.
        labels: ``(B, L)`` answer token ids (and ``<|im_end|>``), -100 elsewhere.
        lm_head: the MLLM's output projection; logits are computed only where a label exists.
    """
    shift_labels = labels[:, 1:]
    mask = shift_labels != -100
    if not bool(mask.any()):
        return zero_like(hidden)
    logits = lm_head(hidden[:, :-1][mask])
    return F.cross_entropy(logits.float(), shift_labels[mask])


def box_losses(layer_boxes: torch.Tensor, target_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss_l1`` and ``loss_giou`` of the boxes of every decoder layer against the ground truth.

    Args:
        layer_boxes: ``(Ld, N, 4)`` predicted normalised cxcywh boxes on the N supervised frames.
        target_boxes: ``(N, 4)`` ground-truth normalised cxcywh boxes.

    Returns:
        ``(l1, giou)``: per layer the L1 distance summed over the 4 coordinates and ``1 - GIoU``, each averaged
        over the frames, then summed over the layers (equal weights: deep supervision).
    """
    pred, gt = layer_boxes.float(), target_boxes.float()
    l1 = (pred - gt).abs().sum(-1).mean(-1).sum()
    giou = generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(gt).unsqueeze(0))
    return l1, (1 - giou).mean(-1).sum()


def presence_loss(layer_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``loss_presence``: BCE of every decoder layer's "target present" logits, summed over layers.

    Args:
        layer_logits: ``(Ld, N)`` logits on the N decoded frames.
        targets: ``(N,)`` 1 on frames inside the ground-truth span, 0 outside.
    """
    t = targets.float()
    return torch.stack([F.binary_cross_entropy_with_logits(logits.float(), t) for logits in layer_logits]).sum()


def relevance_loss(relevance_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``loss_relevance``: BCE of the frame relevance logits ``alpha * cos(g, e_f) + beta``.

    Args:
        relevance_logits: ``(N,)`` logits of the frames seen in training.
        targets: ``(N,)`` 1 inside the ground-truth span, 0 outside.
    """
    return F.binary_cross_entropy_with_logits(relevance_logits.float(), targets.float())


def contrastive_loss(cosine: torch.Tensor, positive: torch.Tensor, selected: torch.Tensor, temperature: float) -> torch.Tensor:
    """``loss_contrastive``: multi-positive InfoNCE ``-log sum_pos exp(cos / t) / sum_sel exp(cos / t)``.

    Args:
        cosine: ``(B, F)`` cosine between the query summary g and each frame embedding e_f.
        positive: ``(B, F)`` bool, frames inside the ground-truth span.
        selected: ``(B, F)`` bool, frames that take part (positives and negatives seen in training).
        temperature: the InfoNCE temperature.

    Only samples with at least one selected positive and one selected negative count; 0 if there are none.
    """
    logits = (cosine.float() / temperature).masked_fill(~selected, float("-inf"))
    usable = (positive & selected).any(1) & ((~positive) & selected).any(1)
    if not bool(usable.any()):
        return zero_like(cosine)
    pos_logits = logits.masked_fill(~positive, float("-inf"))
    return (torch.logsumexp(logits[usable], 1) - torch.logsumexp(pos_logits[usable], 1)).mean()


def span_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """``loss_span``: cross-entropy of the per-frame start / end logits on the first / last positive frame.

    Args:
        start_logits, end_logits: ``(N, F)`` logits of the N samples that have a positive frame.
        positive: ``(N, F)`` bool, frames inside the ground-truth span.
    """
    idx = torch.arange(positive.shape[1], device=positive.device)
    first = torch.where(positive, idx, idx.numel()).min(1).values
    last = torch.where(positive, idx, -1).max(1).values
    return 0.5 * (F.cross_entropy(start_logits.float(), first) + F.cross_entropy(end_logits.float(), last))


def reference_loss(layer_scores: torch.Tensor, token_valid: torch.Tensor, cell_boxes: torch.Tensor,
                   target_boxes: torch.Tensor, kind: str = "mass") -> torch.Tensor:
    """``loss_reference``: direct supervision of where the box head looks, summed over layers. The targets are the
    memory tokens whose grid cell overlaps the ground-truth box.

    ``kind="mass"``: ``-log`` of the share of the box head's softmax attention on those tokens (the box is the
    attention-weighted average of the tokens' boxes, so stray weight pulls it off the target); ``kind="bce"``: BCE
    of each token's score against the 0 / 1 target.

    Args:
        layer_scores: ``(Ld, N, M)`` reference-point logits on the N supervised frames (M memory tokens).
        token_valid: ``(N, M)`` bool, real (not padding) memory tokens.
        cell_boxes: ``(N, M, 4)`` each token's grid cell, normalised cxcywh.
        target_boxes: ``(N, 4)`` ground-truth boxes, normalised cxcywh.
    """
    cells = box_cxcywh_to_xyxy(cell_boxes.float())
    gt = box_cxcywh_to_xyxy(target_boxes.float()).unsqueeze(1).expand_as(cells)
    targets = (box_iou(cells, gt) > 0) & token_valid  # (N, M): the cell overlaps the box
    if kind == "bce":
        t = targets[token_valid].float()
        return torch.stack([F.binary_cross_entropy_with_logits(scores[token_valid].float(), t) for scores in layer_scores]).sum()
    usable = targets.any(-1)  # frames whose box overlaps at least one cell
    if not bool(usable.any()):
        return zero_like(layer_scores)
    scores = layer_scores.float().masked_fill(~token_valid, float("-inf"))[:, usable]  # (Ld, N', M)
    on_target = scores.masked_fill(~targets[usable], float("-inf"))
    return (torch.logsumexp(scores, -1) - torch.logsumexp(on_target, -1)).mean(-1).sum()


def bag_of_words_loss(logits: torch.Tensor, token_ids: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Bag-of-words reconstruction (``loss_query``): per sample, the mean over its distinct selected tokens of
    ``-log softmax(logits)[token]``, averaged over the samples that have any.

    Args:
        logits: ``(B, V)`` scores over the vocabulary.
        token_ids: ``(B, L)`` token ids.
        token_mask: ``(B, L)`` bool, the tokens of the bag.
    """
    logp = logits.float().log_softmax(-1)
    # masked-out positions add 0 at their id, so only the bag's tokens count; each distinct token once
    bag = (torch.zeros_like(logp).scatter_add_(1, token_ids, token_mask.float()) > 0).float()
    count = bag.sum(-1)
    has = count > 0
    if not bool(has.any()):
        return zero_like(logits)
    return (-(logp * bag).sum(-1)[has] / count[has]).mean()


__all__ = ["zero_like", "lm_loss", "box_losses", "presence_loss", "relevance_loss", "contrastive_loss", "span_loss",
           "reference_loss", "bag_of_words_loss"]
