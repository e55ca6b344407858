"""LoRA and freezing for Bridge-STG (docs/method.md §3.10, docs/hf_notes.md §12).

:func:`apply_lora` puts PEFT LoRA adapters on the LLM's q/k/v/o/gate/up/down projections only (a full-match
regex over module names, so the vision tower and the spatial decoder's own projections are never adapted)
and trains the Bridge-STG modules (bridge, decoder) in full. :func:`freeze_vision_encoder` freezes the
vision tower and merger.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from torch import nn

from .trainer import MLLM_ATTRIBUTE, STG_MODULES, unwrap_bridge_model

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: full-match regex over module names: the LLM's projections only (not the vision tower, not the decoder)
LORA_TARGET_REGEX = r"mllm\..*language_model\..*\.(?:" + "|".join(LORA_TARGETS) + r")"


def freeze_vision_encoder(model: nn.Module) -> int:
    """Freeze the MLLM's vision encoder and merger (``model.mllm.model.visual``, docs/method.md §3.10).

    Returns the number of parameters frozen. Raises ``ValueError`` when the model has no vision tower there.
    """
    base = unwrap_bridge_model(model)
    inner = getattr(getattr(base, MLLM_ATTRIBUTE), "model", None)
    visual = getattr(inner, "visual", None)
    if not isinstance(visual, nn.Module):
        raise ValueError("model.mllm.model.visual: no vision encoder found (expected a Qwen2.5-VL / Qwen3-VL backbone)")
    n = 0
    for p in visual.parameters():
        if p.requires_grad:
            n += p.numel()
        p.requires_grad_(False)
    return n


def apply_lora(
    model: nn.Module,
    r: int = 64,
    alpha: int = 128,
    dropout: float = 0.05,
    target_regex: str = LORA_TARGET_REGEX,
    modules_to_save: Sequence[str] = STG_MODULES,
    freeze_vision: bool = True,
) -> Any:
    """Wrap ``model`` with PEFT LoRA on the LLM (docs/method.md §3.10): adapters on q/k/v/o/gate/up/down of
    ``mllm.*language_model.*`` (``target_regex`` is full-matched), the bridge, decoder and heads trained in
    full through ``modules_to_save`` (unique names, so PEFT's suffix matching cannot hit LLM modules).
    Everything else (embeddings, LM head, the vision tower) is frozen.

    Returns the ``PeftModel``; ``model.merge_and_unload()`` gives back a `BridgeSTGForVideoGrounding`.
    """
    from peft import LoraConfig, get_peft_model

    base = unwrap_bridge_model(model)
    names = [n for n, _ in base.named_modules()]
    for m in modules_to_save:
        hits = [n for n in names if n == m or n.endswith("." + m)]
        if hits != [m]:
            raise ValueError(
                f"modules_to_save: {m!r} must name exactly one top-level module (PEFT matches by suffix); matches {hits[:5]}"
            )
    targets = [n for n in names if re.fullmatch(target_regex, n)]
    if not targets:
        raise ValueError(f"target_regex {target_regex!r} matches no module of the model")
    config = LoraConfig(
        r=int(r), lora_alpha=int(alpha), lora_dropout=float(dropout), target_modules=target_regex,
        modules_to_save=list(modules_to_save), bias="none",
    )
    peft_model = get_peft_model(model, config)
    if freeze_vision:
        freeze_vision_encoder(peft_model)
    return peft_model


__all__ = ["LORA_TARGETS", "LORA_TARGET_REGEX", "apply_lora", "freeze_vision_encoder"]
