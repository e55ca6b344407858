"""GRPO on TRL's GRPOTrainer, end to end on a tiny text-mode model: the rewards are called with the row columns and
the video of each completion, the policy (the MLLM's language model) changes and nothing else does, the KL term is
finite, LoRA trains adapters against the adapter-free reference, and the saved folder loads with AutoModel and the
pipeline."""

from __future__ import annotations

import glob
import math
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from datasets import Dataset

from bridge_stg import BridgeSTGConfig, BridgeSTGForVideoGrounding, BridgeSTGProcessor
from bridge_stg.model_cards.hub import save_for_hub
from bridge_stg.processing.synthetic import SyntheticSpec, write_synthetic_dataset
from bridge_stg.training.grpo import (
    GROUNDING_VIDEO_COLUMN,
    BridgeSTGGRPOTrainer,
    grounding_model_after_training,
    grpo_dataset,
    mllm_lora_config,
)
from bridge_stg.training.grpo_recipe import BridgeSTGGRPOConfig
from bridge_stg.training.rewards import GroundingVideo, build_reward_funcs
from bridge_stg.training.tiny import tiny_bridge_kwargs, tiny_mllm_config

COLUMNS = {"completions", "completion_ids", "prompts", "query_id", "fps", "segment_start", "segment_end", "tube_start",
           "tube_end", "frame_ids", "boxes", "task", "query", GROUNDING_VIDEO_COLUMN}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, compact_tokenizer):
    root = tmp_path_factory.mktemp("synth_grpo")
    write_synthetic_dataset(root, 8, seed=5, spec=SyntheticSpec(width=64, height=48, fps=10.0, num_frames=30),
                            splits=(1.0, 0.0, 0.0), progress=False)
    rows = [r for f in sorted(glob.glob(os.path.join(root, "data", "*.parquet"))) for r in pq.read_table(f).to_pylist()]
    rows[1].update(task="tvg", frame_ids=[], boxes=[], query_type=None)  # span only: no tube reward
    rows[2].update(task="rec")  # no span to sample: left out of the GRPO rows
    config = BridgeSTGConfig(
        mllm_config=tiny_mllm_config("qwen2_5_vl", compact_tokenizer),
        bridge_token_ids=BridgeSTGProcessor(tokenizer=compact_tokenizer, num_bridge_queries=4).bridge_token_ids,
        **tiny_bridge_kwargs(span_source="text"),
    )
    return {"root": str(root), "rows": rows, "config": config,
            "processor": BridgeSTGProcessor.from_model_config(config, compact_tokenizer)}


def _model(setup) -> BridgeSTGForVideoGrounding:
    torch.manual_seed(0)
    model = BridgeSTGForVideoGrounding(setup["config"])
    model.mllm.model.visual.requires_grad_(False)
    return model


def _args(out, **kw) -> BridgeSTGGRPOConfig:
    base = dict(output_dir=str(out), per_device_train_batch_size=4, num_generations=4, max_completion_length=10,
                max_steps=2, learning_rate=1e-3, beta=0.1, logging_steps=1, save_strategy="no", report_to="none",
                use_cpu=True, seed=0, disable_tqdm=True,
                dataloader_num_workers=0)
    base.update(kw)
    return BridgeSTGGRPOConfig(**base)


def length_reward(completions, **kwargs):
    """A reward with spread on random-weight completions (the answer rewards are 0 until the LM writes spans)."""
    return [len(c) / 60.0 for c in completions]


class Recorder:
    """Wraps a reward function; keeps the keyword columns and the values of every call."""

    def __init__(self, func):
        self.func, self.__name__, self.calls = func, func.__name__, []

    def __call__(self, **kwargs):
        values = self.func(**kwargs)
        self.calls.append((kwargs, values))
        return values


def test_grpo_dataset(setup) -> None:
    ds = grpo_dataset(Dataset.from_list(setup["rows"]))
    assert len(ds) == len(setup["rows"]) - 1 and "rec" not in ds["task"]
    assert ds["prompt"] == ds["query"]
    with pytest.raises(ValueError, match="no stvg/tvg rows"):
        grpo_dataset(Dataset.from_list([dict(setup["rows"][2])]))


