"""``transformers.Trainer`` for Bridge-STG (docs/method.md §3.8–§3.10, docs/hf_notes.md §11).

* :func:`build_optimizer_param_groups`: AdamW groups, MLLM (``model.mllm``, LoRA adapters included) vs the
  Bridge-STG modules (bridge, decoder), no weight decay on norms, biases and other 0-/1-D tensors.
* :class:`BridgeSTGTrainer`: a ``Trainer`` with those two learning rates, per-component loss logging
  (``loss_lm`` … ``loss_span``), correct gradient-accumulation scaling, and an evaluation that runs the
  real inference path (``model.ground``) for ``compute_metrics`` (:func:`bridge_stg.training.predict.make_compute_metrics`).

LoRA and freezing: :mod:`bridge_stg.training.lora`. Trainer settings that matter (docs/hf_notes.md §11):
``remove_unused_columns=False`` (the collator needs the row columns), ``use_cpu=True`` / ``report_to="none"``
on CPU. With a *plain* ``Trainer`` also note that the model's ``forward(**kwargs)`` makes Trainer believe the
model normalises its loss by ``num_items_in_batch``, so it stops dividing by ``gradient_accumulation_steps``:
use :class:`BridgeSTGTrainer` (it fixes this) or ``gradient_accumulation_steps=1``.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import torch
from torch import nn
from transformers import Trainer

from bridge_stg.configuration_bridge_stg import COMPONENT_LOSSES
from bridge_stg.modeling_bridge_stg import SPAN_SOURCES

MLLM_ATTRIBUTE = "mllm"
#: the model's non-MLLM submodules, STSB and QGSL (unique names: PEFT matches ``modules_to_save`` by suffix,
#: docs/hf_notes.md §12)
STG_MODULES = ("stsb", "qgsl")
#: order of the arrays ``BridgeSTGTrainer.prediction_step`` returns (what ``make_compute_metrics`` reads)
#: (the label_ids are the sampled ``frame_ids`` (B, F), −1 / −100 padding)
PREDICTION_FIELDS = ("pred_span_seconds", "pred_span_frames", "pred_boxes", "presence_scores", "decoder_frame_mask",
                     "span_source")


# ----------------------------------------------------------------------------------------- model plumbing
def unwrap_bridge_model(model: nn.Module) -> nn.Module:
    """The `BridgeSTGForVideoGrounding` inside DDP / ``torch.compile`` / PEFT wrappers."""
    seen = 0
    while not hasattr(model, MLLM_ATTRIBUTE) or not all(hasattr(model, m) for m in STG_MODULES):
        seen += 1
        if seen > 8:
            break
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            break
    if not hasattr(model, MLLM_ATTRIBUTE):
        raise ValueError(f"model: no '{MLLM_ATTRIBUTE}' submodule found in {type(model).__name__} (not a Bridge-STG model?)")
    return model


def _no_decay_ids(model: nn.Module) -> set[int]:
    """Parameters without weight decay: biases, every parameter of a normalisation layer, and any 0-/1-D
    tensor (norm gains, layer-fusion logits, the relevance α/β)."""
    ids: set[int] = set()
    for module in model.modules():
        norm = "norm" in type(module).__name__.lower() or isinstance(module, (nn.LayerNorm, nn.GroupNorm))
        for name, p in module.named_parameters(recurse=False):
            if norm or name == "bias" or name.endswith("_bias") or p.ndim < 2:
                ids.add(id(p))
    return ids


def build_optimizer_param_groups(
    model: nn.Module, mllm_lr: float = 2e-5, head_lr: float = 1e-4, weight_decay: float = 0.05
) -> list[dict[str, Any]]:
    """AdamW parameter groups for a Bridge-STG model (plain, PEFT-wrapped or DDP-wrapped).

    Trainable parameters (``requires_grad``) are split into the MLLM (everything under ``model.mllm``,
    including LoRA adapters) at ``mllm_lr`` and the Bridge-STG modules (everything else: bridge, decoder,
    heads, also PEFT's trainable copies of them) at ``head_lr``; each into decay (``weight_decay``) and
    no-decay (norms, biases, 0-/1-D tensors). Empty groups are left out. Every group carries a ``"name"``
    (``mllm``, ``mllm_no_decay``, ``stg``, ``stg_no_decay``).

    Returns:
        list of ``{"params", "lr", "weight_decay", "name"}`` dicts for ``torch.optim.AdamW``.
    """
    base = unwrap_bridge_model(model)
    mllm_ids = {id(p) for p in getattr(base, MLLM_ATTRIBUTE).parameters()}
    no_decay = _no_decay_ids(model)
    groups: dict[str, list[nn.Parameter]] = {"mllm": [], "mllm_no_decay": [], "stg": [], "stg_no_decay": []}
    seen: set[int] = set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        part = "mllm" if id(p) in mllm_ids else "stg"
        groups[part + ("_no_decay" if id(p) in no_decay else "")].append(p)
    if not seen:
        raise ValueError("model: no trainable parameters (everything is frozen)")
    lrs = {"mllm": float(mllm_lr), "stg": float(head_lr)}
    return [
        {"params": params, "lr": lrs[name.split("_")[0]], "weight_decay": 0.0 if name.endswith("no_decay") else float(weight_decay),
         "name": name}
        for name, params in groups.items() if params
    ]


# ----------------------------------------------------------------------------------------- trainer
class BridgeSTGTrainer(Trainer):
    """``transformers.Trainer`` for Bridge-STG.

    Differences from the plain ``Trainer``:

    * ``create_optimizer``: AdamW (the optimiser class / betas / eps of ``args``) over
      :func:`build_optimizer_param_groups` with ``mllm_lr`` (default ``args.learning_rate``) and ``head_lr``
      (default ``args.learning_rate``), ``weight_decay = args.weight_decay``; the scheduler scales both.
    * the component losses of the model output (``loss_lm`` … ``loss_span``) are averaged over the
      micro-batches since the last log and logged beside ``loss`` (``eval_loss_*`` in evaluation).
    * the loss is divided by the gradient-accumulation steps (the model ignores ``num_items_in_batch``).
    * resuming (``train(resume_from_checkpoint=...)``) and ``load_best_model_at_end`` load full checkpoints
      through ``from_pretrained`` (Trainer's raw ``load_state_dict(strict=False)`` misses every backbone key,
      see ``_load_full_checkpoint``).
    * ``prediction_step``, when predictions are requested (``compute_metrics`` set, e.g. from
      :func:`make_compute_metrics`): the batch must come from an inference collator
      (``BridgeSTGDataCollator(training=False)``, no labels) and predictions come from ``model.ground`` —
      the real inference path (generation in text mode) — returned as the arrays of
      ``PREDICTION_FIELDS`` (``span_source`` as an index into ``SPAN_SOURCES``), with the sampled ``frame_ids``
      as label_ids. Without ``compute_metrics`` (or with ``prediction_loss_only``) evaluation is the usual
      teacher-forced loss of a training collator.

    Args:
        mllm_lr, head_lr (`float`, *optional*): learning rates of the two parameter groups.
        processor (`BridgeSTGProcessor`, *optional*): its tokenizer reads the generated answers in
            ``prediction_step`` (text mode); falls back to ``processing_class``.
        eval_data_collator (*optional*): collator of the evaluation / test dataloaders (e.g. the inference
            ``BridgeSTGDataCollator(training=False)`` for ``compute_metrics``); default ``data_collator``.
        ground_kwargs (`dict`, *optional*): extra arguments of ``model.ground`` in ``prediction_step``
            (``span_source``, ``max_new_tokens``).
    """

    def __init__(self, *args: Any, mllm_lr: float | None = None, head_lr: float | None = None,
                 processor: Any = None, eval_data_collator: Any = None, ground_kwargs: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ground_kwargs = dict(ground_kwargs or {})
        self.eval_data_collator = eval_data_collator
        self.mllm_lr = mllm_lr
        self.head_lr = head_lr
        self.processor = processor
        # forward(**kwargs) does not use num_items_in_batch: let Trainer scale the loss for accumulation
        self.model_accepts_loss_kwargs = False
        self._component_sums: dict[str, dict[str, torch.Tensor]] = {"train": {}, "eval": {}}
        self._component_counts: dict[str, int] = {"train": 0, "eval": 0}

    def _with_eval_collator(self, build: Callable[[], Any]) -> Any:
        if self.eval_data_collator is None:
            return build()
        train_collator = self.data_collator
        self.data_collator = self.eval_data_collator
        try:
            return build()
        finally:
            self.data_collator = train_collator

    def get_eval_dataloader(self, eval_dataset: Any = None) -> torch.utils.data.DataLoader:
        return self._with_eval_collator(lambda: super(BridgeSTGTrainer, self).get_eval_dataloader(eval_dataset))

    def get_test_dataloader(self, test_dataset: Any) -> torch.utils.data.DataLoader:
        return self._with_eval_collator(lambda: super(BridgeSTGTrainer, self).get_test_dataloader(test_dataset))

    # checkpoints: ``save_pretrained`` writes the Qwen-VL backbone's keys in the original checkpoint layout
    # (``mllm.model.layers.*``, ``mllm.visual.*``) while the module tree is ``mllm.model.language_model.*``;
    # Trainer's own resume / best-model code loads the file with ``load_state_dict(strict=False)`` and would
    # silently keep the random backbone. Load through ``from_pretrained`` (which converts the keys) instead.
    def _load_full_checkpoint(self, checkpoint: str, model: nn.Module) -> None:
        base = unwrap_bridge_model(model)
        loaded = type(base).from_pretrained(checkpoint, config=base.config, dtype=next(base.parameters()).dtype)
        result = base.load_state_dict(loaded.state_dict(), strict=True)
        del loaded
        if result.missing_keys or result.unexpected_keys:  # strict=True raises first; kept for clarity
            raise RuntimeError(f"checkpoint {checkpoint}: missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")

    def _is_full_checkpoint(self, checkpoint: str, model: nn.Module) -> bool:
        files = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
        return (not hasattr(model, "peft_config") and not self.is_fsdp_enabled and not self.is_deepspeed_enabled
                and any(os.path.isfile(os.path.join(checkpoint, f)) for f in files))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        model = self.model if model is None else model
        if self._is_full_checkpoint(resume_from_checkpoint, model):
            self._load_full_checkpoint(resume_from_checkpoint, model)
        else:
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        checkpoint = self.state.best_model_checkpoint
        if checkpoint is not None and self._is_full_checkpoint(checkpoint, self.model):
            self._load_full_checkpoint(checkpoint, self.model)
        else:
            super()._load_best_model()

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        opt_model = self.model if model is None else model
        if self.optimizer is None:
            groups = build_optimizer_param_groups(
                opt_model,
                mllm_lr=self.args.learning_rate if self.mllm_lr is None else self.mllm_lr,
                head_lr=self.args.learning_rate if self.head_lr is None else self.head_lr,
                weight_decay=self.args.weight_decay,
            )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            optimizer_kwargs = {k: v for k, v in optimizer_kwargs.items() if k not in ("lr", "params", "model")}
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        phase = "train" if model.training else "eval"
        sums = self._component_sums[phase]
        with torch.no_grad():
            for key in COMPONENT_LOSSES:
                value = outputs.get(key) if isinstance(outputs, Mapping) else getattr(outputs, key, None)
                if value is not None:
                    v = value.detach().float()
                    sums[key] = sums[key] + v if key in sums else v
        self._component_counts[phase] += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        phase = "eval" if any(k.startswith("eval_") for k in logs) else ("train" if "loss" in logs else None)
        if phase is not None and self._component_counts[phase]:
            prefix = "eval_" if phase == "eval" else ""
            for key, total in self._component_sums[phase].items():
                mean = self.accelerator.gather_for_metrics((total / self._component_counts[phase]).reshape(1)).mean()
                logs[prefix + key] = round(float(mean), 6)
            self._component_sums[phase] = {}
            self._component_counts[phase] = 0
        super().log(logs, start_time)

    def prediction_step(self, model: nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple[Any, Any, Any]:
        if prediction_loss_only or self.compute_metrics is None:
            return super().prediction_step(model, inputs, True, ignore_keys)
        if "labels" in inputs or "frame_labels" in inputs:
            raise ValueError(
                "BridgeSTGTrainer: predictions (compute_metrics) need an inference eval collator "
                "(BridgeSTGDataCollator(training=False)); this batch carries training targets"
            )
        inputs = self._prepare_inputs(inputs)
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is None:
            tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        names = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw",
                 "frame_timestamps", "frame_mask")
        base = unwrap_bridge_model(model)
        with self.accelerator.autocast():  # as forward under accelerate: fp32 trainable + 16-bit frozen weights mix
            out = base.ground(**{k: inputs[k] for k in names}, tokenizer=tokenizer, **self.ground_kwargs)
        B, F = inputs["frame_mask"].shape
        seconds = out.pred_span_seconds if out.pred_span_seconds is not None else torch.full((B, 2), float("nan"))
        sources = torch.tensor([SPAN_SOURCES.index(s) if s in SPAN_SOURCES else -1 for s in (out.span_source or [""] * B)])
        preds = (
            seconds.float(), out.pred_span_frames.long(), out.pred_boxes.float(), out.presence_scores.float(),
            out.decoder_frame_mask.long(), sources.long().to(seconds.device),
        )
        return None, tuple(p.detach() for p in preds), inputs["frame_ids"].long()


__all__ = [
    "MLLM_ATTRIBUTE", "STG_MODULES", "COMPONENT_LOSSES", "SPAN_SOURCES", "PREDICTION_FIELDS", "unwrap_bridge_model",
    "build_optimizer_param_groups", "BridgeSTGTrainer",
]
