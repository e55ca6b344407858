"""BridgeSTGDataCollator: canonical rows (stvg / tvg / rec, mixed) -> model inputs and targets.

Synthetic clips (64x48, 10 fps, 30 frames) written with ``write_synthetic_dataset``; every target is
recomputed here independently of the processor from the row itself.
"""

from __future__ import annotations

import copy
import glob
import os
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from bridge_stg import (
    AnnotationError,
    BridgeSTGProcessor,
    FrameSamplingError,
    BridgeSTGVideoProcessor,
    InvalidQueryError,
    UnsafePathError,
    VideoDecodeError,
)
from bridge_stg.processing.collator import TASK_IDS, BridgeSTGDataCollator
from bridge_stg.processing.synthetic import SyntheticSpec, write_synthetic_dataset

W, H, FPS, T = 64, 48, 10.0, 30
MODEL_KEYS = {"input_ids", "attention_mask", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw",
              "frame_timestamps", "frame_mask", "frame_ids", "task_ids"}
TARGET_KEYS = {"labels", "frame_labels", "target_boxes", "target_box_mask"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A synthetic dataset folder (the video root), its stvg rows, a tvg row and a rec row (PNG image)."""
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, 4, seed=3, spec=SyntheticSpec(width=W, height=H, fps=FPS, num_frames=T), progress=False)
    rows = [r for f in sorted(glob.glob(os.path.join(root, "data", "*.parquet"))) for r in pq.read_table(f).to_pylist()]
    assert len(rows) == 4 and all(r["task"] == "stvg" for r in rows)
    tvg = dict(rows[1], query_id="tvg_0", task="tvg", query_type=None, frame_ids=[], boxes=[], target_type=None)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(36, 50, 3), dtype=np.uint8)
    os.makedirs(root / "images", exist_ok=True)
    Image.fromarray(image).save(root / "images" / "img0.png")
    rec = {
        "query_id": "rec_0", "video_id": "img0", "video": "images/img0.png", "query": "the bright patch on the left",
        "query_type": None, "task": "rec", "fps": 1.0, "num_frames": 1, "width": 50, "height": 36,
        "segment_start": 0, "segment_end": 1, "tube_start": 0, "tube_end": 1, "frame_ids": [0],
        "boxes": [[5.0, 6.0, 25.0, 30.0]], "target_id": None, "target_type": None, "video_bytes": None,
    }
    return {"root": str(root), "stvg": rows, "tvg": tvg, "rec": rec, "image": image}


@pytest.fixture(scope="module")
def processor(compact_tokenizer):
    vp = BridgeSTGVideoProcessor(min_pixels=4 * 28 * 28, max_pixels=4 * 28 * 28, max_video_tokens=256)
    return BridgeSTGProcessor(video_processor=vp, tokenizer=compact_tokenizer, num_bridge_queries=4, max_frames=8, min_frames=4)


def _expected_boxes(row: dict, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Independent GT: per sampled id inside the tube and the annotated range, the linearly interpolated
    xyxy box, normalised cxcywh; mask where it exists."""
    fids = np.asarray(row["frame_ids"], dtype=np.float64)
    boxes = np.asarray(row["boxes"], dtype=np.float64).reshape(-1, 4)
    out = np.zeros((len(ids), 4))
    mask = np.zeros(len(ids), dtype=bool)
    for k, f in enumerate(ids):
        if not (row["tube_start"] <= f < row["tube_end"]) or fids.size == 0 or f < fids[0] or f > fids[-1]:
            continue
        x1, y1, x2, y2 = (np.interp(f, fids, boxes[:, c]) for c in range(4))
        w, h = float(row["width"]), float(row["height"])
        out[k] = [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]
        mask[k] = True
    return out, mask


def _check_sample(batch, i: int, row: dict, processor: BridgeSTGProcessor, expect_ids: list[int] | None = None) -> None:
    """Every target of sample ``i`` against the row: frames, span labels, boxes, LM labels."""
    tok = processor.tokenizer
    n = int(batch["frame_mask"][i].sum())
    ids = batch["frame_ids"][i, :n].tolist()
    assert batch["frame_ids"][i, n:].eq(-1).all() and not batch["frame_mask"][i, n:].any()
    if expect_ids is not None:
        assert ids == expect_ids
    assert n % 2 == 0
    # the timestamps are seconds from the segment start
    np.testing.assert_allclose(batch["frame_timestamps"][i, :n].numpy(), [(f - row["segment_start"]) / row["fps"] for f in ids],
                               atol=1e-5)
    # frame labels: 1 exactly on the sampled frames inside the tube, -100 on padding
    assert batch["frame_labels"][i, :n].tolist() == [int(row["tube_start"] <= f < row["tube_end"]) for f in ids]
    assert batch["frame_labels"][i, n:].eq(-100).all()
    # boxes: normalised cxcywh of the (interpolated) GT box, nothing where there is none
    exp, mask = _expected_boxes(row, ids)  # tvg rows have no frame_ids: the expected mask is all False
    assert batch["target_box_mask"][i, :n].tolist() == mask.tolist()
    assert not batch["target_box_mask"][i, n:].any()
    np.testing.assert_allclose(batch["target_boxes"][i, :n].numpy(), np.where(mask[:, None], exp, 0.0), atol=1e-6)
    # LM labels: exactly the answer + <|im_end|> (stvg, tvg), none for rec; bridge tokens follow
    att = batch["attention_mask"][i].bool()
    seq = batch["input_ids"][i][att].tolist()
    lab = batch["labels"][i][att]
    assert batch["labels"][i][~att].eq(-100).all()
    bridge = processor.bridge_token_ids
    assert seq[-len(bridge):] == bridge
    labelled = torch.nonzero(lab != -100).flatten().tolist()
    if row["task"] == "rec":
        assert labelled == []
        head = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
        assert seq[-len(bridge) - len(head):-len(bridge)] == head  # bridge tokens right after the prompt
    else:
        a = (row["tube_start"] - row["segment_start"]) / row["fps"]
        b = (row["tube_end"] - row["segment_start"]) / row["fps"]
        answer = tok(processor.format_answer(a, b), add_special_tokens=False)["input_ids"] + [processor.im_end_token_id]
        assert labelled == list(range(len(seq) - len(bridge) - len(answer), len(seq) - len(bridge)))
        assert lab[labelled].tolist() == answer == [seq[k] for k in labelled]
    assert int(batch["task_ids"][i]) == TASK_IDS[row["task"]]
    # one <|vision_end|> per temporal group, and as many grid rows
    assert seq.count(processor.vision_end_token_id) == n // 2
    meta = batch.video_metadata[i]
    assert meta["query_id"] == row["query_id"] and meta["task"] == row["task"] and meta["frame_ids"] == ids
    assert (meta["width"], meta["height"]) == (row["width"], row["height"])


def test_stvg_targets(data, processor):
    rows = data["stvg"]
    batch = BridgeSTGDataCollator(processor, data["root"])(rows)
    assert set(batch.keys()) == MODEL_KEYS | TARGET_KEYS
    # 2 fps of a 10 fps clip of 30 frames: every 5th frame, 6 frames = 3 groups per sample
    assert batch["video_grid_thw"].shape[0] == 3 * len(rows)
    for i, row in enumerate(rows):
        _check_sample(batch, i, row, processor, expect_ids=[0, 5, 10, 15, 20, 25])
    # right padding for training; at least one sample has a positive frame with a box
    assert batch["attention_mask"][:, 0].eq(1).all()
    assert batch["target_box_mask"].any()
    # boxes really are normalised: inside [0, 1] and the synthetic box of frame 10 of sample 0 matches
    tb = batch["target_boxes"][batch["target_box_mask"]]
    assert tb.min() >= 0 and tb.max() <= 1


def test_stvg_box_interpolation_between_annotated_frames(data, processor):
    row = copy.deepcopy(data["stvg"][0])
    # keep every 4th annotation (and the last): sampled frames between them get interpolated boxes
    keep = sorted(set(range(0, len(row["frame_ids"]), 4)) | {len(row["frame_ids"]) - 1})
    row["frame_ids"] = [row["frame_ids"][k] for k in keep]
    row["boxes"] = [row["boxes"][k] for k in keep]
    batch = BridgeSTGDataCollator(processor, data["root"])([row])
    _check_sample(batch, 0, row, processor)
    ids = batch["frame_ids"][0].tolist()
    interpolated = [f for f, m in zip(ids, batch["target_box_mask"][0].tolist()) if m and f not in row["frame_ids"]]
    assert interpolated, "the test needs at least one sampled frame between annotated frames"
    # hand-check one interpolated box
    f = interpolated[0]
    j = int(np.searchsorted(row["frame_ids"], f))
    f0, f1 = row["frame_ids"][j - 1], row["frame_ids"][j]
    w = (f - f0) / (f1 - f0)
    box = (1 - w) * np.array(row["boxes"][j - 1]) + w * np.array(row["boxes"][j])
    k = ids.index(f)
    exp = [(box[0] + box[2]) / 2 / W, (box[1] + box[3]) / 2 / H, (box[2] - box[0]) / W, (box[3] - box[1]) / H]
    np.testing.assert_allclose(batch["target_boxes"][0, k].numpy(), exp, atol=1e-6)


def test_tvg_rows_have_span_but_no_boxes(data, processor):
    row = data["tvg"]
    batch = BridgeSTGDataCollator(processor, data["root"])([row])
    _check_sample(batch, 0, row, processor, expect_ids=[0, 5, 10, 15, 20, 25])
    assert not batch["target_box_mask"].any() and batch["target_boxes"].eq(0).all()
    assert batch["frame_labels"].eq(1).any() and (batch["labels"] != -100).any()
    assert batch["task_ids"].tolist() == [1]


def test_rec_row_is_one_group_of_two_identical_frames(data, processor):
    row = data["rec"]
    batch = BridgeSTGDataCollator(processor, data["root"])([row])
    _check_sample(batch, 0, row, processor, expect_ids=[0, 0])
    assert batch["video_grid_thw"].shape[0] == 1
    assert batch["frame_labels"][0].tolist() == [1, 1]
    assert batch["target_box_mask"][0].tolist() == [True, True]
    x1, y1, x2, y2 = row["boxes"][0]
    exp = [(x1 + x2) / 2 / 50, (y1 + y2) / 2 / 36, (x2 - x1) / 50, (y2 - y1) / 36]
    np.testing.assert_allclose(batch["target_boxes"][0].numpy(), [exp, exp], atol=1e-6)
    assert batch["labels"].eq(-100).all()
    assert batch["task_ids"].tolist() == [2]
    # the pixels are the image's: the processor on the raw array gives the same tensor
    ref = processor(videos=data["image"][None], text=row["query"], video_fps=1.0)
    torch.testing.assert_close(batch["pixel_values_videos"], ref["pixel_values_videos"])


def test_mixed_batch_equals_single_rows(data, processor):
    stvg = data["stvg"]
    embedded = dict(stvg[2], query_id="emb", video_bytes=open(os.path.join(data["root"], stvg[2]["video"]), "rb").read())
    rows = [stvg[0], data["rec"], data["tvg"], embedded]
    collator = BridgeSTGDataCollator(processor, data["root"])
    batch = collator(rows)
    assert batch["task_ids"].tolist() == [0, 2, 1, 0]
    assert set(batch.keys()) == MODEL_KEYS | TARGET_KEYS
    groups = batch["video_grid_thw"]
    offset_rows, offset_px = 0, 0
    for i, row in enumerate(rows):
        _check_sample(batch, i, row, processor)
        single = collator([row])
        n = int(single["frame_mask"][0].sum())
        L = int(single["attention_mask"][0].sum())
        assert batch["input_ids"][i, :L].tolist() == single["input_ids"][0, :L].tolist()
        assert batch["labels"][i, :L].tolist() == single["labels"][0, :L].tolist()
        assert batch["mm_token_type_ids"][i, :L].tolist() == single["mm_token_type_ids"][0, :L].tolist()
        for key in ("frame_ids", "frame_labels", "target_box_mask", "frame_timestamps"):
            assert batch[key][i, :n].tolist() == single[key][0, :n].tolist(), key
        torch.testing.assert_close(batch["target_boxes"][i, :n], single["target_boxes"][0, :n])
        g = single["video_grid_thw"].shape[0]
        assert groups[offset_rows:offset_rows + g].tolist() == single["video_grid_thw"].tolist()
        p = single["pixel_values_videos"].shape[0]
        torch.testing.assert_close(batch["pixel_values_videos"][offset_px:offset_px + p], single["pixel_values_videos"])
        offset_rows, offset_px = offset_rows + g, offset_px + p
    assert offset_rows == groups.shape[0] and offset_px == batch["pixel_values_videos"].shape[0]
    # embedded bytes decode to the same pixels as the file (no video_root needed)
    alone = BridgeSTGDataCollator(processor, None)([embedded])
    from_path = collator([stvg[2]])
    torch.testing.assert_close(alone["pixel_values_videos"], from_path["pixel_values_videos"])


def test_inference_mode_and_post_processing(data, processor):
    rows = [data["stvg"][0], data["stvg"][1]]
    batch = BridgeSTGDataCollator(processor, data["root"], training=False)(rows)
    assert set(batch.keys()) == MODEL_KEYS
    # left padding; the prompt ends at "assistant\n" (no answer, no bridge tokens)
    assert batch["attention_mask"][:, -1].eq(1).all()
    head = processor.tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert batch["input_ids"][:, -len(head):].tolist() == [head, head]
    # metadata feeds post_process_grounding: sampled indices [1, 4) -> frames [5, 16)
    F = batch["frame_mask"].shape[1]
    outputs = {
        "pred_span_frames": torch.tensor([[1, 4], [1, 4]]),
        "pred_boxes": torch.tensor([0.5, 0.5, 0.5, 0.5]).expand(2, F, 4),
        "presence_scores": torch.ones(2, F),
    }
    res = processor.post_process_grounding(outputs, batch)
    assert res[0]["span"][0] == 5 and res[0]["span"][1] == 16
    assert res[0]["frames"] == [5, 10, 15]
    np.testing.assert_allclose(res[0]["boxes"][0], [16, 12, 48, 36])
    assert [m["query_id"] for m in batch.video_metadata] == [r["query_id"] for r in rows]


def test_sampling_overrides(data, processor):
    batch = BridgeSTGDataCollator(processor, data["root"], max_frames=4, min_frames=4)([data["stvg"][0]])
    ids = batch["frame_ids"][0].tolist()
    assert len(ids) == 4 and ids[0] == 0 and ids[-1] == T - 1
    batch = BridgeSTGDataCollator(processor, data["root"], sample_fps=1.0, min_frames=2)([data["stvg"][0]])
    assert batch["frame_ids"][0].tolist() == [0, 10, 20, 20]  # 3 frames at 1 fps, made even by repeating the last


def test_decoder_frame_mask(data, processor):
    rows = [*data["stvg"], data["tvg"], data["rec"]]
    col = BridgeSTGDataCollator(processor, data["root"], seed=5, num_positive_frames=2, num_negative_frames=1)
    batch = col(rows)
    dec = batch["decoder_frame_mask"]
    assert dec.shape == batch["frame_mask"].shape and dec.dtype == torch.bool
    assert not (dec & ~batch["frame_mask"]).any()
    for i, row in enumerate(rows):
        pos = (batch["frame_labels"][i] == 1) & batch["frame_mask"][i]
        neg = (batch["frame_labels"][i] == 0) & batch["frame_mask"][i]
        if row["task"] == "tvg":
            assert not dec[i].any()
            continue
        assert int((dec[i] & pos).sum()) == min(2, int(pos.sum()))
        assert int((dec[i] & neg).sum()) == min(1, int(neg.sum()))
    # deterministic per (seed, epoch, query_id): the same in another process order / batch composition
    again = col(list(reversed(rows)))["decoder_frame_mask"]
    n = len(rows)
    for i in range(n):
        assert again[n - 1 - i, : dec.shape[1]].tolist()[: int(batch["frame_mask"][i].sum())] == dec[i].tolist()[
            : int(batch["frame_mask"][i].sum())
        ]
    # without the counts the model draws the frames: no key
    assert "decoder_frame_mask" not in BridgeSTGDataCollator(processor, data["root"])(rows[:1])
    with pytest.raises(ValueError, match="both or neither"):
        BridgeSTGDataCollator(processor, data["root"], num_positive_frames=2)


def test_dataloader_workers_and_pickle(data, processor):
    rows = [*data["stvg"], data["tvg"], data["rec"]]
    col = BridgeSTGDataCollator(processor, data["root"])
    restored = pickle.loads(pickle.dumps(col))
    direct = [col(rows[k:k + 3]) for k in (0, 3)]
    loader = torch.utils.data.DataLoader(rows, batch_size=3, collate_fn=restored, num_workers=2)
    got = list(loader)
    assert len(got) == 2
    for a, b in zip(direct, got):
        assert set(a.keys()) == set(b.keys())
        for k in a:
            torch.testing.assert_close(a[k], b[k])
        assert [m["query_id"] for m in b.video_metadata] == [m["query_id"] for m in a.video_metadata]


@pytest.mark.parametrize(
    "change, error, pattern",
    [
        (dict(video="../outside.mp4"), UnsafePathError, "query_id 'bad'.*leaves the video root"),
        (dict(video="/abs/clip.mp4"), UnsafePathError, "query_id 'bad'.*absolute"),
        (dict(video="videos/train/missing.mp4"), VideoDecodeError, "query_id 'bad'"),
        (dict(video_bytes=b"not a video at all"), VideoDecodeError, "query_id 'bad'"),
        (dict(tube_start=20, tube_end=40), AnnotationError, "query_id 'bad'.*tube_start"),
        (dict(width=65), AnnotationError, "query_id 'bad'.*64x48.*65x48"),
        (dict(segment_start=10, segment_end=35, num_frames=35, tube_start=12, tube_end=20, frame_ids=[12], boxes=[[1, 1, 5, 5]]),
         FrameSamplingError, "query_id 'bad'"),
        (dict(query="   "), AnnotationError, "query_id 'bad'.*query"),
    ],
)
def test_bad_rows_name_the_query(data, processor, change, error, pattern):
    bad = dict(data["stvg"][1], query_id="bad", **change)
    with pytest.raises(error, match=pattern):
        BridgeSTGDataCollator(processor, data["root"])([data["stvg"][0], bad])


def test_processor_errors_name_the_right_row(data, processor):
    # a prompt over max_length is raised by the processor as "sample 1": the collator names that row
    rows = [data["stvg"][0], dict(data["stvg"][1], query_id="long", query="word " * 200)]
    with pytest.raises(InvalidQueryError, match="query_id 'long'.*sample 1"):
        BridgeSTGDataCollator(processor, data["root"], max_length=150)(rows)


def test_other_errors(data, processor):
    with pytest.raises(VideoDecodeError, match="query_id .*no embedded video_bytes.*no video_root"):
        BridgeSTGDataCollator(processor, None)([data["stvg"][0]])
    with pytest.raises(ValueError, match="empty batch"):
        BridgeSTGDataCollator(processor, data["root"])([])
    with pytest.raises(TypeError, match="list of row dicts"):
        BridgeSTGDataCollator(processor, data["root"])(data["stvg"][0])
    bad_image = dict(data["rec"], query_id="img", video_bytes=b"\x89PNG broken")
    with pytest.raises(VideoDecodeError, match="query_id 'img'.*cannot read the image"):
        BridgeSTGDataCollator(processor, data["root"])([bad_image])
    with pytest.raises(ValueError, match="max_frames"):
        BridgeSTGDataCollator(processor, data["root"], max_frames=5)
