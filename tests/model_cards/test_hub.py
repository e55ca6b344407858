"""`save_for_hub`: a complete checkpoint folder (weights, processor, code, pipeline registration, card) that
loads with `pipeline("video-grounding", trust_remote_code=True)`, also in a process that cannot import
`bridge_stg`; the model card filled from the config and the metrics JSON."""

from __future__ import annotations

import json
import os
import re

import pytest
from huggingface_hub import ModelCard
from transformers import pipeline

from bridge_stg.errors_bridge_stg import MissingAssetError
from bridge_stg.model_cards.hub import model_card_template
from bridge_stg.training.demo import demo_checkpoint_path
from bridge_stg.model_cards.hub import REMOTE_CODE_FILES, fill_template, save_for_hub
from helpers_grounding import check_result, pipeline_without_the_package, synthetic_clip, tiny_model_and_processor

METRICS = {
    "protocol": "tubedetr",
    "protocol_params": {"interpolate": False, "fps": 5.0, "max_frames": 200, "last_segment_frame_scored": False},
    "all": {"m_tIoU": 0.4321, "m_vIoU": 0.1234, "vIoU@0.3": 0.2, "vIoU@0.5": 0.05, "m_sIoU": 0.3, "num_queries": 40},
    "declarative": {"m_tIoU": 0.5, "m_vIoU": 0.2, "vIoU@0.3": 0.3, "vIoU@0.5": 0.1, "m_sIoU": 0.3, "num_queries": 20},
    "interrogative": {"m_tIoU": 0.3, "m_vIoU": 0.1, "vIoU@0.3": 0.1, "vIoU@0.5": 0.0, "m_sIoU": 0.3, "num_queries": 20},
    "avg_m_vIoU": 0.15,
    "missing_predictions": {"count": 0, "first_ids": []},
    "references": {"source": "/data/synthetic/test.jsonl", "format": "canonical", "notes": []},
}


@pytest.fixture(scope="module")
def model_and_processor(compact_tokenizer):
    return tiny_model_and_processor(compact_tokenizer, seed=1)


@pytest.fixture(scope="module")
def checkpoint(model_and_processor, tmp_path_factory):
    model, processor = model_and_processor
    root = tmp_path_factory.mktemp("hub")
    (root / "metrics.json").write_text(json.dumps(METRICS))
    out = save_for_hub(model, processor, root / "bridge-stg-tiny", metrics=root / "metrics.json",
                       card_kwargs={"eval_dataset": "synthetic STVG (test)", "model_id": "someone/bridge-stg-tiny",
                                    "training_data": "500 synthetic clips."})
    return out


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    return str(path), synthetic_clip(path, seed=5)


def test_folder_has_everything(checkpoint, model_and_processor):
    files = set(os.listdir(checkpoint))
    assert {"config.json", "model.safetensors", "processor_config.json", "README.md", *REMOTE_CODE_FILES} <= files
    assert "hub_bridge_stg.py" not in files and "__init__.py" not in files
    assert not any(f.endswith((".bin", ".pt", ".pyc")) for f in files), files
    config = json.loads(open(os.path.join(checkpoint, "config.json")).read())
    assert config["auto_map"]["AutoConfig"] == "configuration_bridge_stg.BridgeSTGConfig"
    assert config["auto_map"]["AutoModel"] == "modeling_bridge_stg.BridgeSTGForVideoGrounding"
    assert config["custom_pipelines"]["video-grounding"] == {
        "impl": "pipeline_video_grounding.VideoGroundingPipeline", "pt": ["AutoModel"], "type": "multimodal"}
    pconf = json.loads(open(os.path.join(checkpoint, "processor_config.json")).read())
    assert pconf["auto_map"]["AutoProcessor"] == "processing_bridge_stg.BridgeSTGProcessor"
    # the caller's model config is left as it was
    assert "custom_pipelines" not in model_and_processor[0].config.__dict__


def test_model_card_filled_from_config_and_metrics(checkpoint, model_and_processor):
    text = open(os.path.join(checkpoint, "README.md"), encoding="utf-8").read()
    assert not re.search(r"\{\{\w+\}\}", text), "a template field was left unfilled"
    card = ModelCard.load(os.path.join(checkpoint, "README.md"))
    assert card.data.library_name == "transformers"
    assert "video-grounding" in card.data.tags
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["m_vIoU"] == 12.34 and results["m_tIoU"] == 43.21
    # evaluation table: protocol + its parameters + the frames/fps the processor samples
    row = next(line for line in text.splitlines() if line.startswith("| synthetic STVG (test)") and "| all |" in line)
    assert "`tubedetr`" in row and "fps=5.0" in row and "2 fps, ≤ 8 frames" in row and "| 40 |" in row
    assert "12.34" in row and "43.21" in row
    assert "average m_vIoU" in text and "15.00" in text
    model = model_and_processor[0]
    assert f"{model.config.decoder_layers} layers, width {model.config.decoder_hidden_size}" in text
    assert "someone/bridge-stg-tiny" in text and "500 synthetic clips." in text
    assert "/data/synthetic" not in text  # a local path of the evaluation never leaks into a public card


