"""Golden cases of docs/evaluation.md §5 (to 1e-9), protocol differences, and input errors."""

from __future__ import annotations

import numpy as np
import pytest

from bridge_stg.errors_bridge_stg import AnnotationError, PredictionError
from bridge_stg.evaluation import box_iou, compute_stvg_metrics, tubedetr_grid
from bridge_stg.evaluation.reference_loop import loop_metrics, loop_tubedetr_grid

B = [0.0, 0.0, 10.0, 10.0]
TOL = 1e-9


def ref(qid="q", seg=(0, 51), tube=(10, 30), fps=25.0, qtype="declarative", frames=None):
    frames = list(range(*tube)) if frames is None else frames
    return {"query_id": qid, "query_type": qtype, "fps": fps, "segment_start": seg[0], "segment_end": seg[1],
            "tube_start": tube[0], "tube_end": tube[1], "frame_ids": frames, "boxes": [B] * len(frames)}


def pred(qid="q", span=(10, 30), boxes=None, **kw):
    boxes = {} if boxes is None else boxes
    fr = sorted(boxes)
    return {"query_id": qid, "span": list(span), "frame_ids": fr, "boxes": [boxes[f] for f in fr], **kw}


def perfect(frames):
    return {f: B for f in frames}


def one(refs, preds, protocol="tubedetr", **kw):
    """Per-query numbers of the core, checked against the loop oracle on the way."""
    r = compute_stvg_metrics(refs, preds, protocol, return_per_query=True, **kw)
    loop = loop_metrics(refs, preds, protocol, **kw)
    for i, qid in enumerate(r["per_query"]["query_id"]):
        for k in ("tIoU", "vIoU", "sIoU"):
            assert abs(r["per_query"][k][i] - loop["per_query"][qid][k]) <= TOL, (protocol, qid, k)
    return r


def pq(r, key, i=0):
    return r["per_query"][key][i]


# ---------------------------------------------------------------- G0 box IoU
@pytest.mark.parametrize("p, g, expected", [
    ([0, 0, 10, 10], B, 1.0),
    ([5, 0, 15, 10], B, 1 / 3),
    ([0, 0, 20, 10], B, 1 / 2),
    ([2.5, 2.5, 7.5, 7.5], B, 1 / 4),
    ([10, 0, 20, 10], B, 0.0),
    ([5, 5, 5, 5], B, 0.0),
    ([3, 3, 3, 8], [3, 3, 3, 8], 0.0),
])
def test_g0_box_iou(p, g, expected):
    assert abs(box_iou(np.array([p]), np.array([g]))[0] - expected) <= TOL


def test_g0_inverted_box_is_an_error_naming_the_query():
    with pytest.raises(PredictionError, match=r"'q7'.*inverted"):
        compute_stvg_metrics([ref("q7")], [pred("q7", boxes={10: [10, 0, 0, 10]})])


