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
Exit codes: 0 success, 2 bad recipe / arguments / data (one line on stderr), 1 unexpected failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

from bridge_stg.training.recipe import (
    LABEL_NAMES,
    PROG,
    DataArguments,
    ModelArguments,
    RecipeError,
    RunArguments,
    check_arguments,
    load_recipe,
    run,
)

# ------------------------------------------------------------------------------------------------ parsing
def _parser() -> Any:
    from transformers import HfArgumentParser, TrainingArguments

    return HfArgumentParser((ModelArguments, DataArguments, TrainingArguments, RunArguments), prog=PROG,
                            description="Fine-tune Bridge-STG with transformers.Trainer. Usage: "
                                        f"{PROG} [RECIPE.yaml|RECIPE.json] [--option value ...]")


def parse_args(argv: Sequence[str]) -> tuple[Any, Any, Any, Any]:
    """``(model_args, data_args, training_args, run_args)`` from an optional recipe file (first argument ending in
    .yaml/.yml/.json) and command-line overrides (which win). Unknown recipe keys raise :class:`RecipeError`."""
    argv = list(argv)
    parser = _parser()
    recipe: dict[str, Any] = {}
    recipe_path = None
    if argv and not argv[0].startswith("-") and Path(argv[0]).suffix.lower() in (".yaml", ".yml", ".json"):
        recipe_path = argv.pop(0)
        recipe = load_recipe(recipe_path)
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
    if training_args.label_names is None:
        training_args.label_names = list(LABEL_NAMES)
    check_arguments(model_args, data_args, training_args, run_args)
    return model_args, data_args, training_args, run_args


def main(argv: list[str]) -> int:
    from bridge_stg.errors_bridge_stg import BridgeSTGError

    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse: --help or a usage error (already printed)
        return int(exc.code or 0)
    except (RecipeError, ValueError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    try:
        summary = run(*args)
    except (RecipeError, BridgeSTGError, FileNotFoundError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    if args[2].process_index == 0:
        print(json.dumps({k: v for k, v in summary.items() if k != "train"} | {"train": summary.get("train")}, default=str))
    return 0


if __name__ == "__main__":  # ``accelerate launch -m bridge_stg.commands.train RECIPE.yaml``
    sys.exit(main(sys.argv[1:]))