def test_pipeline_round_trip_in_process(checkpoint, model_and_processor, clip_file):
    path, clip = clip_file
    model, processor = model_and_processor
    direct = pipeline("video-grounding", model=model, processor=processor, device="cpu")(path, text=clip.query)
    loaded = pipeline("video-grounding", model=checkpoint, trust_remote_code=True, device="cpu")(path, text=clip.query)
    check_result(loaded, clip.num_frames, clip.width, clip.height, clip.fps, clip.query)
    assert loaded["span"] == direct["span"]
    for a, b in zip(loaded["tube"], direct["tube"]):
        assert a["frame"] == b["frame"] and a["box"] == pytest.approx(b["box"], abs=1e-4)


def test_remote_code_pipeline_without_the_package(checkpoint, model_and_processor, clip_file, tmp_path):
    path, clip = clip_file
    model, processor = model_and_processor
    expected = pipeline("video-grounding", model=model, processor=processor, device="cpu")(path, text=[clip.query, "x"])
    payload = pipeline_without_the_package(checkpoint, path, [clip.query, "x"], tmp_path)
    out = payload["out"]
    assert [r["query"] for r in out] == [clip.query, "x"]
    for got, want in zip(out, expected):
        check_result(got, clip.num_frames, clip.width, clip.height, clip.fps, want["query"])
        assert got["span"] == want["span"]
        assert [t["frame"] for t in got["tube"]] == [t["frame"] for t in want["tube"]]


def test_folder_without_processor_gives_a_clear_error(model_and_processor, tmp_path):
    model, _ = model_and_processor
    model.save_pretrained(tmp_path)  # what Pipeline.save_pretrained leaves: no processor_config.json
    with pytest.raises(ValueError, match="processor"):
        pipeline("video-grounding", model=str(tmp_path), processor=None, device="cpu")


def test_save_refuses_bad_inputs(model_and_processor, compact_tokenizer, tmp_path):
    model, processor = model_and_processor
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.bin").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        save_for_hub(model, processor, tmp_path / "full")
    with pytest.raises(ValueError, match="eval_dataset"):
        save_for_hub(model, processor, tmp_path / "a", metrics={k: v for k, v in METRICS.items()})
    assert not (tmp_path / "a").exists(), "nothing is written when the card cannot be rendered"
    with pytest.raises(ValueError, match="bridge-stg evaluate"):
        save_for_hub(model, processor, tmp_path / "b", metrics={"m_vIoU": 0.3})
    with pytest.raises(ValueError, match="unknown keys"):
        save_for_hub(model, processor, tmp_path / "c", card_kwargs={"licence": "mit"})
    other = type(processor).from_model_config(model.config, compact_tokenizer, span_source="text")
    with pytest.raises(ValueError, match="span_source"):
        save_for_hub(model, other, tmp_path / "d")


def test_no_metrics_and_demo_template(model_and_processor, tmp_path):
    model, processor = model_and_processor
    plain = save_for_hub(model, processor, tmp_path / "plain")
    text = open(os.path.join(plain, "README.md"), encoding="utf-8").read()
    assert "No evaluation results were supplied" in text and "**Not documented.**" in text
    assert ModelCard.load(os.path.join(plain, "README.md")).data.eval_results is None
    demo = save_for_hub(model, processor, tmp_path / "demo", metrics={"synthetic test": METRICS},
                        card_kwargs={"template": "demo_checkpoint"})
    text = open(os.path.join(demo, "README.md"), encoding="utf-8").read()
    assert "trained on synthetic data only" in text and "synthetic-data" in text
    assert "| synthetic test |" in text and "12.34" in text


def test_templates_and_demo_checkpoint_path():
    for name in ("template", "demo_checkpoint"):
        assert "{{evaluation}}" in model_card_template(name)
    with pytest.raises(ValueError, match="no value"):
        fill_template("a {{b}} {{c}}", {"b": "x"})
    assert fill_template("a {{b}}", {"b": "x"}) == "a x"
    try:
        path = demo_checkpoint_path()
    except MissingAssetError as err:
        assert "demo_checkpoint" in str(err) and "--model" in str(err)
    else:
        assert os.path.isfile(os.path.join(path, "config.json"))
