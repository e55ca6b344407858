"""``bridge-stg train``: recipe parsing, the shipped recipes and accelerate configs, a dry run, an end-to-end
tiny run whose folder the pipeline loads, the --mllm start, LoRA, and (slow) 2-process DDP under
``accelerate launch`` (gloo) with per-rank audits."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bridge_stg.commands import train as train_cmd
from bridge_stg.commands.train import RecipeError, load_recipe, parse_args
from bridge_stg.training.recipe import state_digest, upcast_trainable_parameters
from bridge_stg.processing.synthetic import SyntheticSpec, write_synthetic_dataset
from helpers_grounding import pipeline_without_the_package

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
TINY = str(RECIPES / "synthetic_tiny_cpu.yaml")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("train_cli_data")
    write_synthetic_dataset(root, 12, seed=3, spec=SyntheticSpec(width=64, height=48, fps=10.0, num_frames=30),
                            progress=False)
    return str(root)


def _fast(out, *extra: str) -> list[str]:
    return [TINY, "--output_dir", str(out), "--disable_tqdm", "true", *extra]


# ------------------------------------------------------------------------------------------------ parsing
def test_recipe_values_and_overrides(tmp_path) -> None:
    m, d, t, r = parse_args([TINY, "--dataset", "somewhere", "--max_steps", "7", "--head_learning_rate", "3e-3"])
    recipe = load_recipe(TINY)
    assert m.tiny_backbone == "qwen2_5_vl" and d.dataset == "somewhere"  # override wins over the recipe
    assert t.max_steps == 7 and recipe["max_steps"] != 7
    assert m.head_learning_rate == 3e-3 and m.mllm_learning_rate == recipe["mllm_learning_rate"]
    assert t.per_device_train_batch_size == recipe["per_device_train_batch_size"]
    assert t.remove_unused_columns is False
    assert t.label_names == ["labels", "frame_labels", "target_boxes", "target_box_mask"]


def test_json_recipe_with_config_overrides(tmp_path) -> None:
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"tiny_backbone": "qwen3_vl", "dataset": "d", "output_dir": str(tmp_path / "o"),
                             "config_overrides": {"decoder_layers": 3, "eta": False}}))
    m, _, _, _ = parse_args([str(p)])
    assert json.loads(m.config_overrides) == {"decoder_layers": 3, "eta": False}


@pytest.mark.parametrize("recipe, argv, message", [
    ({"tiny_backbone": "qwen2_5_vl", "dataset": "d", "output_dir": "o", "learning_rat": 1.0}, [], "unknown option"),
    ({"tiny_backbone": "qwen2_5_vl", "dataset": "d", "output_dir": "o"}, ["--remove_unused_columns", "true"],
     "remove_unused_columns"),
    ({"tiny_backbone": "qwen2_5_vl", "mllm": "x", "dataset": "d", "output_dir": "o"}, [], "exactly one"),
    ({"dataset": "d", "output_dir": "o"}, [], "exactly one"),
    ({"tiny_backbone": "llama", "dataset": "d", "output_dir": "o"}, [], "tiny_backbone"),
    ({"tiny_backbone": "qwen2_5_vl", "output_dir": "o"}, [], "dataset: required"),
    ({"tiny_backbone": "qwen2_5_vl", "dataset": "d", "output_dir": "o", "config_overrides": {"decoder_layer": 2}}, [],
     "config_overrides"),
    ({"tiny_backbone": "qwen2_5_vl", "dataset": "d", "output_dir": "o", "eval_strategy": "steps"}, [], "eval_split"),
])
def test_bad_recipes_are_refused(tmp_path, recipe, argv, message) -> None:
    p = tmp_path / "bad.yaml"
    import yaml

    p.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match=message):
        parse_args([str(p), *argv])
    assert train_cmd.main([str(p), *argv]) == 2


def test_unreadable_recipe(tmp_path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("a: [1, 2\n")
    with pytest.raises(RecipeError, match="broken.yaml: not valid YAML"):
        load_recipe(p)
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")
    p.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="mapping"):
        load_recipe(p)


@pytest.mark.parametrize("name", sorted(os.path.basename(p) for p in glob.glob(str(RECIPES / "*.yaml"))))
def test_shipped_recipes_parse(name) -> None:
    recipe = load_recipe(RECIPES / name)
    # GPU recipes ask for bf16, which TrainingArguments refuses on this CPU machine: parse them in fp32 here
    cpu = ["--bf16", "false", "--use_cpu", "true"] if recipe.get("bf16") else []
    m, d, t, _ = parse_args([str(RECIPES / name)] + cpu)
    assert t.output_dir and d.dataset
    text = (RECIPES / name).read_text()
    for word in ("frames", "resolution", "batch", "lr", "epochs" if "7b" in name else "steps"):
        assert word in text.split("\n\n")[0] or word in text, (name, word)  # each recipe states its settings
    if "7b" in name and recipe.get("method") == "grpo":  # GRPO continues the supervised recipe's checkpoint
        assert m.model_name_or_path and recipe["bf16"] is True and t.activation_checkpointing and m.lora
    elif "7b" in name:
        assert m.mllm == "Qwen/Qwen2.5-VL-7B-Instruct" and recipe["bf16"] is True and t.activation_checkpointing
        assert json.loads(m.config_overrides)["max_frames"] == 64


@pytest.mark.parametrize("name", sorted(os.path.basename(p) for p in glob.glob(str(RECIPES / "accelerate" / "*.yaml"))))
def test_accelerate_configs_load(name) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(RECIPES / "accelerate" / name))  # unknown keys raise
    assert config.num_processes >= 2
    if "fsdp" in name:
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert "fsdp_transformer_layer_cls_to_wrap" not in config.fsdp_config  # falls back to _no_split_modules
    if "zero" in name:
        assert config.deepspeed_config["zero_stage"] == int(name.split("zero")[1][0])


# ------------------------------------------------------------------------------------------------ runs
def test_dry_run(synth, tmp_path, capsys) -> None:
    assert train_cmd.main(_fast(tmp_path / "o", "--dataset", synth, "--dry_run", "true")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["dry_run"] and summary["train_rows"] > 0
    assert summary["trainable_parameters"] < summary["parameters"]  # vision encoder frozen
    assert summary["batch"]["input_ids"][0] == 2 and summary["losses"]["loss"] > 0
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_train_evaluate_save_and_load_with_pipeline(synth, tmp_path, capsys) -> None:
    from transformers import AutoModel, pipeline

    out = tmp_path / "run"
    assert train_cmd.main(_fast(out, "--dataset", synth, "--max_steps", "3", "--save_steps", "2", "--logging_steps", "1")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "eval_m_vIoU" in summary["eval"] and summary["train"]["train_loss"] > 0
    assert (out / "checkpoint-2").is_dir() and (out / "model.safetensors").is_file()
    assert not (out / "training_args.bin").exists() and (out / "training_args.json").is_file()
    card = (out / "README.md").read_text()
    assert "m_vIoU" in card  # the final evaluation is on the model card
    logs = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    assert any("loss_giou" in h and "loss_span" in h for h in logs)  # component losses logged

    model = AutoModel.from_pretrained(out)
    assert type(model).__name__ == "BridgeSTGForVideoGrounding"
    clip = sorted(glob.glob(os.path.join(synth, "videos", "test", "*.mp4")))[0]
    result = pipeline("video-grounding", model=str(out), trust_remote_code=True, device="cpu")(clip, text="the red square")
    assert result["span_seconds"][1] >= result["span_seconds"][0] and len(result["tube"]) > 0
    # the folder is self-contained: it loads as remote code where bridge_stg cannot be imported
    remote = pipeline_without_the_package(out, clip, ["the red square"], tmp_path)["out"][0]
    assert remote["span"] == result["span"] and [t["frame"] for t in remote["tube"]] == [t["frame"] for t in result["tube"]]
    assert [t["score"] for t in remote["tube"]] == pytest.approx([t["score"] for t in result["tube"]], abs=1e-5)


def test_train_from_mllm_folder_and_lora(synth, tmp_path, qwen_tokenizer, capsys) -> None:
    """--mllm starts from a saved Qwen2.5-VL checkpoint (here a tiny random one with the real Qwen tokenizer);
    with --lora only adapters + bridge/decoder/heads change and the saved folder is a merged model."""
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from bridge_stg import BridgeSTGForVideoGrounding
    from bridge_stg.training.tiny import tiny_mllm_config

    base = tmp_path / "qwen_tiny"
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(tiny_mllm_config("qwen2_5_vl", qwen_tokenizer)).save_pretrained(base)
    qwen_tokenizer.save_pretrained(base)
    assert len(AutoTokenizer.from_pretrained(base)) == len(qwen_tokenizer)
    overrides = json.dumps({"num_bridge_queries": 4, "bridge_num_layers": 2, "decoder_layers": 2, "decoder_hidden_size": 64, "decoder_heads": 4,
                            "decoder_ffn_dim": 128, "max_frames": 8, "max_pixels": 3136, "min_pixels": 3136,
                            "max_video_tokens": 256, "num_positive_frames": 4, "num_negative_frames": 2})
    argv = [TINY, "--tiny_backbone", "", "--mllm", str(base), "--config_overrides", overrides, "--dataset", synth,
            "--disable_tqdm", "true", "--max_steps", "2", "--eval_split", "", "--save_strategy", "no"]
    out = tmp_path / "lora"
    assert train_cmd.main(argv + ["--output_dir", str(out), "--lora", "true", "--lora_r", "4", "--lora_alpha", "8"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["trainable_parameters"] < 0.5 * summary["parameters"]
    merged = BridgeSTGForVideoGrounding.from_pretrained(out)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    start = Qwen2_5_VLForConditionalGeneration.from_pretrained(base)
    q_new = merged.mllm.model.language_model.layers[0].self_attn.q_proj.weight
    q_old = start.model.language_model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q_new, q_old)  # the merged adapter changed the projection
    emb_new = merged.mllm.get_input_embeddings().weight[: q_old.shape[0]]
    torch.testing.assert_close(merged.mllm.model.visual.patch_embed.proj.weight, start.model.visual.patch_embed.proj.weight)
    assert emb_new.shape[1] == q_old.shape[1]


def _train_two_ranks(accelerate_config: str, synth, out) -> dict:
    """`bridge-stg train` (2 steps, rank audit on) launched by accelerate with a 2-process CPU config; its summary."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(RECIPES / "accelerate" / accelerate_config), "-m", "bridge_stg.commands.train", TINY,
           "--dataset", synth, "--output_dir", str(out), "--max_steps", "2", "--save_strategy", "no",
           "--eval_split", "", "--disable_tqdm", "true", "--audit", "true"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_ddp_two_processes_gloo(synth, tmp_path) -> None:
    """2 CPU processes under `accelerate launch` (DDP, gloo): the ranks train on different rows and end with
    identical weights, which are the weights of the saved checkpoint."""
    from bridge_stg import BridgeSTGForVideoGrounding

    out = tmp_path / "ddp"
    summary = _train_two_ranks("cpu_ddp_2proc.yaml", synth, out)
    assert summary["world_size"] == 2
    seen = []
    for rank in (0, 1):
        batches = [json.loads(line) for line in (out / "audit" / f"query_ids_rank{rank}.jsonl").read_text().splitlines()]
        # the collator may build one batch ahead of the last step (DataLoader prefetch): the first 2 were trained on
        assert len(batches) >= 2 and all(len(b) == 2 for b in batches)
        seen.append({q for b in batches[:2] for q in b})
    assert not seen[0] & seen[1], seen  # the two ranks saw different rows
    digests = {(out / "audit" / f"weights_rank{r}.sha256").read_text().strip() for r in (0, 1)}
    assert len(digests) == 1  # identical weights on both ranks
    saved = BridgeSTGForVideoGrounding.from_pretrained(out)
    assert state_digest(saved) == digests.pop()  # ... and they are the published checkpoint's


