"""The demo recipe's auxiliary tasks (training/multitask_demo.py): streams, the in-memory path equals the dataset path,
a few multi-task demo steps, per-task scoring of items in memory."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bridge_stg.processing.collator import BridgeSTGDataCollator
from bridge_stg.processing.synthetic import SyntheticSpec
from bridge_stg.processing.synthetic_tasks import write_synthetic_task_dataset
from bridge_stg.training.demo import (
    DEMO_FAMILIES, TEST_STREAM, TRAIN_STREAM, VALIDATION_STREAM, DemoModelArguments, DemoTrainingArguments,
    build_demo_model, render_clips, train_demo,
)
from bridge_stg.training.multitask_demo import (
    AUX_STREAMS, AuxTaskStream, aux_families, evaluate_task_items, render_task_items, task_batch,
)

TARGET_KEYS = ("frame_labels", "target_boxes", "target_box_mask", "labels", "task_ids", "frame_mask", "frame_ids")


def test_streams_are_distinct_and_aux_families_follow_the_run():
    streams = [TRAIN_STREAM, VALIDATION_STREAM, TEST_STREAM] + [s for t in AUX_STREAMS.values() for s in t.values()]
    assert len(set(streams)) == len(streams)
    train = render_task_items("tvg", AUX_STREAMS["tvg"]["train"], 0, 0, 2, ("action",))
    test = render_task_items("tvg", AUX_STREAMS["tvg"]["test"], 0, 0, 2, ("action",))
    stvg = render_clips(TRAIN_STREAM, 0, 0, 2, families=("action",))
    assert not any(np.array_equal(a.frames, b.frames) for a in train for b in test + [c for c in stvg])
    assert aux_families("tvg", DEMO_FAMILIES) == ("appearance", "action", "twins_motion", "relational")
    assert aux_families("rec", ("appearance",)) == ("appearance",)
    with pytest.raises(ValueError, match="no exact|none of the families"):
        aux_families("rec", ("twins_event",))
    base = dict(seed=0, families=DEMO_FAMILIES, aux_batch_size=2, aux_loss_weight=1.0)
    for bad, msg in ((dict(aux_tasks=("vqa",)), "unknown"), (dict(aux_tasks=("tvg", "tvg")), "repeated"),
                     (dict(aux_tasks=("tvg",), aux_batch_size=0), "aux_batch_size"),
                     (dict(aux_tasks=("rec",), aux_loss_weight=float("nan")), "aux_loss_weight")):
        with pytest.raises(ValueError, match=msg):
            AuxTaskStream(SimpleNamespace(**(base | bad)), processor=None)


def test_in_memory_items_collate_as_their_dataset_rows(tmp_path):
    """The demo's in-memory batches of tvg / rec items carry the targets the collator builds from the written rows
    (rec: the same pixels, the PNG is lossless)."""
    from datasets import load_dataset

    from bridge_stg.processing.synthetic_tasks import render_task_item, task_rng

    spec = SyntheticSpec(width=64, height=48, num_frames=48)
    write_synthetic_task_dataset(tmp_path, {"tvg": 2, "rec": 2}, seed=6, spec=spec, splits=(1.0, 0.0, 0.0), progress=False)
    rows = list(load_dataset(str(tmp_path), split="train"))
    _, processor = build_demo_model(DemoModelArguments(frame_side=56))
    collator = BridgeSTGDataCollator(processor, str(tmp_path))
    for row in rows:
        task, i = row["task"], int(row["query_id"][-6:])
        family = row["query_id"][len(task) + 1:-7]
        item = render_task_item(task, task_rng(task, 6, i), family, spec)
        mem, ds = task_batch(processor, [item]), collator([row])
        for key in TARGET_KEYS:
            assert torch.equal(mem[key], ds[key]), (task, key)
        if task == "rec":
            assert torch.equal(mem["pixel_values_videos"], ds["pixel_values_videos"])
            assert mem["frame_labels"].tolist() == [[1, 1]] and mem["target_box_mask"].tolist() == [[True, True]]
        else:
            assert not mem["target_box_mask"].any() and mem["frame_labels"].eq(1).any()


def test_demo_with_aux_tasks_trains_and_scores_each_task(tmp_path):
    args = DemoTrainingArguments(output_dir=str(tmp_path / "ckpt"), max_steps=2, minutes=1e9, eval_every_minutes=1e9,
                                 num_eval_clips=2, num_threads=1, families=DEMO_FAMILIES, aux_tasks=("tvg", "rec"),
                                 aux_batch_size=2)
    summary = train_demo(args, progress=False)
    assert summary["steps"] == 2 and tuple(summary["args"]["aux_tasks"]) == ("tvg", "rec")
    assert json.loads((tmp_path / "ckpt" / "training_summary.json").read_text())["steps"] == 2
    # the learning curve keeps each task's loss apart (the step's total is their weighted sum)
    losses = summary["validation"]["losses"]
    assert {"stvg", "tvg", "rec"} <= set(losses) and all(math.isfinite(v) for v in losses.values())
    assert all(losses[t] > 0 for t in ("stvg", "tvg", "rec"))
    from bridge_stg import BridgeSTGForVideoGrounding, BridgeSTGProcessor

    model = BridgeSTGForVideoGrounding.from_pretrained(tmp_path / "ckpt").eval()
    processor = BridgeSTGProcessor.from_pretrained(tmp_path / "ckpt")
    # the step's loss is the stvg loss plus each task's, one forward each
    stream = AuxTaskStream(args, processor)
    model.train()
    zero = torch.zeros(())
    total, parts = stream.add_losses(model, 0, zero)
    assert set(parts) == {"tvg", "rec"} and float(total.detach()) == pytest.approx(parts["tvg"] + parts["rec"], rel=1e-5)
    model.eval()
    for task in ("stvg", "tvg", "rec"):
        fams = DEMO_FAMILIES if task == "stvg" else aux_families(task, DEMO_FAMILIES)
        stream_id = TEST_STREAM if task == "stvg" else AUX_STREAMS[task]["test"]
        items = render_task_items(task, stream_id, 0, 0, len(fams), fams)
        res = evaluate_task_items(model, processor, items, task)
        assert set(res["families"]) == set(fams)
        headline = res["all"]["m_vIoU"] if task == "stvg" else res["m_tIoU"] if task == "tvg" else res["accuracy@0.5"]
        assert 0.0 <= headline <= 1.0