def test_grpo_full_fine_tuning_end_to_end(setup, tmp_path) -> None:
    from transformers import AutoModel, pipeline

    model, processor = _model(setup), setup["processor"]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rewards = [Recorder(f) for f in build_reward_funcs(["format", "temporal_iou", "tube_viou"], model, processor)]
    trainer = BridgeSTGGRPOTrainer(model=model, reward_funcs=[*rewards, length_reward], args=_args(tmp_path),
                                   train_dataset=grpo_dataset(Dataset.from_list(setup["rows"])), processor=processor,
                                   video_root=setup["root"])
    assert trainer.ref_model is not None and trainer.ref_model is not model.mllm
    trainer.train()

    for reward in rewards:
        assert len(reward.calls) == 2  # one generation batch per step
        for kwargs, values in reward.calls:
            assert COLUMNS <= set(kwargs), sorted(COLUMNS - set(kwargs))
            n = len(kwargs["completions"])
            assert n == 4 and all(len(kwargs[k]) == n for k in COLUMNS - {"prompts"})
            assert all(isinstance(v, GroundingVideo) for v in kwargs[GROUNDING_VIDEO_COLUMN])
            assert len({id(v.prompts) for v in kwargs[GROUNDING_VIDEO_COLUMN]}) == 1  # one collator / encoder pass
            assert kwargs["prompts"] == kwargs["query"] and len(set(kwargs["query_id"])) == 1  # one prompt's group
            for v, task in zip(values, kwargs["task"]):
                applies = reward.__name__ != "tube_viou" or task == "stvg"
                assert (v is not None and 0.0 <= v <= 1.0) if applies else v is None
    logs = [h for h in trainer.state.log_history if "loss" in h and "reward" in h]
    assert len(logs) == 2
    for h in logs:
        for key in ("kl", "reward", "rewards/tube_viou/mean", "rewards/format_reward/mean", "entropy"):
            assert key in h and (math.isfinite(h[key]) or key == "rewards/tube_viou/mean"), (key, h)
        assert h["kl"] >= 0.0
    assert logs[-1]["kl"] > 0.0  # the policy moved away from the reference after the first step

    final = grounding_model_after_training(trainer)
    assert final is model
    changed = {n for n, p in final.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert any(n.startswith("mllm.model.language_model.") for n in changed)
    assert not [n for n in changed if not n.startswith(("mllm.model.language_model.", "mllm.lm_head."))]  # vision, bridge, decoder
    ref = trainer.accelerator.unwrap_model(trainer.ref_model)
    assert all(torch.equal(p, before["mllm." + n]) for n, p in ref.named_parameters())  # the reference never moves

    out = tmp_path / "saved"
    save_for_hub(final, processor, out)
    loaded = AutoModel.from_pretrained(out).eval()
    assert loaded.config.span_source == "text"
    for name, p in final.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], p), name
    grounder = pipeline("video-grounding", model=str(out), trust_remote_code=True)
    video = np.random.default_rng(0).integers(0, 255, (20, 48, 64, 3), dtype=np.uint8)
    result = grounder(video, text="the red square", video_fps=10.0)
    assert result["span_source"] in ("text", "relevance_fallback") and len(result["span"]) == 2


