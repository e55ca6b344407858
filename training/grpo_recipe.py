"""``bridge-stg train --method grpo``: its options and its run (docs/training.md §6).

The options are :class:`BridgeSTGGRPOConfig`, ``trl.GRPOConfig`` (all of ``TrainingArguments`` plus
``num_generations``, ``max_completion_length``, ``temperature``, ``beta``, ``reward_weights``, ``loss_type`` ...) with
the reward choice of this package; :func:`run_grpo` builds the model (``ModelArguments``: a Bridge-STG checkpoint in
text span mode; ``--lora`` puts the adapters on its MLLM), the GRPO rows of the dataset, the rewards, trains with
:class:`~bridge_stg.training.grpo.BridgeSTGGRPOTrainer` and writes the same Hub-ready checkpoint folder as the
supervised run (``save_for_hub``), evaluated on ``--eval_split`` by grounding it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import GRPOConfig

from .recipe import PROG, DataArguments, ModelArguments, RecipeError, RunArguments
from .rewards import REWARD_NAMES


@dataclass
class BridgeSTGGRPOConfig(GRPOConfig):
    """``trl.GRPOConfig`` with the rewards of :mod:`bridge_stg.training.rewards`. Unlike TRL, ``bf16`` and activation
    checkpointing default to off, as in ``TrainingArguments``: a recipe states them."""

    rewards: list[str] = field(default_factory=lambda: list(REWARD_NAMES), metadata={
        "help": f"reward functions, in the order of --reward_weights: any of {list(REWARD_NAMES)} (format: the answer "
                "template; temporal_iou: tIoU of the sampled span; tube_viou: vIoU of the tube the bridge and decoder "
                "build from the sampled span)"})
    reward_protocol: str | None = field(default=None, metadata={
        "help": "metric protocol of the tube reward: tubedetr, sampled, dense or hcstvg (default: tubedetr when the "
                "rows' fps allow it, else sampled)"})
    tube_reward_batch_size: int = field(default=8, metadata={"help": "completions per forward pass of the tube reward"})
    bf16: bool | None = field(default=False, metadata={"help": "bf16 (mixed) precision"})
    gradient_checkpointing: bool | None = field(default=None, metadata={
        "help": "Deprecated alias of `activation_checkpointing`, will be removed in v6."})


def check_grpo_arguments(model_args: ModelArguments, data_args: DataArguments, args: Any, run_args: RunArguments) -> None:
    """Raise :class:`RecipeError` for options ``--method grpo`` cannot honour."""
    if not isinstance(args, GRPOConfig):
        raise RecipeError("--method grpo: the training options must be parsed as GRPOConfig")
    if args.eval_strategy != "no":
        raise RecipeError(f"eval_strategy={args.eval_strategy}: --method grpo evaluates once at the end, by grounding "
                          "--eval_split with the trained model; set eval_strategy no")
    if model_args.lora and not model_args.merge_lora:
        raise RecipeError("merge_lora false: with --method grpo the adapters sit on the MLLM alone and are always merged "
                          "into the saved Bridge-STG checkpoint")
    if model_args.mllm_learning_rate is not None or model_args.head_learning_rate is not None:
        raise RecipeError("mllm_learning_rate / head_learning_rate: --method grpo trains the MLLM only, at --learning_rate")
    if run_args.audit:
        raise RecipeError("audit: records the batches of the supervised collator; not available with --method grpo")
    if getattr(data_args, "task_mix", None):
        raise RecipeError("task_mix: multi-task batches are for the supervised losses; --method grpo samples the span "
                          "answer of stvg / tvg rows (rec rows are left out)")
    if args.use_vllm or args.use_transformers_continuous_batching or args.cast_lm_head_to_fp32:
        raise RecipeError("use_vllm / use_transformers_continuous_batching / cast_lm_head_to_fp32: not supported by "
                          "--method grpo (generation runs through transformers' generate with the video inputs)")
    if args.fsdp or _zero3(args):
        raise RecipeError("--method grpo runs on one device, DDP or DeepSpeed ZeRO-2 (the tube reward runs the MLLM "
                          "outside a sharded engine): FSDP and ZeRO-3 are not supported")
    unknown = [r for r in args.rewards if r not in REWARD_NAMES]
    if unknown or not args.rewards or len(set(args.rewards)) != len(args.rewards):
        raise RecipeError(f"rewards: {args.rewards}: each of {list(REWARD_NAMES)} at most once")
    if args.reward_weights is not None and len(args.reward_weights) != len(args.rewards):
        raise RecipeError(f"reward_weights: {len(args.reward_weights)} weights for {len(args.rewards)} rewards "
                          f"{args.rewards}")
    if args.reward_protocol is not None and args.reward_protocol not in ("tubedetr", "sampled", "dense", "hcstvg"):
        raise RecipeError(f"reward_protocol: tubedetr, sampled, dense or hcstvg, got {args.reward_protocol!r}")
    if args.tube_reward_batch_size < 1:
        raise RecipeError(f"tube_reward_batch_size: must be >= 1, got {args.tube_reward_batch_size}")


def _zero3(args: Any) -> bool:
    from .recipe import _zero_stage

    return _zero_stage(args) == 3


def run_grpo(model_args: ModelArguments, data_args: DataArguments, args: BridgeSTGGRPOConfig,
             run_args: RunArguments) -> dict[str, Any]:
    """Build, train with GRPO (unless ``dry_run``), evaluate and save; return the run summary."""
    import torch
    from transformers import set_seed
    from transformers.utils import logging

    from bridge_stg.model_cards.hub import save_for_hub
    from bridge_stg.processing.collator import BridgeSTGDataCollator
    from bridge_stg.processing.paths import write_text_atomic
    from .grpo import BridgeSTGGRPOTrainer, grounding_model_after_training, grpo_dataset, mllm_lora_config
    from .lora import freeze_vision_encoder
    from .predict import evaluate_grounding
    from .recipe import _count, build_model_and_processor, load_split, upcast_trainable_parameters, video_root
    from .rewards import build_reward_funcs

    check_grpo_arguments(model_args, data_args, args, run_args)
    logger = logging.get_logger("bridge_stg.train")
    set_seed(args.seed)
    model, processor = build_model_and_processor(model_args)
    if model.config.span_source != "text" or model.config.grounding_mode != "decoupled":
        raise RecipeError(f"--method grpo trains the MLLM's text span answer: the model is span_source="
                          f"{model.config.span_source!r}, grounding_mode={model.config.grounding_mode!r}; set "
                          "config_overrides {span_source: text} (a frame-mode checkpoint's LM has never written an answer: "
                          "expect little reward until it does)")
    if model_args.freeze_vision:
        freeze_vision_encoder(model)
    peft_config = mllm_lora_config(model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout) if model_args.lora else None
    if peft_config is None and model_args.upcast_trainable and not args.deepspeed:
        upcast = upcast_trainable_parameters(model.mllm)
        if upcast:
            logger.warning(f"{PROG}: {upcast / 1e6:.2f} M trainable parameters kept in float32 (the rest stays 16-bit)")
    sampling = {"sample_fps": data_args.sample_fps, "max_frames": data_args.max_frames, "min_frames": data_args.min_frames}
    root = video_root(data_args)
    try:
        train_ds = grpo_dataset(load_split(data_args, data_args.train_split, data_args.max_train_samples))
    except ValueError as err:
        raise RecipeError(f"{data_args.dataset}: {err}") from err
    funcs = build_reward_funcs(args.rewards, model, processor, protocol=args.reward_protocol,
                               tube_batch_size=args.tube_reward_batch_size)
    output_dir = args.output_dir
    if run_args.dry_run:  # the Trainer creates its output folder: a dry run leaves --output_dir alone
        args.output_dir = tempfile.mkdtemp(prefix="bridge_stg_grpo_dry_run_")
    try:
        trainer = BridgeSTGGRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=train_ds,
                                       processor=processor, video_root=root, peft_config=peft_config, **sampling)
    finally:
        if run_args.dry_run:
            shutil.rmtree(args.output_dir, ignore_errors=True)
            args.output_dir = output_dir
    total, trainable = _count(trainer.model)
    logger.warning(f"{PROG}: GRPO on the MLLM, {total / 1e6:.2f} M parameters in the policy, {trainable / 1e6:.2f} M "
                   f"trainable; rewards {args.rewards} weights {trainer.reward_weights.tolist()}")
    summary: dict[str, Any] = {
        "method": "grpo", "parameters": total, "trainable_parameters": trainable, "train_rows": len(train_ds),
        "rewards": list(args.rewards), "reward_weights": trainer.reward_weights.tolist(),
        "num_generations": args.num_generations, "beta": args.beta, "output_dir": args.output_dir,
        "world_size": args.world_size,
    }
    if run_args.dry_run:  # one generation batch: sampling, log-probabilities, rewards (no optimiser step)
        rows = [train_ds[i % len(train_ds)] for i in range(args.per_device_train_batch_size)]
        trainer.model.train()
        scored = trainer._generate_and_score_completions(rows)
        summary["completions"] = int(scored["completion_ids"].shape[0])
        summary["rewards_mean"] = {k.split("/")[1]: v[-1] for k, v in trainer._metrics["train"].items()
                                   if k.startswith("rewards/") and k.endswith("/mean")}
        summary["dry_run"] = True
        return summary

    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_metrics("train", result.metrics)
    summary["train"] = result.metrics
    summary["log_history"] = [h for h in trainer.state.log_history if "reward" in h]
    out = Path(args.output_dir)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        final = grounding_model_after_training(trainer).eval()
        final.to(final.mllm.get_input_embeddings().weight.dtype)  # published in one dtype, the backbone's
        card_metrics = None
        if data_args.eval_split:
            eval_rows = [r for r in load_split(data_args, data_args.eval_split, data_args.max_eval_samples)
                         if r.get("task", "stvg") == "stvg"]
            if eval_rows:
                collator = BridgeSTGDataCollator(processor, root, training=False, **sampling)
                with torch.no_grad():
                    card_metrics = evaluate_grounding(final, collator, eval_rows, batch_size=args.per_device_eval_batch_size,
                                                      protocol=data_args.eval_protocol)
                card_metrics["dataset"] = f"{data_args.dataset}:{data_args.eval_split}"
                summary["eval"] = {k: card_metrics["all"][k] for k in ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5")}
                write_text_atomic(out / "eval_results.json", json.dumps(card_metrics, indent=1, default=str))
        base = model_args.mllm or model_args.model_name_or_path
        weights = ", ".join(f"{n} x{w:g}" for n, w in zip(args.rewards, trainer.reward_weights.tolist()))
        card = {"model_name": out.name, "training_data": data_args.dataset,
                "training_procedure": f"GRPO (TRL GRPOTrainer) on the MLLM's span answer from {base or 'a tiny backbone'}: "
                                      f"{args.num_generations} completions per prompt, rewards {weights}, beta {args.beta}, "
                                      f"{'LoRA r ' + str(model_args.lora_r) if model_args.lora else 'full fine-tuning'}"}
        if base and not os.path.isdir(base):
            card["base_model"] = base
        save_for_hub(final, processor, out, metrics=card_metrics, card_kwargs=card, overwrite=True)
        summary["checkpoint"] = str(out)
        write_text_atomic(out / "training_args.json", args.to_json_string())
        (out / "training_args.bin").unlink(missing_ok=True)
        write_text_atomic(out / "run_summary.json", json.dumps(summary, indent=1, default=str))
    trainer.accelerator.wait_for_everyone()
    return summary


__all__ = ["BridgeSTGGRPOConfig", "check_grpo_arguments", "run_grpo"]