# ---------------------------------------------------------------- G1 grids
def test_g1_grids():
    assert tubedetr_grid(3, 54, 25).tolist() == [3, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert tubedetr_grid(0, 51, 25).tolist() == list(range(0, 50, 5))
    want = [0, 6, 12, 18, 24, 30, 36, 42, 48, 54]
    assert tubedetr_grid(0, 61, 29.97).tolist() == want
    assert tubedetr_grid(0, 61, 30000 / 1001).tolist() == want
    capped = tubedetr_grid(0, 1501, 25).tolist()
    assert len(capped) == 200
    assert capped == [5 * i for i in range(300) if i % 3 != 2]
    assert capped[:8] == [0, 5, 15, 20, 30, 35, 45, 50] and capped[-3:] == [1475, 1485, 1490]
    assert tubedetr_grid(0, 500, 500 / 20).tolist() == list(range(0, 500, 5))


@pytest.mark.parametrize("seed", range(3))
def test_g1_grid_equals_reference_loop_on_many_segments(seed):
    rng = np.random.default_rng(seed)
    for _ in range(150):
        fps = float(rng.choice([5.0, 6.0, 23.976, 24.0, 25.0, 29.97, 30000 / 1001, 30.0, 59.94, 60.0, 7.3]))
        s = int(rng.integers(0, 5000))
        e = s + int(rng.integers(1, 3000))
        assert tubedetr_grid(s, e, fps).tolist() == loop_tubedetr_grid(s, e, fps), (s, e, fps)


# ---------------------------------------------------------------- Example 1 (all protocols)
def ex1_ref():
    return ref("q1", seg=(3, 54), tube=(10, 30), qtype="declarative")


def ex1_pred(**kw):
    boxes = {10: B, 15: B, 20: B, 25: [5, 0, 15, 10], 30: B, 35: B}
    return pred("q1", (20, 40), boxes, **kw)


def dense_box(f):
    if f < 20 or f >= 30:
        return B
    d = f - 20 if f <= 25 else 30 - f
    return [float(d), 0.0, float(d + 10), 10.0]


def test_example1_tubedetr():
    r = one([ex1_ref()], [ex1_pred()])
    assert abs(pq(r, "tIoU") - 1 / 3) <= TOL
    assert abs(pq(r, "vIoU") - 2 / 9) <= TOL
    assert abs(pq(r, "sIoU") - 5 / 6) <= TOL
    assert pq(r, "n_union") == 6 and pq(r, "n_inter") == 2 and pq(r, "n_gt") == 4
    assert r["all"]["vIoU@0.3"] == 0 and r["all"]["vIoU@0.5"] == 0


def test_example1_sampled():
    r = one([ex1_ref()], [ex1_pred(sampled_frame_ids=[5, 15, 25, 35, 45])], "sampled")
    assert abs(pq(r, "tIoU") - 1 / 3) <= TOL
    assert abs(pq(r, "vIoU") - 1 / 9) <= TOL
    assert abs(pq(r, "sIoU") - 2 / 3) <= TOL
    assert pq(r, "n_union") == 3 and pq(r, "n_gt") == 2


def test_example1_dense_and_stcat_compat():
    p = pred("q1", (20, 40), {f: dense_box(f) for f in range(10, 40)})
    r = one([ex1_ref()], [p], "dense")
    assert abs(pq(r, "tIoU") - 1 / 3) <= TOL
    assert abs(pq(r, "vIoU") - 1873 / 9009) <= TOL
    assert abs(pq(r, "sIoU") - 2438 / 3003) <= TOL
    c = one([ex1_ref()], [p], "dense", stcat_compat=True)
    assert abs(pq(c, "tIoU") - 0.3) <= TOL
    assert abs(pq(c, "vIoU") - 16273 / 90090) <= TOL
    assert abs(pq(c, "sIoU") - 2438 / 3003) <= TOL
    assert c["all"]["vIoU@0.3"] == 0 and c["protocol_params"]["stcat_compat"] is True


def test_example1_hcstvg_equals_dense_when_boxes_are_on_the_span():
    p = pred("q1", (20, 40), {f: dense_box(f) for f in range(20, 40)})
    r = one([ex1_ref()], [p], "hcstvg")
    assert abs(pq(r, "tIoU") - 10 / 30) <= TOL
    assert abs(pq(r, "vIoU") - 1873 / 9009) <= TOL
    # literal script: boxes on GT frames outside the predicted span count too
    p2 = pred("q1", (20, 40), {f: dense_box(f) for f in range(10, 40)})
    r2 = one([ex1_ref()], [p2], "hcstvg")
    assert abs(pq(r2, "tIoU") - 20 / 30) <= TOL
    assert abs(pq(r2, "vIoU") - (10 + 1873 / 9009 * 30) / 30) <= TOL
    d2 = one([ex1_ref()], [p2], "dense")
    assert abs(pq(d2, "vIoU") - 1873 / 9009) <= TOL  # dense ignores boxes outside P


# ---------------------------------------------------------------- Example 2: disjoint / touching
@pytest.mark.parametrize("span, n_union", [((30, 40), 6), ((20, 30), 4)])
def test_example2_disjoint_and_touching(span, n_union):
    r = one([ref("q2", tube=(10, 20))], [pred("q2", span, perfect(range(0, 51)))])
    assert pq(r, "tIoU") == 0.0 and pq(r, "vIoU") == 0.0
    assert abs(pq(r, "sIoU") - 1.0) <= TOL
    assert pq(r, "n_union") == n_union
    assert r["all"]["vIoU@0.3"] == 0.0


# ---------------------------------------------------------------- Example 3: whole segment
@pytest.mark.parametrize("span, tiou", [((0, 51), 20 / 51), ((0, 46), 20 / 46)])
def test_example3_whole_segment(span, tiou):
    r = one([ref("q3")], [pred("q3", span, perfect(range(0, 51)))])
    assert abs(pq(r, "tIoU") - tiou) <= TOL
    assert abs(pq(r, "vIoU") - 0.4) <= TOL
    assert pq(r, "n_union") == 10 and pq(r, "n_inter") == 4
    assert r["all"]["vIoU@0.3"] == 1.0 and r["all"]["vIoU@0.5"] == 0.0


# ---------------------------------------------------------------- Example 4: missing / degenerate boxes
def ex4_pred():
    return pred("q4", (10, 30), {10: B, 20: [5, 5, 5, 5], 25: [0, 0, 20, 10]})


def test_example4_missing_box_counts_zero_and_is_reported():
    r = one([ref("q4")], [ex4_pred()])
    assert abs(pq(r, "tIoU") - 1.0) <= TOL
    assert abs(pq(r, "vIoU") - 3 / 8) <= TOL
    assert abs(pq(r, "sIoU") - 3 / 8) <= TOL
    assert pq(r, "missing_boxes") == 1 and pq(r, "missing_boxes_in_span") == 1
    assert r["missing_boxes"]["count"] == 1 and r["missing_boxes"]["first_ids"] == ["q4"]
    assert r["all"]["vIoU@0.3"] == 1.0 and r["all"]["vIoU@0.5"] == 0.0


def test_example4_interpolate():
    r = one([ref("q4")], [ex4_pred()], interpolate=True)
    assert abs(pq(r, "vIoU") - 7 / 16) <= TOL
    assert abs(pq(r, "sIoU") - 7 / 16) <= TOL
    assert pq(r, "missing_boxes") == 0


def test_interpolation_never_extrapolates():
    r = one([ref("q")], [pred("q", (10, 30), {15: B, 20: B})], interpolate=True)
    # grid GT frames 10, 15, 20, 25: 10 and 25 lie outside the predicted frames and stay missing
    assert pq(r, "missing_boxes") == 2
    assert abs(pq(r, "vIoU") - 2 / 4) <= TOL


# ---------------------------------------------------------------- Example 5: cap
def test_example5_cap_and_dense():
    rr = ref("q5", seg=(0, 1501), tube=(100, 200), qtype="interrogative")
    p = pred("q5", (150, 250), perfect(range(100, 250)))
    r = one([rr], [p])
    assert abs(pq(r, "tIoU") - 1 / 3) <= TOL
    assert abs(pq(r, "vIoU") - 7 / 20) <= TOL
    assert abs(pq(r, "sIoU") - 1.0) <= TOL
    assert (pq(r, "n_gt"), pq(r, "n_union"), pq(r, "n_inter")) == (13, 20, 7)
    uncapped = one([rr], [p], max_frames=10**6)
    assert abs(pq(uncapped, "vIoU") - 1 / 3) <= TOL
    d = one([rr], [p], "dense")
    assert abs(pq(d, "vIoU") - 1 / 3) <= TOL


# ---------------------------------------------------------------- Example 6: HC-STVG 1-based st_frame
def test_example6_hcstvg_one_based():
    fps = 500 / 20
    p = pred("v", (150, 250), perfect(range(100, 250)))
    good = one([ref("v", seg=(0, 500), tube=(100, 200), fps=fps, qtype=None)], [p])
    assert abs(pq(good, "tIoU") - 1 / 3) <= TOL and abs(pq(good, "vIoU") - 1 / 3) <= TOL
    assert (pq(good, "n_gt"), pq(good, "n_union"), pq(good, "n_inter")) == (20, 30, 10)
    p_shift = pred("v", (150, 250), perfect(range(101, 250)))
    wrong = one([ref("v", seg=(0, 500), tube=(101, 201), fps=fps, qtype=None)], [p_shift])
    assert abs(pq(wrong, "tIoU") - 51 / 149) <= TOL and abs(pq(wrong, "vIoU") - 11 / 29) <= TOL
    script = one([ref("v", seg=(0, 500), tube=(100, 200), fps=fps, qtype=None)], [pred("v", (150, 250), perfect(range(150, 250)))], "hcstvg")
    assert abs(pq(script, "tIoU") - 50 / 150) <= TOL and abs(pq(script, "vIoU") - 1 / 3) <= TOL


# ---------------------------------------------------------------- Example 7: aggregation
def ex7():
    refs = [
        ex1_ref(),
        ref("q2", tube=(10, 20), qtype="interrogative"),
        ref("q3", qtype="declarative"),
        ref("q4", qtype="interrogative"),
        ref("q5", seg=(0, 1501), tube=(100, 200), qtype="interrogative"),
    ]
    preds = [
        ex1_pred(),
        pred("q2", (30, 40), perfect(range(0, 51))),
        pred("q3", (0, 51), perfect(range(0, 51))),
        ex4_pred(),
        pred("q5", (150, 250), perfect(range(100, 250))),
    ]
    return refs, preds


def test_example7_aggregation_and_average_m_viou():
    refs, preds = ex7()
    r = compute_stvg_metrics(refs, preds)
    d, i, a = r["declarative"], r["interrogative"], r["all"]
    expect = {
        "declarative": (37 / 102, 14 / 45, 1 / 2, 0.0, 11 / 12, 2),
        "interrogative": (4 / 9, 29 / 120, 2 / 3, 0.0, 19 / 24, 3),
        "all": ((1 / 3 + 0 + 20 / 51 + 1 + 1 / 3) / 5, 97 / 360, 3 / 5, 0.0, (5 / 6 + 1 + 1 + 3 / 8 + 1) / 5, 5),
    }
    for name, got in (("declarative", d), ("interrogative", i), ("all", a)):
        want = expect[name]
        for key, w in zip(("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5", "m_sIoU"), want):
            assert abs(got[key] - w) <= TOL, (name, key)
        assert got["num_queries"] == want[5]
    assert abs(r["avg_m_vIoU"] - 199 / 720) <= TOL
    assert abs(a["m_tIoU"] - 0.411765) < 1e-6 and abs(a["m_sIoU"] - 0.841667) < 1e-6
    assert abs(r["avg_m_vIoU"] - a["m_vIoU"]) > 1e-3  # not the pooled mean
    loop = loop_metrics(refs, preds)
    for g in ("all", "declarative", "interrogative"):
        for k in ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5", "m_sIoU"):
            assert abs(loop[g][k] - r[g][k]) <= TOL


def test_strict_threshold():
    # vIoU exactly 0.5: GT [0, 10) grid {0, 5}; P [0, 20) → union grid {0, 5, 10, 15}, perfect on 0 and 5 → 2/4
    r = compute_stvg_metrics([ref("q", seg=(0, 51), tube=(0, 10))], [pred("q", (0, 20), perfect(range(0, 20)))], return_per_query=True)
    assert pq(r, "vIoU") == 0.5
    assert r["all"]["vIoU@0.5"] == 0.0 and r["all"]["vIoU@0.3"] == 1.0


# ---------------------------------------------------------------- protocols differ where they should
def test_protocols_differ_on_the_last_segment_frame():
    # GT and P are the last 3 frames of the segment [0, 51): grid never scores frame 50
    rr = ref("q", seg=(0, 51), tube=(48, 51))
    p = pred("q", (48, 51), perfect(range(48, 51)), sampled_frame_ids=[0, 25, 50])
    assert pq(one([rr], [p]), "vIoU") == 0.0  # no grid frame in [48, 51)
    assert pq(one([rr], [p], "dense"), "vIoU") == 1.0
    assert pq(one([rr], [p], "sampled"), "vIoU") == 1.0  # sampled frames may include the last frame


def test_missing_prediction_scores_zero_and_is_reported():
    refs, preds = ex7()
    r = compute_stvg_metrics(refs, preds[1:], return_per_query=True)
    assert r["missing_predictions"] == {"count": 1, "first_ids": ["q1"]}
    assert r["per_query"]["vIoU"][0] == 0.0 and r["per_query"]["sIoU"][0] == 0.0
    assert r["all"]["num_queries"] == 5


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("bad, match", [
    (pred("nope", (10, 20)), r"unknown query 'nope'"),
    (pred("q", (20, 20)), r"'q'.*span.*inverted"),
    (pred("q", (25, 20)), r"'q'.*span"),
    (pred("q", (10, 20), {12: [0, float("nan"), 1, 1]}), r"'q'.*non-finite"),
    (pred("q", (10, 20), {12: [0, 0, float("inf"), 1]}), r"'q'.*non-finite"),
    ({"query_id": "q", "span": [10, 20], "frame_ids": [1, 2], "boxes": [B]}, r"'q'.*2 frame ids but 1 boxes"),
])
def test_prediction_errors_name_the_query(bad, match):
    with pytest.raises(PredictionError, match=match):
        compute_stvg_metrics([ref("q")], [bad])


def test_duplicate_prediction_and_reference_ids():
    with pytest.raises(PredictionError, match=r"'q'.*duplicate"):
        compute_stvg_metrics([ref("q")], [pred("q"), pred("q")])
    with pytest.raises(AnnotationError, match=r"'q'.*duplicate"):
        compute_stvg_metrics([ref("q"), ref("q")], [pred("q")])


def test_sampled_needs_sampled_frame_ids():
    with pytest.raises(PredictionError, match=r"'q'.*sampled_frame_ids"):
        compute_stvg_metrics([ref("q")], [pred("q", (10, 30), perfect(range(10, 30)))], "sampled")


def test_degenerate_boxes_everywhere_give_zero_not_nan():
    zero = [3.0, 3.0, 3.0, 8.0]
    rr = ref("q")
    rr["boxes"] = [zero] * 20
    r = compute_stvg_metrics([rr], [pred("q", (10, 30), {f: zero for f in range(10, 30)})], "dense", return_per_query=True)
    assert pq(r, "vIoU") == 0.0 and pq(r, "sIoU") == 0.0 and pq(r, "tIoU") == 1.0


def test_unsorted_frames_are_sorted_with_their_boxes():
    rr = ref("q")
    rr["frame_ids"], rr["boxes"] = rr["frame_ids"][::-1], rr["boxes"][::-1]
    boxes = {10: B, 15: B, 20: [5, 5, 5, 5], 25: [0, 0, 20, 10]}
    p = {"query_id": "q", "span": [10, 30], "frame_ids": [25, 20, 15, 10], "boxes": [boxes[f] for f in (25, 20, 15, 10)]}
    r = compute_stvg_metrics([rr], [p], return_per_query=True)
    assert abs(pq(r, "vIoU") - (1 + 1 + 0 + 0.5) / 4) <= TOL


def test_gt_span_frames_without_gt_box_are_not_scored():
    # GT [10, 30) annotated only on 10..19: grid frames 20 and 25 leave the union and the intersection
    rr = ref("q", frames=list(range(10, 20)))
    r = one([rr], [pred("q", (10, 30), perfect(range(10, 30)))])
    assert pq(r, "vIoU") == 1.0 and pq(r, "n_union") == 2 and pq(r, "gt_frames_without_box") == 2
    d = one([rr], [pred("q", (10, 30), perfect(range(10, 30)))], "dense")
    assert pq(d, "vIoU") == 1.0 and pq(d, "n_union") == 10