@pytest.mark.slow
def test_fsdp_two_processes_on_cpu(synth, tmp_path) -> None:
    """The FSDP path (full shard, transformer-layer wrapping) end to end on 2 CPU processes (gloo): both ranks hold
    the same full (unsharded) weights after training, and the checkpoint saved from the sharded model reloads to
    exactly them. (accelerate's sync_module_states needs an accelerator device, so the CPU config leaves it off:
    every rank builds the same weights from the seed.)"""
    from bridge_stg import BridgeSTGForVideoGrounding

    out = tmp_path / "fsdp"
    summary = _train_two_ranks("cpu_fsdp_2proc.yaml", synth, out)
    assert summary["world_size"] == 2 and summary["train"]["train_loss"] > 0
    seen = [{q for b in [json.loads(x) for x in (out / "audit" / f"query_ids_rank{r}.jsonl").read_text().splitlines()][:2]
             for q in b} for r in (0, 1)]
    assert not seen[0] & seen[1]  # the ranks trained on different rows
    digests = {(out / "audit" / f"weights_rank{r}.sha256").read_text().strip() for r in (0, 1)}
    assert len(digests) == 1
    assert state_digest(BridgeSTGForVideoGrounding.from_pretrained(out)) == digests.pop()


@pytest.mark.parametrize("lora", [False, True])
def test_activation_checkpointing_trains(synth, tmp_path, lora, capsys) -> None:
    """--activation_checkpointing runs forward/backward through the checkpointed Qwen layers (with LoRA the inputs
    are made to require grad so the frozen embeddings do not cut the graph) and a step completes."""
    out = tmp_path / "ckpt"
    extra = ["--lora", "true", "--lora_r", "4", "--merge_lora", "false"] if lora else []
    argv = _fast(out, "--dataset", synth, "--max_steps", "1", "--eval_split", "", "--save_strategy", "no",
                 "--activation_checkpointing", "true", "--logging_steps", "1", *extra)
    assert train_cmd.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["train"]["train_loss"] > 0
    if lora:
        assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
        assert (out / "processor_config.json").is_file()  # the adapter folder carries its processor