def test_grpo_lora_trains_adapters_against_the_base(setup, tmp_path) -> None:
    model, processor = _model(setup), setup["processor"]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = BridgeSTGGRPOTrainer(model=model, reward_funcs=[*build_reward_funcs(["format", "tube_viou"], model, processor),
                                                              length_reward],
                                   args=_args(tmp_path, reward_weights=[1.0, 1.0, 1.0]),
                                   train_dataset=grpo_dataset(Dataset.from_list(setup["rows"])), processor=processor,
                                   video_root=setup["root"], peft_config=mllm_lora_config(r=4, alpha=8, dropout=0.0))
    assert trainer.ref_model is None  # the reference is the MLLM with the adapters disabled
    names = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and ".language_model." in n for n in names)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "kl" in h]
    assert logs and all(math.isfinite(h["kl"]) for h in logs) and logs[-1]["kl"] > 0.0
    # the base weights under the adapters are untouched; the adapters moved
    base = {n.replace("base_model.model.", "mllm.").replace(".base_layer", ""): p for n, p in trainer.model.named_parameters()
            if "lora_" not in n}
    assert all(torch.equal(p, before[n]) for n, p in base.items())
    final = grounding_model_after_training(trainer)
    assert type(final.mllm).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert not any("lora" in n for n, _ in final.named_parameters())
    changed = {n for n, p in final.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and all(n.startswith("mllm.model.language_model.layers.") and n.endswith("_proj.weight") for n in changed)


def test_trainer_refuses_what_it_cannot_do(setup, tmp_path) -> None:
    processor = setup["processor"]
    rows = grpo_dataset(Dataset.from_list(setup["rows"]))
    frame = BridgeSTGForVideoGrounding(BridgeSTGConfig.from_dict({**setup["config"].to_dict(), "span_source": "frame"}))
    with pytest.raises(ValueError, match="span_source='text'"):
        BridgeSTGGRPOTrainer(model=frame, reward_funcs=build_reward_funcs(["format"]), args=_args(tmp_path),
                             train_dataset=rows, processor=processor)
    model = _model(setup)
    with pytest.raises(ValueError, match="use_vllm"):
        BridgeSTGGRPOTrainer(model=model, reward_funcs=build_reward_funcs(["format"]), args=_args(tmp_path, use_vllm=True),
                             train_dataset=rows, processor=processor)
    from bridge_stg.training.lora import apply_lora

    with pytest.raises(ValueError, match="peft_config"):
        BridgeSTGGRPOTrainer(model=apply_lora(model, r=2, alpha=4), reward_funcs=build_reward_funcs(["format"]),
                             args=_args(tmp_path), train_dataset=rows, processor=processor)


def test_log_probs_are_the_mllm_s_own_with_the_video(setup, tmp_path) -> None:
    """The policy's per-token log-probabilities (shared encoder output, the prompt's video token types) equal a plain
    forward of the MLLM on each prompt + completion with its pixels; sampled completions hold no bridge / vision token.
    On the trained demo checkpoint (switched to text mode): its attention depends on the video and the 3-D positions,
    where a random tiny model's hardly does."""
    from bridge_stg.training.demo import demo_checkpoint_path

    path = demo_checkpoint_path()
    model = BridgeSTGForVideoGrounding.from_pretrained(path, span_source="text")
    model.mllm.model.visual.requires_grad_(False)
    processor = BridgeSTGProcessor.from_model_config(model.config, BridgeSTGProcessor.from_pretrained(path).tokenizer)
    trainer = BridgeSTGGRPOTrainer(model=model, reward_funcs=build_reward_funcs(["format"]), args=_args(tmp_path),
                                   train_dataset=grpo_dataset(Dataset.from_list(setup["rows"])), processor=processor,
                                   video_root=setup["root"])
    rows = [setup["rows"][i] for i in (0, 0, 3, 3)]
    trainer._pending_rows = rows
    prompt_ids, _, _ = trainer._tokenize_prompts([r["query"] for r in rows])
    videos = trainer._active_videos
    assert len({id(v.prompts) for v in videos}) == 1 and [v.index for v in videos] == [0, 0, 1, 1]
    completions, _ = trainer._generate_single_turn(prompt_ids, None, {}, 2)
    banned = set(model.config.bridge_token_ids) | {model.config.mllm_config.video_token_id,
                                                    model.config.mllm_config.vision_end_token_id}
    assert all(len(c) > 0 and not banned & set(c) for c in completions)
    P, C = max(map(len, prompt_ids)), max(map(len, completions))
    pad = processor.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (P - len(p)) + p + c + [pad] * (C - len(c)) for p, c in zip(prompt_ids, completions)])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * (len(p) + len(c)) + [0] * (C - len(c))
                         for p, c in zip(prompt_ids, completions)])
    with trainer._videos(videos), torch.no_grad():
        logps, entropies, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, C, batch_size=3,
                                                                         compute_entropy=True)
    assert logps.shape == entropies.shape == (4, C)
    for i, (row, p, c) in enumerate(zip(rows, prompt_ids, completions)):
        one = trainer.grounding_collator([row])
        assert one["input_ids"][0].tolist() == p
        seq = torch.tensor([p + c])
        types = torch.cat([one["mm_token_type_ids"], torch.zeros(1, len(c), dtype=torch.long)], 1)
        with torch.no_grad():
            logits = model.mllm(input_ids=seq, attention_mask=torch.ones_like(seq), mm_token_type_ids=types,
                                pixel_values_videos=one["pixel_values_videos"], video_grid_thw=one["video_grid_thw"]).logits
        model.mllm.model.rope_deltas = None
        expected = logits[0, len(p) - 1: -1].float().log_softmax(-1).gather(-1, torch.tensor(c)[:, None])[:, 0]
        torch.testing.assert_close(logps[i, : len(c)], expected, atol=1e-4, rtol=1e-4)
