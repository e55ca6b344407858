"""`pipeline("video-grounding")`: output structure on a real and a synthetic clip, input forms, one decode
for several queries, batch invariance, options and errors."""

from __future__ import annotations

import io
import os

import av
import numpy as np
import pytest
from PIL import Image
from transformers import pipeline

from bridge_stg import FrameSamplingError, InvalidQueryError, VideoDecodeError, VideoGroundingPipeline
from helpers_grounding import check_result, synthetic_clip, tiny_model_and_processor


@pytest.fixture(scope="module")
def grounder(compact_tokenizer):
    model, processor = tiny_model_and_processor(compact_tokenizer)
    return pipeline("video-grounding", model=model, processor=processor, device="cpu")


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "synthetic.mp4"
    clip = synthetic_clip(path, seed=3)
    return str(path), clip


def test_registered_task_gives_our_pipeline(grounder):
    assert isinstance(grounder, VideoGroundingPipeline)


def test_synthetic_clip_structure(grounder, clip_file):
    path, clip = clip_file
    res = grounder(path, text=clip.query)
    assert isinstance(res, dict)
    check_result(res, clip.num_frames, clip.width, clip.height, clip.fps, clip.query)
    assert res["tube"], "a random model with no threshold still boxes every decoded frame of the span"


def test_real_sample_video(grounder, sample_video_dir):
    path = os.path.join(sample_video_dir, "carphone_pristine.mp4")  # 176x144, 120 frames, 29.97 fps
    res = grounder(path, text="the man on the phone")
    check_result(res, 120, 176, 144, 30000 / 1001, "the man on the phone")
    assert res["tube"]


def test_several_queries_decode_the_video_once(grounder, clip_file, monkeypatch):
    path, clip = clip_file
    queries = [clip.query, "the blue circle", "a triangle moving up"]
    singles = [grounder(path, text=q) for q in queries]
    opened = []
    real_open = av.open

    def counting_open(*args, **kwargs):
        opened.append(args[0] if args else kwargs.get("file"))
        return real_open(*args, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    batch = grounder(path, text=queries, batch_size=2)
    assert len(opened) == 1, opened
    assert [r["query"] for r in batch] == queries
    for one, many in zip(singles, batch):
        assert one["span"] == many["span"]
        assert [t["frame"] for t in one["tube"]] == [t["frame"] for t in many["tube"]]
        for a, b in zip(one["tube"], many["tube"]):
            assert a["box"] == pytest.approx(b["box"], abs=1e-3)
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_input_forms_agree(grounder, clip_file):
    path, clip = clip_file
    ref = grounder(path, text=clip.query)
    with open(path, "rb") as fh:
        data = fh.read()
    assert grounder(data, text=clip.query)["span"] == ref["span"]
    assert grounder(io.BytesIO(data), text=clip.query)["span"] == ref["span"]
    assert grounder({"video": path, "text": clip.query})["span"] == ref["span"]
    listed = grounder([{"video": path, "text": clip.query}, {"video": data, "text": [clip.query, "x"]}])
    assert listed[0]["span"] == ref["span"] and len(listed[1]) == 2
    # decoded frames: the re-decoded pixels of the mp4 give the same frames and boxes as the file
    with av.open(path) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    from_array = grounder(frames, text=clip.query, video_fps=clip.fps)
    assert from_array["span"] == ref["span"]
    assert [t["frame"] for t in from_array["tube"]] == [t["frame"] for t in ref["tube"]]
    pil = [Image.fromarray(f) for f in frames]
    assert grounder(pil, text=clip.query, video_fps=clip.fps)["span"] == ref["span"]


def test_options_fps_max_frames_threshold(grounder, clip_file):
    path, clip = clip_file
    res = grounder(path, text=clip.query, sample_fps=4.0, max_frames=6)
    check_result(res, clip.num_frames, clip.width, clip.height, clip.fps, clip.query)
    assert len(res["tube"]) <= 6
    assert grounder(path, text=clip.query, threshold=1.0)["tube"] == []
    full = grounder(path, text=clip.query, threshold=0.0)["tube"]
    assert full == grounder(path, text=clip.query)["tube"]


def test_errors_are_typed_and_name_the_input(grounder, tmp_path, clip_file):
    path, clip = clip_file
    with pytest.raises(VideoDecodeError, match="missing.mp4"):
        grounder(str(tmp_path / "missing.mp4"), text="x")
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(512))
    with pytest.raises(VideoDecodeError, match="corrupt.mp4"):
        grounder(str(bad), text="x")
    with pytest.raises(InvalidQueryError):
        grounder(path, text="   ")
    with pytest.raises(InvalidQueryError):
        grounder(path, text=[])
    with pytest.raises(InvalidQueryError):
        grounder(path)
    with pytest.raises(FrameSamplingError, match="video_fps"):
        grounder(clip.frames, text="x")
    with pytest.raises(ValueError, match="threshold"):
        grounder(path, text="x", threshold=2.0)


def test_model_without_processor_is_a_clear_error(compact_tokenizer):
    model, _ = tiny_model_and_processor(compact_tokenizer)
    with pytest.raises(ValueError, match="processor"):
        pipeline("video-grounding", model=model, device="cpu")


def test_dtype_option_casts_the_model(compact_tokenizer, clip_file):
    import torch

    model, processor = tiny_model_and_processor(compact_tokenizer)
    pipe = pipeline("video-grounding", model=model, processor=processor, device="cpu", dtype=torch.bfloat16)
    assert pipe.model.dtype == torch.bfloat16
    path, clip = clip_file
    check_result(pipe(path, text=clip.query), clip.num_frames, clip.width, clip.height, clip.fps, clip.query)