def test_bf16_weights_train_with_float32_trainables(synth, tmp_path, capsys) -> None:
    """Weights loaded in bf16 + --bf16 autocast + LoRA (the 1-GPU recipe's settings, on CPU): the trainable
    parameters are kept in float32, evaluation grounds under autocast, and the merged checkpoint is one dtype."""
    from safetensors import safe_open

    from bridge_stg import BridgeSTGForVideoGrounding

    out = tmp_path / "bf16"
    argv = _fast(out, "--dataset", synth, "--max_steps", "1", "--dtype", "bfloat16", "--bf16", "true",
                 "--lora", "true", "--lora_r", "4", "--save_strategy", "no")
    assert train_cmd.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "eval_m_vIoU" in summary["eval"]
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"BF16"}
    model = BridgeSTGForVideoGrounding.from_pretrained(out)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}

    m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)).to(torch.bfloat16)
    m[0].requires_grad_(False)
    assert upcast_trainable_parameters(m) == 6
    assert m[0].weight.dtype == torch.bfloat16 and m[1].weight.dtype == torch.float32


def test_coupled_baseline_through_the_trainer(synth, tmp_path, capsys) -> None:
    """grounding_mode=coupled trains with the same collator / Trainer path (LM loss only) and is scored by the
    same metric; where its generations came from (an untrained model: unparsable) is counted in the eval logs."""
    out = tmp_path / "coupled"
    argv = _fast(out, "--dataset", synth, "--max_steps", "1", "--save_strategy", "no", "--logging_steps", "1",
                 "--config_overrides", json.dumps({"grounding_mode": "coupled", "max_new_tokens": 64}))
    assert train_cmd.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ev = summary["eval"]
    assert "eval_m_vIoU" in ev and 0.0 <= ev["eval_m_vIoU"] <= 1.0
    counted = {k: v for k, v in ev.items() if k.startswith("eval_span_source/")}
    assert sum(counted.values()) == summary["eval_rows"]
    assert set(counted) <= {f"eval_span_source/{s}" for s in ("coupled", "coupled_boxes", "coupled_no_boxes", "unparsable")}
    from bridge_stg import BridgeSTGForVideoGrounding

    assert BridgeSTGForVideoGrounding.from_pretrained(out).config.grounding_mode == "coupled"
