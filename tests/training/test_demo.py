"""``bridge-stg demo``: a few training steps end to end, and the demo on the shipped checkpoint."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import av
import numpy as np
import pytest

from bridge_stg.commands.cli import main as cli_main
from helpers_grounding import pipeline_without_the_package
from bridge_stg.training.demo import (
    DEMO_FAMILIES, TEST_STREAM, TRAIN_STREAM, VALIDATION_STREAM, clip_rng, demo_checkpoint_path, render_clips, trivial_baseline_rows,
)

DEMO_CHECKPOINT = Path(demo_checkpoint_path())

METRIC_KEYS = ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5")


def _check_metrics_json(path: Path, num_queries: int) -> dict:
    result = json.loads(path.read_text())
    assert result["protocol"] == "tubedetr"
    for k in METRIC_KEYS:
        assert 0.0 <= result["all"][k] <= 1.0
    assert result["all"]["num_queries"] == num_queries
    return result


def test_streams_are_disjoint() -> None:
    a = clip_rng(TRAIN_STREAM, 0, 0).integers(1 << 62, size=4)
    b = clip_rng(VALIDATION_STREAM, 0, 0).integers(1 << 62, size=4)
    c = clip_rng(TEST_STREAM, 0, 0).integers(1 << 62, size=4)
    assert not np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(b, c)
    # deterministic
    assert np.array_equal(render_clips(TEST_STREAM, 3, 5, 1)[0].frames, render_clips(TEST_STREAM, 3, 5, 1)[0].frames)


def test_trivial_baseline_rows() -> None:
    clip = render_clips(TEST_STREAM, 0, 0, 1)[0]
    row = trivial_baseline_rows([clip], "t")[0]
    assert row["span"] == [0, clip.num_frames] and len(row["frame_ids"]) == len(row["boxes"]) > 0


def test_demo_train_few_steps_then_demo(tmp_path: Path) -> None:
    from transformers import AutoModel

    from bridge_stg import BridgeSTGForVideoGrounding, BridgeSTGProcessor

    ckpt = tmp_path / "ckpt"
    rc = cli_main(["demo", "--train", "--max-steps", "2", "--num-eval-clips", "4", "--output-dir", str(ckpt),
                   "--threads", "1", "--no-progress"])
    assert rc == 0
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "config.json").is_file()
    curve = json.loads((ckpt / "learning_curve.json").read_text())
    assert curve[-1]["step"] == 2 and 0.0 <= curve[-1]["m_tIoU"] <= 1.0
    # runs are deterministic per CPU kind: the summary and the card name the CPU
    from bridge_stg.training.demo import cpu_model

    summary = json.loads((ckpt / "training_summary.json").read_text())
    assert summary["cpu"] == cpu_model() != "" and f"({summary['cpu']})" in (ckpt / "README.md").read_text()
    model = AutoModel.from_pretrained(ckpt)
    assert isinstance(model, BridgeSTGForVideoGrounding) and model.config.span_source == "frame"
    BridgeSTGProcessor.from_pretrained(ckpt)
    out = tmp_path / "demo"
    rc = cli_main(["demo", "--checkpoint", str(ckpt), "--out", str(out), "--num-clips", "3", "--threads", "1", "--no-progress"])
    assert rc == 0
    _check_metrics_json(out / "metrics.json", 3)
    _check_metrics_json(out / "baseline_metrics.json", 3)


@pytest.mark.skipif(not (DEMO_CHECKPOINT / "model.safetensors").is_file(), reason="shipped demo checkpoint not present")
def test_demo_on_shipped_checkpoint(tmp_path: Path) -> None:
    size = sum(p.stat().st_size for p in DEMO_CHECKPOINT.rglob("*") if p.is_file())
    assert size <= 25 * 2**20
    card = (DEMO_CHECKPOINT / "README.md").read_text()
    assert "synthetic" in card and "bridge-stg demo --train" in card
    out = tmp_path / "demo"
    rc = cli_main(["demo", "--out", str(out), "--num-clips", "10", "--threads", "1", "--no-progress"])
    assert rc == 0
    result, base = _check_metrics_json(out / "metrics.json", 10), _check_metrics_json(out / "baseline_metrics.json", 10)
    model, baseline = result["all"], base["all"]
    # every family is scored (2 clips each, round robin), next to the trivial baseline (whole clip, centre box)
    assert set(result["families"]) == set(base["families"]) == set(DEMO_FAMILIES)
    assert all(r["num_queries"] == 2 for r in result["families"].values())
    assert result["families"]["twins_event"]["identity_accuracy"] is not None
    # the trained checkpoint beats the baseline overall, and clearly on the appearance family
    assert model["m_vIoU"] > baseline["m_vIoU"] and model["m_tIoU"] > baseline["m_tIoU"], (model, baseline)
    app, app_base = result["families"]["appearance"], base["families"]["appearance"]
    assert app["m_vIoU"] > app_base["m_vIoU"] + 0.15, (app, app_base)
    example = json.loads((out / "example.json").read_text())
    span = example["prediction"]["span"]
    assert 0 <= span[0] < span[1] <= example["num_frames"]
    with av.open(str(out / "example.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == example["num_frames"] and frames[0].shape[1] == example["width"]
    assert (out / "example_input.mp4").is_file()
    assert (out / "checkpoint" / "model.safetensors").is_file()
    # the folder the demo writes is self-contained: it loads as remote code where bridge_stg cannot be imported
    got = pipeline_without_the_package(out / "checkpoint", out / "example_input.mp4", [example["query"]], tmp_path)
    assert got["out"][0]["span"] == example["prediction"]["span"]
    assert [t["frame"] for t in got["out"][0]["tube"]] == [t["frame"] for t in example["prediction"]["tube"]]


def test_shipped_checkpoint_holds_no_code() -> None:
    """The checkpoint inside the package is data only: weights, config, tokenizer, processor config, card (code is
    written at export by save_for_hub, see bridge_stg.model_cards.hub)."""
    names = sorted(p.name for p in DEMO_CHECKPOINT.iterdir())
    assert not [n for n in names if n.endswith(".py")], names
    assert {"config.json", "model.safetensors", "processor_config.json", "README.md"} <= set(names)
    config = json.loads((DEMO_CHECKPOINT / "config.json").read_text())
    assert "auto_map" not in config and "custom_pipelines" not in config


def test_curriculum_schedule_restarts_per_phase() -> None:
    from bridge_stg.training.demo import DemoTrainingArguments, demo_learning_rate

    args = DemoTrainingArguments(max_steps=30, family_warmup_steps=10, warmup_steps=2, learning_rate=1e-3,
                                 mix_learning_rate=5e-4, min_lr_ratio=0.1, restart_schedule=True, lr_schedule="cosine")
    lrs = [demo_learning_rate(args, s, 0.0) for s in range(30)]
    # phase one: warm-up to the peak, cosine to the floor by its last step
    assert lrs[1] == pytest.approx(1e-3) and lrs[9] < 2e-4
    # phase two: its own warm-up to mix_learning_rate, then its own cosine
    assert lrs[10] == pytest.approx(2.5e-4) and lrs[11] == pytest.approx(5e-4) and lrs[29] < 1e-4
    # one schedule over the whole run without restart_schedule
    flat = DemoTrainingArguments(max_steps=30, family_warmup_steps=10, warmup_steps=2, restart_schedule=False,
                                 lr_schedule="cosine")
    assert demo_learning_rate(flat, 10, 0.0) > demo_learning_rate(flat, 20, 0.0)
    with pytest.raises(ValueError, match="max_steps"):
        demo_learning_rate(DemoTrainingArguments(max_steps=None, restart_schedule=True, lr_schedule="cosine"), 0, 0.0)
    # the shipped recipe's schedule: constant (what its run trained with)
    assert {demo_learning_rate(DemoTrainingArguments(), s, 0.0) for s in (0, 999, 1000, 6999)} == {1e-3}
    # constant per phase: mix_learning_rate from the second phase on
    mixed = DemoTrainingArguments(mix_learning_rate=2e-4)
    assert [demo_learning_rate(mixed, s, 0.0) for s in (0, 999, 1000, 3499)] == [1e-3, 1e-3, 2e-4, 2e-4]
    no_curriculum = DemoTrainingArguments(mix_learning_rate=2e-4, family_warmup_steps=0)
    assert demo_learning_rate(no_curriculum, 3000, 0.0) == 1e-3


def test_the_optimizer_trains_at_the_scheduled_rate(tmp_path: Path, monkeypatch) -> None:
    import torch

    from bridge_stg.training.demo import DemoTrainingArguments, demo_learning_rate, train_demo

    seen = []
    original = torch.optim.AdamW.step

    def step(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    args = DemoTrainingArguments(output_dir=str(tmp_path / "c"), max_steps=4, minutes=1e9, num_threads=1, batch_size=1,
                                 family_warmup_steps=2, warmup_steps=1, lr_schedule="cosine", num_eval_clips=1,
                                 eval_every_minutes=1e9)
    train_demo(args, progress=False)
    assert seen == pytest.approx([demo_learning_rate(args, s, 0.0) for s in range(4)]) and len(set(seen)) > 1


def test_held_out_evaluation_does_not_change_the_trained_weights(tmp_path: Path) -> None:
    """The shipped recipe is reproducible from its seed: the learning-curve evaluations consume no training randomness
    (so a run with a different evaluation period or clip count trains the same weights)."""
    import torch
    from safetensors.torch import load_file

    from bridge_stg.training.demo import DEMO_FAMILIES, DemoTrainingArguments, train_demo

    common = dict(max_steps=3, minutes=1e9, num_threads=1, batch_size=2, family_warmup_steps=1, families=DEMO_FAMILIES)
    train_demo(DemoTrainingArguments(output_dir=str(tmp_path / "a"), eval_every_steps=1, num_eval_clips=2, **common),
               progress=False)
    train_demo(DemoTrainingArguments(output_dir=str(tmp_path / "b"), eval_every_minutes=1e9, num_eval_clips=3, **common),
               progress=False)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_held_out_evaluation_runs_in_eval_mode(tmp_path: Path, monkeypatch) -> None:
    """The learning curve scores the model as at inference (eval mode: e.g. the box head's `reference_readout`), and
    training resumes in train mode (`reference_readout_training`)."""
    from bridge_stg import BridgeSTGForVideoGrounding
    from bridge_stg.training import demo

    modes: list[tuple[str, bool]] = []
    evaluate, forward = demo.evaluate_clips, BridgeSTGForVideoGrounding.forward

    def record_eval(model, *a, **k):
        modes.append(("eval", model.training))
        return evaluate(model, *a, **k)

    def record_forward(self, *a, **k):
        modes.append(("step", self.training))
        return forward(self, *a, **k)

    monkeypatch.setattr(demo, "evaluate_clips", record_eval)
    monkeypatch.setattr(BridgeSTGForVideoGrounding, "forward", record_forward)
    demo.train_demo(demo.DemoTrainingArguments(output_dir=str(tmp_path / "m"), max_steps=2, minutes=1e9, num_threads=1,
                                               batch_size=1, family_warmup_steps=0, eval_every_steps=1,
                                               num_eval_clips=1), progress=False)
    steps = [training for kind, training in modes if kind == "step" and training]
    assert len(steps) == 2  # the two optimizer steps ran in train mode (forward calls inside `ground` run in eval mode)
    assert [training for kind, training in modes if kind == "eval"] == [False, False]
    assert modes[-1][0] == "eval" and ("step", True) in modes[modes.index(("eval", False)):]  # train mode again after


def test_mix_phase_switches_the_training_readout(tmp_path: Path, monkeypatch) -> None:
    """`mix_reference_readout_training`: the curriculum's first phase trains the box head with the config's readout
    (mean), the second phase with the given one; the saved config records it; without a curriculum nothing switches;
    an MLP box head trains through it; a bad value fails before any work."""
    from bridge_stg import BridgeSTGConfig, BridgeSTGForVideoGrounding
    from bridge_stg.training import demo

    seen: list[str] = []
    forward = BridgeSTGForVideoGrounding.forward

    def record_forward(self, *a, **k):
        heads = {m.readout_training for m in self.modules() if hasattr(m, "readout_training")}
        if self.training and heads:  # an MLP box head has no readout
            assert heads == {self.config.reference_readout_training}
            seen.append(heads.pop())
        return forward(self, *a, **k)

    monkeypatch.setattr(BridgeSTGForVideoGrounding, "forward", record_forward)
    common = dict(max_steps=3, minutes=1e9, num_threads=1, batch_size=1, family_warmup_steps=2, num_eval_clips=1,
                  eval_every_minutes=1e9)
    assert demo.DemoTrainingArguments().mix_reference_readout_training == "peak"  # the recipe's default
    demo.train_demo(demo.DemoTrainingArguments(output_dir=str(tmp_path / "p"), **common), progress=False)
    assert seen == ["mean", "mean", "peak"]
    seen.clear()
    demo.train_demo(demo.DemoTrainingArguments(output_dir=str(tmp_path / "n"), mix_reference_readout_training=None,
                                               **common), progress=False)
    assert seen == ["mean", "mean", "mean"]
    seen.clear()  # no curriculum: no second phase, so the config's readout throughout (peak from step 0 stalls)
    demo.train_demo(demo.DemoTrainingArguments(output_dir=str(tmp_path / "z"), **{**common, "family_warmup_steps": 0}),
                    progress=False)
    assert seen == ["mean", "mean", "mean"]
    seen.clear()  # a model without a reference-point head trains through the switch (the field has no effect there)
    mlp = demo.DemoModelArguments(config_overrides={**demo.DEMO_METHOD_OPTIONS, "box_head": "mlp",
                                                    "reference_query_pos": False})  # an option of the reference head
    demo.train_demo(demo.DemoTrainingArguments(output_dir=str(tmp_path / "m"), model=mlp, **common), progress=False)
    assert seen == [] and BridgeSTGConfig.from_pretrained(tmp_path / "m").reference_readout_training == "peak"
    assert BridgeSTGConfig.from_pretrained(tmp_path / "p").reference_readout_training == "peak"
    with pytest.raises(ValueError, match="mix_reference_readout_training"):
        demo.train_demo(demo.DemoTrainingArguments(output_dir=str(tmp_path / "q"), mix_reference_readout_training="top",
                                                   **common), progress=False)
    assert not (tmp_path / "q" / "model.safetensors").exists()


def test_demo_train_defaults_are_the_shipped_recipe(tmp_path: Path, monkeypatch) -> None:
    """Bare ``bridge-stg demo --train`` runs the shipped checkpoint's recipe: its steps, its thread count (a run is
    deterministic for a given count), its schedule; ``--threads`` still overrides, and a bad count is refused."""
    from bridge_stg.training import demo

    seen = []

    def fake_train(args, progress=True):
        seen.append(args)
        return {"seed": args.seed, "steps": 0, "train_minutes": 0.0, "wall_minutes": 0.0, "validation": {}}

    monkeypatch.setattr(demo, "train_demo", fake_train)
    assert cli_main(["demo", "--train", "--output-dir", str(tmp_path / "c"), "--no-progress"]) == 0
    args = seen[-1]
    assert args.num_threads == 1 and args.max_steps == demo.DEMO_RECIPE_STEPS and args.minutes == demo.DEMO_RECIPE_MINUTES_CAP
    assert args.lr_schedule == "constant" and args.family_warmup_steps == 1000
    assert cli_main(["demo", "--train", "--threads", "2", "--output-dir", str(tmp_path / "c"), "--no-progress"]) == 0
    assert seen[-1].num_threads == 2
    with pytest.raises(SystemExit) as exc:
        cli_main(["demo", "--train", "--threads", "0", "--output-dir", str(tmp_path / "c")])
    assert exc.value.code == 2 and len(seen) == 2


def test_demo_train_families_and_config_overrides(tmp_path: Path, monkeypatch, capsys) -> None:
    """``--families`` and ``--config-overrides`` reach the run (the overrides on top of the recipe's method options);
    bad values are one line and exit code 2, checked before anything is trained."""
    from bridge_stg.training import demo

    seen = []

    def fake_train(args, progress=True):
        seen.append(args)
        return {"seed": args.seed, "steps": 0, "train_minutes": 0.0, "wall_minutes": 0.0, "validation": {}}

    monkeypatch.setattr(demo, "train_demo", fake_train)
    base = ["demo", "--train", "--output-dir", str(tmp_path / "c"), "--no-progress"]
    overrides = '{"motion_flow": false, "loss_query_weight": 0.5}'  # options the recipe sets otherwise
    assert cli_main(base + ["--families", "twins_motion, action", "--config-overrides", overrides]) == 0
    args = seen[-1]
    assert args.families == ("twins_motion", "action") and args.warmup_families == ("appearance",)
    assert args.model.config_overrides == dict(demo.DEMO_METHOD_OPTIONS, motion_flow=False, loss_query_weight=0.5)
    assert args.model.config_overrides != demo.DEMO_METHOD_OPTIONS
    # the card's command is one a shell runs as is: the JSON stays one quoted argument
    assert shlex.split(args.command) == ["bridge-stg", *base, "--families", "twins_motion, action", "--config-overrides", overrides]
    assert cli_main(base) == 0 and seen[-1].families == demo.DEMO_FAMILIES
    assert seen[-1].model.config_overrides == demo.DEMO_METHOD_OPTIONS
    capsys.readouterr()
    for bad, word in (("{not json", "not a JSON object"), ('["motion_flow"]', "expected a JSON object"),
                      ('{"no_such_option": 1}', "no_such_option"),
                      ('{"motion_evidence": false}', "motion_evidence"),  # the config's own check (motion_flow needs it)
                      ('{"loss_query_tokens": "some"}', "loss_query_tokens")):
        assert cli_main(base + ["--config-overrides", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("bridge-stg demo: error: --config-overrides") and word in err and "\n" not in err
    assert cli_main(base + ["--families", "appearance,colour"]) == 2
    assert "colour" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # a checkpoint's config is its own
        cli_main(["demo", "--config-overrides", "{}", "--out", str(tmp_path / "d")])
    assert exc.value.code == 2
    assert len(seen) == 2 and not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_card_names_the_families_of_the_second_phase() -> None:
    """A run of ``--families`` says on its card which families its second phase trained on."""
    from dataclasses import asdict

    from bridge_stg.training.demo import DemoTrainingArguments, demo_training_procedure

    def card(**kw):
        args = asdict(DemoTrainingArguments(max_steps=10, **kw))
        summary = {"args": args, "steps": 10, "train_minutes": 0.1, "wall_minutes": 0.1}
        return demo_training_procedure(summary, [])

    assert "then every family" in card()
    text = card(families=("twins_motion", "action"))
    assert "then twins_motion, action only" in text and "every family" not in text
