"""Reinforcement fine-tuning of Bridge-STG with TRL's ``GRPOTrainer`` on videos (docs/training.md §6).

:class:`BridgeSTGGRPOTrainer` is ``trl.GRPOTrainer`` with the MLLM of a Bridge-STG model (``model.mllm``, a Qwen2.5-VL
/ Qwen3-VL ``*ForConditionalGeneration``) as the policy. TRL runs the loop (sampling, rewards, group advantages,
the clipped objective, the KL to the reference model, LoRA, accelerate); this class carries the videos through it:

* **prompts**: the dataset rows are the canonical rows plus a ``prompt`` column (the query, for TRL's logs;
  :func:`grpo_dataset`). For each generation batch the distinct rows go once through the inference collator
  (``BridgeSTGDataCollator(training=False)``: the processor's grounding prompt ending at ``<|im_start|>assistant\\n``
  and the video tensors) and once through the vision encoder (``model.encode_video``, no gradient);
* **generation**: ``generate`` on the MLLM with ``video_grid_thw``, ``mm_token_type_ids`` and the encoder's output
  (``mm_encoder_outputs``), sampled by TRL's generation config; the bridge tokens and the vision placeholders are
  suppressed, and ``<|im_end|>`` ends a completion (``num_generations`` completions per prompt);
* **log-probabilities** of the policy and of the reference model: the prompt + completion with the same video
  inputs (completion tokens are text, ``mm_token_type_ids`` 0), through TRL's fused LM head; the vision encoder's
  output is reused (it is frozen, and the same in the reference), or re-run on the pixels when it is trainable;
* **rewards** (:mod:`bridge_stg.training.rewards`): plain TRL reward functions on the decoded completions and the
  row columns; the tube reward also gets the extra column ``grounding_video`` (the prompt and video tensors each
  completion was sampled from) and runs the bridge + spatial decoder on the sampled span;
* **reference model** (``beta > 0``): with LoRA (``peft_config``) TRL's own, the MLLM with the adapters disabled; in
  full fine-tuning a frozen copy of the MLLM taken before training (TRL would reload it from ``config._name_or_path``,
  which a Bridge-STG checkpoint does not have).

What trains: the MLLM's language model (LoRA adapters, or every trainable MLLM parameter); the bridge and the
spatial decoder are used by the tube reward only and do not change. :func:`grounding_model_after_training` gives the
Bridge-STG model back with the trained MLLM (adapters merged), ready for ``save_for_hub``.

Not supported (refused with one line): vLLM or continuous-batching generation, tools / environments, FSDP and
DeepSpeed ZeRO-3 (the tube reward runs the MLLM outside the engine), ``cast_lm_head_to_fp32``, a model already
wrapped by PEFT (pass ``peft_config``), the coupled baseline and frame-mode configs.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from trl import GRPOConfig, GRPOTrainer
from trl.extras.profiling import profiling_context
from trl.models import prepare_deepspeed, unwrap_model_for_generation
from trl.trainer.callbacks import SyncRefModelCallback
from trl.trainer.utils import add_fused_lm_head, disable_dropout_in_model, pad

from bridge_stg.processing.collator import BridgeSTGDataCollator

from .rewards import GroundingPrompts, GroundingVideo, video_inputs
from .trainer import unwrap_bridge_model

#: dataset tasks GRPO trains on (``rec`` rows are single images without a span: nothing to sample)
GRPO_TASKS = ("stvg", "tvg")
#: the extra reward column the trainer adds (one :class:`GroundingVideo` per completion)
GROUNDING_VIDEO_COLUMN = "grounding_video"


def grpo_dataset(dataset: Any) -> Any:
    """The GRPO training rows of a canonical ``datasets.Dataset``: its ``stvg`` / ``tvg`` rows with a ``prompt``
    column (the query: what TRL logs; the model's prompt is built by the processor from the row's video and query).
    Raises ``ValueError`` when no row is left or the dataset already has a different ``prompt`` column."""
    if "task" in dataset.column_names:
        dataset = dataset.filter(lambda r: r["task"] in GRPO_TASKS)
    if len(dataset) == 0:
        raise ValueError(f"GRPO: no {'/'.join(GRPO_TASKS)} rows in the dataset (rec rows have no span to sample)")
    if "prompt" in dataset.column_names:
        if any(p != q for p, q in zip(dataset["prompt"], dataset["query"])):
            raise ValueError("GRPO: the dataset has a 'prompt' column that is not its 'query' column")
        return dataset
    return dataset.add_column("prompt", list(dataset["query"]))


def _check_supported(model: nn.Module, args: GRPOConfig) -> None:
    cfg = getattr(model, "config", None)
    if hasattr(model, "peft_config") or not hasattr(model, "mllm") or cfg is None:
        raise ValueError("BridgeSTGGRPOTrainer: pass the BridgeSTGForVideoGrounding itself (for LoRA pass peft_config, "
                         "which wraps its MLLM, the policy), not a PEFT or otherwise wrapped model")
    if getattr(cfg, "grounding_mode", "decoupled") != "decoupled":
        raise ValueError("BridgeSTGGRPOTrainer: the coupled baseline is not supported (grounding_mode='decoupled' only)")
    if cfg.span_source != "text":
        raise ValueError(f"BridgeSTGGRPOTrainer: GRPO trains the MLLM's text answer; the model's span_source is "
                         f"{cfg.span_source!r}: set span_source='text' (config_overrides)")
    refused = [name for name in ("use_vllm", "use_transformers_continuous_batching", "cast_lm_head_to_fp32")
               if getattr(args, name, False)]
    if refused:
        raise ValueError(f"BridgeSTGGRPOTrainer: {', '.join(refused)} is not supported (generation runs through "
                         "transformers' generate with the video inputs)")
    zero = (args.deepspeed_plugin.zero_stage if getattr(args, "deepspeed_plugin", None) is not None else None)
    if args.fsdp or zero == 3:
        raise ValueError("BridgeSTGGRPOTrainer: FSDP and DeepSpeed ZeRO-3 are not supported (the tube reward runs the "
                         "MLLM outside the sharded engine); use DDP or ZeRO-2")


class BridgeSTGGRPOTrainer(GRPOTrainer):
    r"""``trl.GRPOTrainer`` for a Bridge-STG model: GRPO on the MLLM's span answer, with video prompts.

    Args:
        model ([`BridgeSTGForVideoGrounding`]): in text span mode (``config.span_source="text"``); its ``mllm`` is the
            policy, its bridge and decoder serve the tube reward.
        reward_funcs: TRL reward functions (:func:`bridge_stg.training.rewards.build_reward_funcs`).
        args ([`trl.GRPOConfig`]): ``num_generations``, ``max_completion_length``, ``temperature``, ``beta``,
            ``reward_weights``, ``loss_type`` ... Keep ``remove_unused_columns=False`` (the rewards read the row columns).
        train_dataset: canonical rows with a ``prompt`` column (:func:`grpo_dataset`).
        processor ([`BridgeSTGProcessor`]): the model's processor (TRL's ``processing_class``).
        video_root: folder the rows' ``video`` column is relative to.
        sample_fps, max_frames, min_frames: override the processor's frame sampling.
        peft_config: a ``peft.LoraConfig`` for the MLLM (:func:`mllm_lora_config`); the reference model is then the
            MLLM with the adapters disabled.
        eval_dataset, callbacks, optimizers: as for ``GRPOTrainer``.
    """

    def __init__(
        self,
        model: nn.Module,
        reward_funcs: Any,
        args: GRPOConfig,
        train_dataset: Any,
        processor: Any,
        video_root: str | None = None,
        sample_fps: float | None = None,
        max_frames: int | None = None,
        min_frames: int | None = None,
        peft_config: Any = None,
        eval_dataset: Any = None,
        callbacks: Any = None,
        optimizers: tuple[Any, Any] = (None, None),
    ) -> None:
        _check_supported(model, args)
        if args.remove_unused_columns:
            raise ValueError("BridgeSTGGRPOTrainer: remove_unused_columns must be False (the rewards read the row columns)")
        self.grounding_model = model
        self.grounding_collator = BridgeSTGDataCollator(processor, video_root, training=False, sample_fps=sample_fps,
                                                        max_frames=max_frames, min_frames=min_frames)
        self._pending_rows: list[dict[str, Any]] | None = None
        self._active_videos: list[GroundingVideo] | None = None
        model.to(args.device)
        policy = model.mllm
        # full fine-tuning with a KL term: the reference is a frozen copy of the MLLM as it starts (GRPOTrainer would
        # reload it from config._name_or_path). GRPOTrainer builds no reference while beta is 0; it is restored below.
        own_reference = peft_config is None and args.beta != 0.0
        reference = _frozen_copy(policy) if own_reference else None
        beta, sync = args.beta, args.sync_ref_model
        if own_reference:
            args.beta, args.sync_ref_model = 0.0, False
        try:
            super().__init__(model=policy, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                             eval_dataset=eval_dataset, processing_class=processor, callbacks=callbacks,
                             optimizers=optimizers, peft_config=peft_config)
        finally:
            args.beta, args.sync_ref_model = beta, sync
        self.beta = beta
        if reference is not None:
            if args.disable_dropout:
                disable_dropout_in_model(reference)
            add_fused_lm_head(reference, temperature=self.temperature)
            self.ref_model = (prepare_deepspeed(reference, self.accelerator) if self.is_deepspeed_enabled
                              else self.accelerator.prepare_model(reference, evaluation_mode=True))
            if sync:
                self.add_callback(SyncRefModelCallback(ref_model=self.ref_model, accelerator=self.accelerator))
        # a completion ends at <|im_end|>; bridge tokens (appended by the model itself) and vision placeholders are
        # never sampled
        cfg = model.config
        im_end = model.im_end_token_id
        mllm_cfg = cfg.mllm_config
        banned = set(cfg.bridge_token_ids) | {int(getattr(mllm_cfg, k)) for k in (
            "image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id") if getattr(mllm_cfg, k, None) is not None}
        banned |= set(self.generation_config.suppress_tokens or [])
        self.eos_token_ids = [im_end]
        self.generation_kwargs.update(eos_token_id=[im_end], suppress_tokens=sorted(banned))
        self.generation_config.eos_token_id = [im_end]
        self.generation_config.suppress_tokens = sorted(banned)
        self._video_token_id = int(mllm_cfg.video_token_id)
        self._vision_trainable = any(p.requires_grad for p in policy.model.visual.parameters())

    # ------------------------------------------------------------------------------------------------ video plumbing
    @contextmanager
    def _videos(self, videos: Sequence[GroundingVideo]) -> Iterator[None]:
        """The video rows of the batch the log-probabilities are computed on (one per sequence)."""
        previous, self._active_videos = self._active_videos, list(videos)
        try:
            yield
        finally:
            self._active_videos = previous

    def _reset_rope(self) -> None:
        self.grounding_model.mllm.model.rope_deltas = None  # no position state carried from one call to the next

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._pending_rows = inputs
        try:
            output = super()._generate_and_score_completions(inputs)
            videos = self._active_videos
        finally:
            self._pending_rows = None
            self._active_videos = None
        if videos is None or len(videos) != output["prompt_ids"].shape[0]:
            raise RuntimeError("BridgeSTGGRPOTrainer: the video rows of the generation batch were not recorded")
        output[GROUNDING_VIDEO_COLUMN] = videos  # a per-sample list: shuffled and split with the tensors
        return output

    def _tokenize_prompts(self, prompts: list[Any]) -> tuple[list[list[int]], None, dict[str, Any]]:
        """The grounding prompts of the batch's rows: the distinct rows (by ``query_id``) are collated once and their
        videos encoded once; every row gets its prompt ids and a :class:`GroundingVideo`."""
        rows = self._pending_rows
        if rows is None or len(rows) != len(prompts):
            raise RuntimeError("BridgeSTGGRPOTrainer: prompts reached the tokenizer without their dataset rows")
        first: dict[str, int] = {}
        order = [first.setdefault(str(r["query_id"]), len(first)) for r in rows]
        distinct = [rows[order.index(u)] for u in range(len(first))]
        batch = self.grounding_collator(distinct)
        device = self.accelerator.device
        tensors = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        with torch.no_grad():
            features = self.grounding_model.encode_video(tensors["pixel_values_videos"], tensors["video_grid_thw"],
                                                         tensors["frame_mask"])
        shared = GroundingPrompts(tensors, batch.video_metadata, features)
        self._active_videos = [GroundingVideo(shared, u) for u in order]
        mask = tensors["attention_mask"].bool()
        return [tensors["input_ids"][u][mask[u]].tolist() for u in order], None, {}

    def _generate(self, prompts: list[Any]) -> tuple[Any, ...]:
        out = list(super()._generate(prompts))
        extra = out[5]  # extra_fields: merged into the rows, so the reward functions get them as a column
        extra[GROUNDING_VIDEO_COLUMN] = list(self._active_videos)
        return tuple(out)

    def _prompt_types(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int) -> torch.Tensor:
        """``mm_token_type_ids``: 2 on the prompt's video tokens, 0 elsewhere (completion tokens are text)."""
        types = torch.zeros_like(input_ids)
        video = (input_ids[:, :prompt_length] == self._video_token_id) & attention_mask[:, :prompt_length].bool()
        types[:, :prompt_length] = video.long() * 2
        return types

    def _generate_single_turn(self, prompt_ids: list[list[int]], images: Any, multimodal_fields: dict[str, Any],
                              num_generations: int, has_tool_images: bool = False) -> tuple[list[list[int]], None]:
        videos = self._active_videos
        device = self.accelerator.device
        ids = pad([torch.tensor(p) for p in prompt_ids], padding_value=self._tokenizer.pad_token_id, padding_side="left",
                  pad_to_multiple_of=self.pad_to_multiple_of).to(device)
        mask = pad([torch.ones(len(p), dtype=torch.long) for p in prompt_ids], padding_value=0, padding_side="left",
                   pad_to_multiple_of=self.pad_to_multiple_of).to(device)
        video = video_inputs(videos)
        with (
            profiling_context(self, "transformers.generate"),
            unwrap_model_for_generation(
                self.model_wrapped, self.accelerator, gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                generation_kwargs=self.generation_kwargs, gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
            ) as unwrapped,
            torch.no_grad(),
        ):
            sequences = unwrapped.generate(input_ids=ids, attention_mask=mask,
                                           mm_token_type_ids=self._prompt_types(ids, mask, ids.shape[1]),
                                           generation_config=self.generation_config, **video)
        self._reset_rope()
        completions = sequences[:, ids.shape[1]:].cpu()
        out = []
        for row in completions.tolist():  # everything after the first end token is dropped
            ends = [k for k, t in enumerate(row) if t in self.eos_token_ids]
            out.append(row[: ends[0] + 1] if ends else row)
        return out, None

    def _get_per_token_logps_and_entropies(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                           logits_to_keep: int, batch_size: int | None = None, compute_entropy: bool = False,
                                           compute_aux_loss: bool = False, **image_inputs: Any) -> tuple[Any, Any, Any]:
        """Per-token log-probabilities (and entropies) of the completions under ``model`` (the policy or the
        reference), with each sequence's video inputs (:meth:`_videos`)."""
        videos = self._active_videos
        if videos is None or len(videos) != input_ids.shape[0]:
            raise RuntimeError("BridgeSTGGRPOTrainer: log-probabilities asked for without the video rows of the batch")
        given = sorted(k for k, v in image_inputs.items() if v is not None)
        if given:
            raise RuntimeError(f"BridgeSTGGRPOTrainer: unexpected image inputs {given} (video prompts only)")
        batch_size = batch_size or input_ids.shape[0]
        prompt_length = input_ids.shape[1] - logits_to_keep
        logps, entropies, aux = [], [], []
        for start in range(0, input_ids.shape[0], batch_size):
            end = min(start + batch_size, input_ids.shape[0])
            ids, mask = input_ids[start:end], attention_mask[start:end]
            inputs = {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": self._prompt_types(ids, mask, prompt_length),
                      **video_inputs(videos[start:end], with_pixels=self._vision_trainable)}
            if compute_aux_loss:
                inputs["output_router_logits"] = True
            labels = ids.masked_fill(mask == 0, -100)
            labels[:, :-logits_to_keep] = -100  # only the completion tokens are scored
            with self.accelerator.autocast():
                outputs = model(**inputs, labels=labels, fused_lm_head=True)
            self._reset_rope()
            logps.append(outputs.log_probs[:, -logits_to_keep:])
            if compute_entropy:
                entropies.append(outputs.entropy[:, -logits_to_keep:])
            if compute_aux_loss:
                aux.append(outputs.aux_loss)
        return (torch.cat(logps), torch.cat(entropies) if compute_entropy else None,
                torch.stack(aux).mean() if compute_aux_loss else None)

    def _compute_loss(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        with self._videos(inputs[GROUNDING_VIDEO_COLUMN]):
            return super()._compute_loss(model, inputs)


# ------------------------------------------------------------------------------------------------ helpers
def _frozen_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` in eval mode, in the lowest floating dtype its parameters have (trainable weights
    kept in float32 next to 16-bit frozen ones give a 16-bit reference)."""
    ref = copy.deepcopy(module).eval().requires_grad_(False)
    dtypes = {p.dtype for p in ref.parameters() if p.is_floating_point()}
    for half in (torch.bfloat16, torch.float16):
        if half in dtypes:
            ref.to(half)
            break
    return ref


def mllm_lora_config(r: int = 64, alpha: int = 128, dropout: float = 0.05) -> Any:
    """``peft.LoraConfig`` for the policy: adapters on the LLM's q/k/v/o/gate/up/down projections, as
    :func:`bridge_stg.training.lora.apply_lora` puts them, with module names relative to the MLLM (the vision tower,
    the embeddings and the LM head are not adapted)."""
    from peft import LoraConfig

    from .lora import LORA_TARGET_REGEX

    return LoraConfig(r=int(r), lora_alpha=int(alpha), lora_dropout=float(dropout), bias="none",
                      target_modules=LORA_TARGET_REGEX.removeprefix(r"mllm\."))


def grounding_model_after_training(trainer: BridgeSTGGRPOTrainer) -> nn.Module:
    """The Bridge-STG model with the trained MLLM: LoRA adapters merged (``merge_and_unload``), the MLLM put back in
    the model. Call once, after training; the result is what ``save_for_hub`` writes."""
    model = trainer.grounding_model
    policy = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(policy, "merge_and_unload"):
        policy = policy.merge_and_unload()
    model.mllm = policy
    return unwrap_bridge_model(model)


__all__ = ["GRPO_TASKS", "GROUNDING_VIDEO_COLUMN", "grpo_dataset", "BridgeSTGGRPOTrainer", "mllm_lora_config",
           "grounding_model_after_training"]
