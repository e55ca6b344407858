"""Multi-task training (training/multitask.py, evaluation/task_metrics.py): a mixed batch of the three tasks trains on
the tiny model with every task's losses finite and the others absent, the task blocks, the options, per-task
evaluation, and ``bridge-stg train`` with ``task_mix``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import TrainingArguments

from bridge_stg import BridgeSTGConfig, BridgeSTGForVideoGrounding, BridgeSTGProcessor
from bridge_stg.commands import train as train_cmd
from bridge_stg.configuration_bridge_stg import COMPONENT_LOSSES
from bridge_stg.errors_bridge_stg import PredictionError
from bridge_stg.evaluation.task_metrics import compute_rec_metrics, compute_tvg_metrics
from bridge_stg.processing.collator import BridgeSTGDataCollator
from bridge_stg.processing.synthetic import SyntheticSpec
from bridge_stg.processing.synthetic_tasks import write_synthetic_task_dataset
from bridge_stg.training.multitask import (
    TASK_COMPONENTS, MultiTaskTrainer, TaskBlockSampler, TaskMixError, check_task_options, evaluate_task_rows,
    parse_task_loss_weights, parse_task_mix,
)
from bridge_stg.training.recipe import state_digest
from bridge_stg.training.tiny import tiny_bridge_kwargs, tiny_mllm_config

SPEC = SyntheticSpec(width=64, height=48, num_frames=48)
RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "synthetic_multitask_tiny_cpu.yaml")
MIX = {"stvg": 2, "tvg": 1, "rec": 1}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, compact_tokenizer):
    from datasets import load_dataset

    root = tmp_path_factory.mktemp("multitask")
    write_synthetic_task_dataset(root, {"stvg": 6, "tvg": 5, "rec": 5}, seed=1, spec=SPEC, progress=False)
    ds = load_dataset(str(root))
    config = BridgeSTGConfig(
        mllm_config=tiny_mllm_config("qwen2_5_vl", compact_tokenizer),
        bridge_token_ids=BridgeSTGProcessor(tokenizer=compact_tokenizer, num_bridge_queries=4).bridge_token_ids,
        **tiny_bridge_kwargs(),
    )
    return {"root": str(root), "train": ds["train"], "validation": ds["validation"], "config": config,
            "processor": BridgeSTGProcessor.from_model_config(config, compact_tokenizer)}


def _model(setup, seed: int = 0) -> BridgeSTGForVideoGrounding:
    torch.manual_seed(seed)
    return BridgeSTGForVideoGrounding(setup["config"])


def test_mixed_batches_train_with_each_task_losses_finite_and_the_others_absent(setup, tmp_path):
    model = _model(setup)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=4, max_steps=3, learning_rate=1e-3, logging_steps=1,
                             save_strategy="no", report_to="none", use_cpu=True, remove_unused_columns=False, seed=3,
                             dataloader_num_workers=0, disable_tqdm=True)
    from bridge_stg.training.multitask import MultiTaskCollator

    trainer = MultiTaskTrainer(model=model, args=args, train_dataset=setup["train"], task_mix=MIX,
                               task_loss_weights={"tvg": 0.5, "rec": 0.25},
                               data_collator=MultiTaskCollator(BridgeSTGDataCollator(setup["processor"], setup["root"]), MIX))
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3
    # loss_reference_weight and loss_query_weight are 0 in the tiny config: those components are not logged
    expected = {"stvg": set(COMPONENT_LOSSES) - {"loss_reference", "loss_query"},
                "tvg": {"loss_lm", "loss_relevance", "loss_contrastive", "loss_span"},
                "rec": {"loss_l1", "loss_giou", "loss_presence"}}
    for h in logs:
        for task, comps in expected.items():
            logged = {k.split("/")[0] for k in h if k.endswith(f"/{task}")}
            assert logged == comps | {"loss"}, (task, sorted(logged))
            assert all(math.isfinite(h[f"{c}/{task}"]) and h[f"{c}/{task}"] > 0 for c in logged)
        # the step's loss is the weighted sum of the tasks' losses
        assert h["loss"] == pytest.approx(h["loss/stvg"] + 0.5 * h["loss/tvg"] + 0.25 * h["loss/rec"], rel=2e-3)
    assert "loss_l1/tvg" not in logs[0] and "loss_lm/rec" not in logs[0] and "loss_span/rec" not in logs[0]
    changed = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert {"mllm", "stsb", "qgsl"} <= changed


def test_absent_losses_are_exactly_zero_in_the_model_output(setup):
    """The model's documented task switches (forward / _grounding_losses): tvg has no decoder and box losses, rec no LM,
    relevance, contrastive or span loss."""
    model = _model(setup, seed=1)
    collator = BridgeSTGDataCollator(setup["processor"], setup["root"])
    rows = list(setup["train"])
    for task in ("tvg", "rec"):
        batch = collator([r for r in rows if r["task"] == task][:2])
        out = model(**{k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})
        applies = set(TASK_COMPONENTS[task])
        for c in COMPONENT_LOSSES:
            value = float(getattr(out, c).detach())
            if c not in applies or c in ("loss_reference", "loss_query"):  # weight 0 in the tiny config
                assert value == 0.0, (task, c)
            else:
                assert math.isfinite(value) and value > 0, (task, c)


def test_task_block_sampler():
    tasks = ["stvg"] * 7 + ["tvg"] * 2 + ["rec"] * 9
    sampler = TaskBlockSampler(tasks, MIX, seed=5)
    assert sampler.num_blocks == 4 and len(sampler) == 16  # one pass over the 7 stvg rows, 2 per block
    order = list(sampler)
    assert [tasks[i] for i in order] == ["stvg", "stvg", "tvg", "rec"] * 4
    stvg = [i for i in order if tasks[i] == "stvg"]
    assert len(set(stvg)) == 7  # every stvg row once in the epoch (one cycled to fill the last block)
    assert [tasks[i] for i in order].count("tvg") == 4 and {i for i in order if tasks[i] == "tvg"} == {7, 8}  # cycled
    assert len({i for i in order if tasks[i] == "rec"}) == 4  # subsampled without replacement
    assert list(TaskBlockSampler(tasks, MIX, seed=5)) == order  # deterministic
    sampler.set_epoch(1)
    assert list(sampler) != order
    with pytest.raises(TaskMixError, match="no rows of task"):
        TaskBlockSampler(["stvg", "tvg"], MIX)


def test_task_options(tmp_path):
    assert parse_task_mix("stvg=2, tvg=1,rec=1", 4) == MIX and parse_task_mix('{"stvg": 3}') == {"stvg": 3}
    assert parse_task_loss_weights("rec=0.5", MIX) == {"stvg": 1.0, "tvg": 1.0, "rec": 0.5}
    for text, msg in (("stvg=2,tvg=1", "must equal per_device_train_batch_size"), ("stvg=1.5,tvg=2.5", "integer"),
                      ("vqa=4", "unknown task"), ("stvg", "task=value"), ("stvg=2,stvg=2", "twice")):
        with pytest.raises(TaskMixError, match=msg):
            parse_task_mix(text, 4)
    with pytest.raises(TaskMixError, match="not in task_mix"):
        parse_task_loss_weights("rec=1", {"stvg": 2})
    recipe = RECIPE
    _, d, t, _ = train_cmd.parse_args([recipe])
    assert parse_task_mix(d.task_mix, t.per_device_train_batch_size) == MIX
    with pytest.raises(TaskMixError, match="must equal"):
        train_cmd.parse_args([recipe, "--per_device_train_batch_size", "2"])
    with pytest.raises(TaskMixError, match="needs task_mix"):
        train_cmd.parse_args([recipe, "--task_mix", "", "--task_loss_weights", "rec=1"])
    # several processes: DDP must not search one forward's graph for unused parameters
    data = SimpleNamespace(task_mix="stvg=2,tvg=1,rec=1", task_loss_weights=None)
    with pytest.raises(TaskMixError, match="ddp_find_unused_parameters false"):
        check_task_options(data, SimpleNamespace(world_size=2, ddp_find_unused_parameters=True, per_device_train_batch_size=4))
    check_task_options(data, SimpleNamespace(world_size=2, ddp_find_unused_parameters=False, per_device_train_batch_size=4))


def test_task_metrics_exact():
    refs = [{"query_id": "a", "task": "tvg", "tube_start": 10, "tube_end": 20},
            {"query_id": "b", "task": "tvg", "tube_start": 0, "tube_end": 10},
            {"query_id": "c", "task": "tvg", "tube_start": 0, "tube_end": 4}]
    preds = [{"query_id": "a", "span": [10, 20]}, {"query_id": "b", "span": [5, 15]}]  # IoU 1, 5/15; c missing: 0
    r = compute_tvg_metrics(refs, preds)
    assert r["m_tIoU"] == pytest.approx((1 + 1 / 3) / 3) and r["R@0.3"] == pytest.approx(2 / 3)
    assert r["R@0.5"] == pytest.approx(1 / 3) and r["missing_predictions"]["count"] == 1
    rec = [{"query_id": "x", "task": "rec", "frame_ids": [0], "boxes": [[0, 0, 10, 10]]},
           {"query_id": "y", "task": "rec", "frame_ids": [0], "boxes": [[0, 0, 10, 10]]}]
    r = compute_rec_metrics(rec, [{"query_id": "x", "frame_ids": [0], "boxes": [[0, 0, 10, 5]]},  # IoU 0.5: counts
                                  {"query_id": "y", "frame_ids": [1], "boxes": [[0, 0, 10, 10]]}])  # no box on frame 0
    assert r["accuracy@0.5"] == 0.5 and r["m_IoU"] == 0.25 and r["missing_boxes"]["count"] == 1
    with pytest.raises(PredictionError, match="not a reference"):
        compute_tvg_metrics(refs, [{"query_id": "zz", "span": [0, 1]}])
    with pytest.raises(PredictionError, match="repeated"):
        compute_rec_metrics(rec, [{"query_id": "x", "frame_ids": [], "boxes": []}] * 2)


def test_per_task_evaluation_runs(setup):
    model = _model(setup, seed=2)
    collator = BridgeSTGDataCollator(setup["processor"], setup["root"], training=False)
    rows = list(setup["train"])
    by_task = {t: [r for r in rows if r["task"] == t] for t in ("tvg", "rec")}
    out = evaluate_task_rows(model, collator, by_task, batch_size=4)
    assert set(out) == {"eval_tvg/m_tIoU", "eval_tvg/R@0.3", "eval_tvg/R@0.5", "eval_tvg/R@0.7", "eval_rec/accuracy@0.5",
                        "eval_rec/m_IoU"}
    assert all(0.0 <= v <= 1.0 for v in out.values()) and out["eval_tvg/m_tIoU"] > 0 and out["eval_rec/m_IoU"] > 0


def test_bridge_stg_train_with_task_mix(setup, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [RECIPE, "--dataset", setup["root"], "--output_dir", str(out), "--max_steps", "2", "--save_strategy", "no",
            "--disable_tqdm", "true"]
    assert train_cmd.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["task_mix"] == MIX and summary["train"]["train_loss"] > 0
    ev = summary["eval"]
    for key in ("eval_m_vIoU", "eval_tvg/m_tIoU", "eval_tvg/R@0.5", "eval_rec/accuracy@0.5"):
        assert 0.0 <= ev[key] <= 1.0, key
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_ddp_two_processes_with_task_mix(setup, tmp_path):
    """2 CPU processes (DDP, gloo): every rank's batches hold the mix, the ranks see different rows and end with the
    same weights, the published ones."""
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(Path(RECIPE).parent / "accelerate" / "cpu_ddp_2proc.yaml"), "-m", "bridge_stg.commands.train", RECIPE,
           "--dataset", setup["root"], "--output_dir", str(out), "--max_steps", "2", "--save_strategy", "no",
           "--eval_split", "", "--disable_tqdm", "true", "--audit", "true"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["world_size"] == 2
    seen = []
    for rank in (0, 1):
        batches = [json.loads(line) for line in (out / "audit" / f"query_ids_rank{rank}.jsonl").read_text().splitlines()]
        assert all([q.split("_")[0] for q in b] == ["stvg", "stvg", "tvg", "rec"] for b in batches)
        seen.append({q for q in batches[0] if q.startswith("stvg")})
    assert not seen[0] & seen[1]  # the first step's blocks of the two ranks are different blocks of the epoch
    digests = {(out / "audit" / f"weights_rank{r}.sha256").read_text().strip() for r in (0, 1)}
    assert len(digests) == 1
    assert state_digest(BridgeSTGForVideoGrounding.from_pretrained(out)) == digests.pop()
