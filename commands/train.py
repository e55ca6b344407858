"""``bridge-stg train``: fine-tune Bridge-STG with ``transformers.Trainer`` from a recipe file plus overrides.

Examples::

    # a recipe (YAML or JSON) with every option; any option can be overridden on the command line
    bridge-stg train recipes/qwen2_5_vl_7b_vidstg_lora_1gpu.yaml --output_dir runs/lora --max_steps 100

    # multi-GPU: the same command under accelerate (DDP / FSDP / DeepSpeed configs in recipes/accelerate/)
    accelerate launch --config_file recipes/accelerate/ddp_8gpu.yaml -m bridge_stg.commands.train \\
        recipes/qwen2_5_vl_7b_vidstg_full_8gpu.yaml

    # the CPU smoke recipe: a tiny random Qwen2.5-VL backbone on the synthetic benchmark
    bridge-stg synth --out synth_data --num_videos 64
    bridge-stg train recipes/synthetic_tiny_cpu.yaml --dataset synth_data --output_dir runs/tiny

    # reinforcement fine-tuning (GRPO, trl.GRPOTrainer) of a text-mode checkpoint's span answer; its options:
    bridge-stg train --method grpo --help
    bridge-stg train recipes/grpo_synthetic_tiny_cpu.yaml --dataset synth_data --output_dir runs/grpo_tiny

The model comes from exactly one of ``--model_name_or_path`` (a Bridge-STG checkpoint: continue training),
``--mllm`` (a Qwen2.5-VL / Qwen3-VL checkpoint, Hub id or folder: fresh bridge and decoder) or
``--tiny_backbone`` (a tiny randomly initialised backbone with the compact tokenizer, for CPU runs and
tests). The dataset is a ``datasets`` dataset in the canonical schema (``docs/schema.md``): a folder written by
``bridge-stg convert`` / ``bridge-stg synth`` or a Hub id. At the end, ``--output_dir`` holds a complete
checkpoint folder (``save_for_hub``: safetensors weights, processor, remote code, model card) that
``AutoModel.from_pretrained`` and ``pipeline("video-grounding")`` load directly; the Trainer's
``checkpoint-*`` folders sit beside it for ``--resume_from_checkpoint``.

``--dry_run`` builds the model, the data and one collated batch, runs one forward pass, prints a JSON
summary (parameters, trainable parameters, rows, batch shapes, losses) and exits without training.

Training needs the ``[train]`` extra (``pip install "bridge-stg[train]"``: accelerate, and peft for ``--lora``); without
it the command says so in one line. ``--output_dir`` may be absent, empty or a folder of an earlier ``bridge-stg train``
(``run_summary.json`` or a ``checkpoint-*`` folder: the run continues there, e.g. with ``--resume_from_checkpoint``);
any other non-empty folder needs ``--overwrite`` (the run then writes into it), and a folder holding an input (the
dataset, the starting checkpoint) is refused.
Exit codes: 0 success, 2 bad recipe / arguments / data / missing extra (one line on stderr; ``bridge-stg --debug train``
for the traceback: ``--debug`` after the command is ``TrainingArguments``' own option), 1 unexpected failure.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from bridge_stg.commands.common import plan_output_folder, run_command

from bridge_stg.training.recipe import (
    LABEL_NAMES,
    METHODS,
    PROG,
    DataArguments,
    ModelArguments,
    RecipeError,
    RunArguments,
    check_arguments,
    check_train_dependencies,
    load_recipe,
    run,
)

# ------------------------------------------------------------------------------------------------ parsing
def _parser(method: str = "supervised") -> Any:
    """The options of ``method``: ``TrainingArguments`` (supervised) or, for ``grpo``, ``BridgeSTGGRPOConfig``
    (``trl.GRPOConfig`` + the rewards; imported only then)."""
    from transformers import HfArgumentParser, TrainingArguments

    if method == "grpo":
        check_train_dependencies(grpo=True)
        from bridge_stg.training.grpo_recipe import BridgeSTGGRPOConfig

        training, what = BridgeSTGGRPOConfig, "reinforcement fine-tuning (GRPO, trl.GRPOTrainer)"
    else:
        training, what = TrainingArguments, "transformers.Trainer"
    return HfArgumentParser((ModelArguments, DataArguments, training, RunArguments), prog=PROG,
                            description=f"Fine-tune Bridge-STG with {what}. Usage: "
                                        f"{PROG} [RECIPE.yaml|RECIPE.json] [--method supervised|grpo] [--option value ...]")


def _method(recipe: dict[str, Any], argv: Sequence[str]) -> str:
    """``--method`` as the command line (last one) or else the recipe gives it; ``supervised`` by default."""
    method = recipe.get("method", "supervised")
    for i, arg in enumerate(argv):
        if arg == "--method" and i + 1 < len(argv):
            method = argv[i + 1]
        elif arg.startswith("--method="):
            method = arg.split("=", 1)[1]
    if method not in METHODS:
        raise RecipeError(f"method: must be one of {METHODS}, got {method!r}")
    return str(method)


def parse_args(argv: Sequence[str]) -> tuple[Any, Any, Any, Any]:
    """``(model_args, data_args, training_args, run_args)`` from an optional recipe file (first argument ending in
    .yaml/.yml/.json) and command-line overrides (which win). Unknown recipe keys raise :class:`RecipeError`."""
    argv = list(argv)
    recipe: dict[str, Any] = {}
    recipe_path = None
    if argv and not argv[0].startswith("-") and Path(argv[0]).suffix.lower() in (".yaml", ".yml", ".json"):
        recipe_path = argv.pop(0)
        recipe = load_recipe(recipe_path)
    method = _method(recipe, argv)
    parser = _parser(method)
    known = {a.dest for a in parser._actions}
    unknown = sorted(k for k in recipe if k not in known)
    if unknown:
        raise RecipeError(f"{recipe_path}: unknown option(s) {unknown} (see `{PROG} --help`)")
    recipe = {k: (json.dumps(v) if k == "config_overrides" and isinstance(v, dict) else v) for k, v in recipe.items()}
    parser.set_defaults(**recipe)
    model_args, data_args, training_args, run_args = parser.parse_args_into_dataclasses(args=argv)
    explicit = set(recipe) | {a.split("=")[0].lstrip("-") for a in argv if a.startswith("--")}
    if "remove_unused_columns" in explicit and training_args.remove_unused_columns:
        raise RecipeError("remove_unused_columns: must be false (the collator reads the dataset's columns)")
    training_args.remove_unused_columns = False
    if training_args.label_names is None and method == "supervised":
        training_args.label_names = list(LABEL_NAMES)
    check_arguments(model_args, data_args, training_args, run_args)
    return model_args, data_args, training_args, run_args


def written_by_train(folder: Path) -> bool:
    """A folder of an earlier ``bridge-stg train``: its ``run_summary.json`` (a finished run) or a Trainer
    ``checkpoint-*`` folder (a run to resume)."""
    return (folder / "run_summary.json").is_file() or any(folder.glob("checkpoint-*/trainer_state.json"))


def check_output_dir(model_args: Any, data_args: Any, training_args: Any, run_args: Any) -> None:
    """Refuse an ``--output_dir`` that holds an input, or someone else's non-empty folder without ``--overwrite``; say
    when the run continues in a folder of an earlier run. Checked by the main process only (the launcher stops the
    others when it fails), before anything is written."""
    from transformers.utils import logging

    inputs = [p for p in (data_args.dataset, data_args.video_root, model_args.model_name_or_path, model_args.mllm)
              if p and os.path.exists(p)]
    plan = plan_output_folder(training_args.output_dir, run_args.overwrite, "--output_dir", PROG, written_by_train,
                              inputs=inputs)
    if plan.action != "create":
        why = "written by an earlier run" if plan.action == "refresh" else "--overwrite"
        logging.get_logger("bridge_stg.train").warning(
            f"{PROG}: writing into {plan.path} ({why}); files of the same names are replaced, the others kept")


def _run(argv: list[str]) -> int:
    try:
        check_train_dependencies(lora=False)  # TrainingArguments itself needs accelerate
        args = parse_args(argv)
    except SystemExit as exc:  # argparse: --help or a usage error (already printed)
        return int(exc.code or 0)
    except ValueError as err:  # TrainingArguments' own checks of its options
        if isinstance(err, RecipeError):
            raise
        raise RecipeError(str(err)) from err
    model_args, data_args, training_args, run_args = args
    check_train_dependencies(lora=model_args.lora, grpo=run_args.method == "grpo")
    if not run_args.dry_run and training_args.process_index == 0:
        check_output_dir(*args)
    summary = run(*args)
    if training_args.process_index == 0:
        print(json.dumps({k: v for k, v in summary.items() if k != "train"} | {"train": summary.get("train")}, default=str))
    return 0


def main(argv: list[str]) -> int:
    """Run ``bridge-stg train``; returns the exit code (2 on bad input, with one line on stderr)."""
    from bridge_stg.errors_bridge_stg import BridgeSTGError

    # ``--debug`` stays in argv: it is an option of TrainingArguments (``bridge-stg --debug train`` shows tracebacks)
    return run_command(PROG, _run, argv, errors=(BridgeSTGError, OSError), strip_debug=False)


if __name__ == "__main__":  # ``accelerate launch -m bridge_stg.commands.train RECIPE.yaml``
    sys.exit(main(sys.argv[1:]))
