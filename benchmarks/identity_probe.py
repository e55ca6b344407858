"""Where the twins' identity is lost: linear probes on each stage of a checkpoint, against the same model untrained.

    python benchmarks/identity_probe.py [--quick] [--checkpoint DIR] [--train-clips 300] [--test-clips 150] [--threads 1]

On the twin families (``twins_motion``, ``twins_event``, ``relational``) the target and its twin look the same, so a
box on the right one needs a feature that differs between their grid cells and agrees with the query. This script
asks at which stage of the model such a feature exists. For every temporal group of a clip whose frames lie in the
ground-truth span, it takes the memory cell under the target's box centre and the one under the twin's (groups where
both fall in one cell are skipped) and reads, at each cell:

- ``vision``: the merged vision-encoder token (what the LLM receives; it has not seen the query);
- ``memory``: the decoder's memory token (the LLM's last-layer state at that video token, projected; the query comes
  before the video, so it has read the query and every earlier frame);
- ``flow``: the cell's gradient-based motion statistics (``flow_statistics``, the input of the ``motion_flow`` option),
  computed from the pixels without weights, so the same for every checkpoint: how much of the move the pixels give a
  fixed, parameter-free reader;
- ``box_head``: the box head's own score of that cell on the last decoder layer, with the decoder run on the
  ground-truth span (so a wrong span cannot hide a right identity or the reverse).

Probes. ``identity``: a logistic regression on the difference of the two cells' features, trained with the pair in a
random order, predicting which of the two is the target (chance 0.5). It is fitted on clips of the validation stream
and scored on the demo's test stream (``TEST_STREAM``, seed 0, the clips ``bridge-stg demo`` scores). ``box_head`` needs
no fitting: the share of pairs where the target's cell scores higher (on ``twins_motion`` also split by which object
stands still in the group, ``box_head_by_motion``: a head that just prefers the moving twin shows there). ``motion`` (``twins_motion`` only): a 5-way
logistic regression (left, right, up, down, still: the box centre's move between the group's two frames) from one
object's cell, target and twin alike, so it says whether the motion the query names is in the token at all.
``query_word`` (every twin family): a logistic regression from one clip's bridging queries Q_b
(``bridge``, the K queries concatenated), its mean frame state s_g (``frame_state``) or the decoder's own query after
its last layer, averaged over the span's frames (``decoder_query``, the K queries concatenated: what the box head
matches against the memory) to the query's deciding word (the action, the relation): whether what the decoder's queries start from, and
what they end as, know which twin is asked for. On ``twins_event`` no word decides: the target is the twin that touched
the reference before the span. There the same probe reads the target's side of its twin on the span's first frame
(``left`` or ``right`` by the box centres; the twins move together in the span, so the side holds through it):
whether Q_b, the frame states or the decoder's queries know *which* twin touched, in a form the box head could use.

The stages ``vision_3x3``, ``memory_3x3`` and ``flow_3x3`` concatenate the cell's features with its 8 neighbours'
(zeros off the grid).

Each probe is fitted once on the checkpoint and once on the same architecture with fresh weights (``untrained``,
``torch.manual_seed(0)``): what the untrained model's features already allow is what the architecture gives for free,
and only the difference is learned.

``--quick``: the shipped demo checkpoint, 6 train and 3 test clips per family (a smoke test, not a measurement). The
last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import torch

from _common import run_record

TWIN_FAMILIES = ("twins_motion", "twins_event", "relational")
#: the features probed: one cell's token, or the cell's and its 8 neighbours' tokens concatenated
STAGES = ("vision", "vision_3x3", "memory", "memory_3x3", "flow", "flow_3x3")
#: what decides between the twins, per family: the query's word (the key of the clip's ``details``) or, on twins_event,
#: which side of its twin the target is on in the span (``target_side``; no word of the query says which twin touched)
QUERY_WORDS = {"twins_motion": "action", "relational": "relation", "twins_event": "target_side"}
MOTIONS = ("left", "right", "up", "down", "still")
#: what the deciding word is probed from: Q_b, the mean frame state, the decoder's query after its last layer
QUERY_SOURCES = ("bridge", "frame_state", "decoder_query")


def _cell(box: list[float], width: int, height: int, grid_w: int, grid_h: int) -> int:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    col = min(int(cx / width * grid_w), grid_w - 1)
    row = min(int(cy / height * grid_h), grid_h - 1)
    return row * grid_w + col


def _around(tokens: torch.Tensor, cell: int, grid_h: int, grid_w: int) -> np.ndarray:
    """The tokens of a cell and its 8 neighbours (raster order, zeros off the grid), concatenated."""
    grid = torch.nn.functional.pad(tokens.reshape(grid_h, grid_w, -1).permute(2, 0, 1), (1, 1, 1, 1))
    row, col = divmod(cell, grid_w)
    return grid[:, row: row + 3, col: col + 3].permute(1, 2, 0).reshape(-1).numpy()


def _motion(a: list[float], b: list[float]) -> str:
    dx, dy = (b[0] + b[2] - a[0] - a[2]) / 2, (b[1] + b[3] - a[1] - a[3]) / 2
    if max(abs(dx), abs(dy)) < 1.0:
        return "still"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


@torch.no_grad()
def collect(model: Any, processor: Any, clips: list[Any],
            batch_size: int = 8) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pair records: one per (clip, temporal group in the span, target and twin in different cells), with both cells'
    features at each stage, the box head's scores of the two cells and each object's motion in the group. Query
    records: one per clip whose family has a deciding word (``QUERY_WORDS``), with that word and the clip's bridging
    queries, mean frame state and mean decoder query (``QUERY_SOURCES``)."""
    records: list[dict[str, Any]] = []
    queries: list[dict[str, Any]] = []
    last_layer: list[torch.Tensor] = []
    hook = model.qgsl.layers[-1].register_forward_hook(lambda _m, _i, out: last_layer.append(out))
    try:
        for start in range(0, len(clips), batch_size):
            _collect_batch(model, processor, clips, start, batch_size, records, queries, last_layer)
    finally:
        hook.remove()
    return records, queries


def _collect_batch(model: Any, processor: Any, clips: list[Any], start: int, batch_size: int, records: list, queries: list,
                   last_layer: list[torch.Tensor]) -> None:
    """`collect` on the clips ``clips[start: start + batch_size]``; ``last_layer`` receives the decoder's last layer
    output (a forward hook)."""
    from bridge_stg.modeling_bridge_stg import flow_statistics
    from bridge_stg.training.demo import training_batch

    part = clips[start: start + batch_size]
    batch = training_batch(processor, part)
    enc = model._encode(batch["input_ids"], batch["attention_mask"], batch["mm_token_type_ids"], batch["video_grid_thw"],
                        batch["frame_timestamps"], batch["frame_mask"], pixel_values_videos=batch["pixel_values_videos"])
    in_span = (batch["frame_labels"] == 1) & batch["frame_mask"]
    last_layer.clear()
    _, _, scores = model._run_decoder(enc, in_span)
    last = scores[-1]  # (B, F, M)
    decoder_query = last_layer[-1]  # (B, S, K, d): the selected frames packed to the front, K queries each
    vision = list(enc.video_features.pooler_output)  # one (M, D) tensor per group, in (sample, group) order
    groups_per_clip = ((batch["frame_mask"].sum(1) + 1) // 2).tolist()
    offsets = np.cumsum([0, *groups_per_clip])
    merge = model.config.spatial_merge_size
    grid_hw = [(int(h) // merge, int(w) // merge) for _, h, w in batch["video_grid_thw"].tolist()]
    flow = flow_statistics(batch["pixel_values_videos"], grid_hw, merge, model.config.temporal_patch_size,
                           model.config.patch_size).split([h * w for h, w in grid_hw])  # per group, no weights
    for b, clip in enumerate(part):
        if clip.family in QUERY_WORDS:
            valid = batch["frame_mask"][b]
            queries.append({"word": deciding_word(clip),
                            "bridge": enc.bridge_queries[b].flatten().float().numpy(),
                            "frame_state": enc.frame_states[b][valid].mean(0).float().numpy(),
                            "decoder_query": decoder_query[b, : int(in_span[b].sum())].mean(0).flatten().float().numpy()})
        target = dict(zip(clip.frame_ids, clip.boxes))
        twin = dict(zip(clip.frame_ids, clip.twin_boxes))
        frame_ids = batch["frame_ids"][b].tolist()
        for g in range(groups_per_clip[b]):
            slots = [f for f in (2 * g, 2 * g + 1) if f < len(frame_ids) and bool(in_span[b, f])
                     and frame_ids[f] in target]
            if not slots:
                continue
            f = slots[0]
            _, gh, gw = (int(v) // s for v, s in zip(batch["video_grid_thw"][offsets[b] + g].tolist(), (1, merge, merge)))
            tc = _cell(target[frame_ids[f]], clip.width, clip.height, gw, gh)
            wc = _cell(twin[frame_ids[f]], clip.width, clip.height, gw, gh)
            if tc == wc:
                continue
            vis, mem, flo = vision[offsets[b] + g].float(), enc.memory[b, g, : gh * gw].float(), flow[offsets[b] + g]
            rec = {
                "clip": start + b, "family": clip.family,
                "vision": (vis[tc].numpy(), vis[wc].numpy()),
                "memory": (mem[tc].numpy(), mem[wc].numpy()),
                "vision_3x3": (_around(vis, tc, gh, gw), _around(vis, wc, gh, gw)),
                "memory_3x3": (_around(mem, tc, gh, gw), _around(mem, wc, gh, gw)),
                "flow": (flo[tc].numpy(), flo[wc].numpy()),
                "flow_3x3": (_around(flo, tc, gh, gw), _around(flo, wc, gh, gw)),
                "box_head": (float(last[b, f, tc]), float(last[b, f, wc])),
            }
            if len(slots) == 2:  # both frames of the group in the span: each object's move between them
                f0, f1 = frame_ids[slots[0]], frame_ids[slots[1]]
                rec["motion"] = (_motion(target[f0], target[f1]), _motion(twin[f0], twin[f1]))
            records.append(rec)


def deciding_word(clip: Any) -> str:
    """What tells the target from its twin in ``clip`` (``QUERY_WORDS``): the query's action or relation, or on
    ``twins_event`` the target's side of its twin (``left`` / ``right`` by the box centres on the span's first frame)."""
    if QUERY_WORDS[clip.family] != "target_side":
        return clip.details[QUERY_WORDS[clip.family]]
    target, twin = clip.boxes[0], clip.twin_boxes[0]
    return "left" if target[0] + target[2] < twin[0] + twin[2] else "right"


def _fit_logistic(x: np.ndarray, y: np.ndarray, classes: int, l2: float = 1e-2, steps: int = 200) -> torch.nn.Linear:
    """A multinomial logistic regression (full-batch L-BFGS, L2 on the weights) on standardised features."""
    torch.manual_seed(0)
    xt, yt = torch.tensor(x, dtype=torch.float64), torch.tensor(y)
    lin = torch.nn.Linear(x.shape[1], classes).double()
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xt), yt) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin


def _classify(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, classes: int) -> np.ndarray:
    """Standardise the features on the training set, fit the logistic regression, return the test predictions."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    lin = _fit_logistic((x_train - mu) / sd, y_train, classes)
    with torch.no_grad():
        return lin(torch.tensor((x_test - mu) / sd, dtype=torch.float64)).argmax(1).numpy()


def _against_majority(pred: np.ndarray, y_train: np.ndarray, y_test: np.ndarray, classes: int) -> dict[str, float]:
    """Test accuracy, and the share of the test set in the training set's most common class (a constant guess)."""
    majority = np.bincount(y_train, minlength=classes).argmax()
    return {"accuracy": float((pred == y_test).mean()), "majority": float((y_test == majority).mean())}


def identity_probe(train: list[dict[str, Any]], test: list[dict[str, Any]], stage: str) -> float | None:
    """Test accuracy of the pairwise probe: which of two cells (features differenced, order random) is the target."""
    if not train or not test:
        return None
    rng = np.random.default_rng(0)

    def pairs(records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        flip = rng.integers(0, 2, len(records))
        diff = np.stack([r[stage][0] - r[stage][1] for r in records])
        return diff * np.where(flip, -1.0, 1.0)[:, None], 1 - flip  # label 1: the first of the pair is the target

    (xa, ya), (xb, yb) = pairs(train), pairs(test)
    return float((_classify(xa, ya, xb, 2) == yb).mean())


def motion_probe(train: list[dict[str, Any]], test: list[dict[str, Any]], stage: str) -> dict[str, Any] | None:
    """5-way motion classification from one object's cell (target and twin cells alike): test accuracy, and the
    majority class's share of the test objects (what a constant guess scores)."""
    def objects(records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        x, y = [], []
        for r in records:
            if "motion" in r:
                for k in (0, 1):
                    x.append(r[stage][k])
                    y.append(MOTIONS.index(r["motion"][k]))
        return np.array(x), np.array(y)

    (xa, ya), (xb, yb) = objects(train), objects(test)
    if len(ya) == 0 or len(yb) == 0:
        return None
    pred = _classify(xa, ya, xb, len(MOTIONS))
    return {**_against_majority(pred, ya, yb, len(MOTIONS)), "objects": int(len(yb))}


def query_probe(train: list[dict[str, Any]], test: list[dict[str, Any]], source: str) -> dict[str, Any] | None:
    """Which deciding word the query has (twins_motion: the action, relational: the relation), from the clip's
    bridging queries Q_b (``bridge``), its mean frame state s_g (``frame_state``) or its mean decoder query after the
    last layer (``decoder_query``): test accuracy and the majority word's share."""
    if not train or not test:
        return None
    words = sorted({q["word"] for q in train})
    ya = np.array([words.index(q["word"]) for q in train])
    yb = np.array([words.index(q["word"]) if q["word"] in words else -1 for q in test])
    pred = _classify(np.stack([q[source] for q in train]), ya, np.stack([q[source] for q in test]), len(words))
    return {**_against_majority(pred, ya, yb, len(words)), "clips": int(len(yb))}


def box_head_by_motion(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The box head's pick (target scored above the twin) on the pairs whose two moves are known, split by which
    object stands still in the group: ``target_still``, ``twin_still`` or ``both_moving``. A head that prefers
    whichever twin moves, whatever the query says, scores high on ``twin_still``, low on ``target_still`` and about
    0.5 on ``both_moving``; one that reads the query's verb scores high on all three."""
    groups: dict[str, list[bool]] = {"target_still": [], "twin_still": [], "both_moving": []}
    for r in records:
        if "motion" not in r:
            continue
        target, twin = r["motion"]
        key = "target_still" if target == "still" else "twin_still" if twin == "still" else "both_moving"
        groups[key].append(r["box_head"][0] > r["box_head"][1])
    return {k: {"accuracy": float(np.mean(v)) if v else None, "pairs": len(v)} for k, v in groups.items()}


def probe_model(model: Any, processor: Any, train_clips: dict[str, list], test_clips: dict[str, list]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for family in train_clips:
        (train, train_q), (test, test_q) = (collect(model, processor, train_clips[family]),
                                            collect(model, processor, test_clips[family]))
        entry: dict[str, Any] = {"train_pairs": len(train), "test_pairs": len(test),
                                 "identity": {s: identity_probe(train, test, s) for s in STAGES}}
        entry["identity"]["box_head"] = (float(np.mean([r["box_head"][0] > r["box_head"][1] for r in test]))
                                         if test else None)
        if family == "twins_motion":
            entry["motion"] = {s: motion_probe(train, test, s) for s in STAGES}
            entry["box_head_by_motion"] = box_head_by_motion(test)
        if family in QUERY_WORDS:
            entry["query_word"] = {s: query_probe(train_q, test_q, s) for s in QUERY_SOURCES}
        out[family] = entry
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="shipped checkpoint, 6 train / 3 test clips per family (smoke test)")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped demo checkpoint)")
    p.add_argument("--train-clips", type=int, default=300, help="validation-stream clips per family to fit the probes on")
    p.add_argument("--test-clips", type=int, default=150, help="test-stream clips per family to score them on")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from bridge_stg import BridgeSTGForVideoGrounding, BridgeSTGProcessor
    from bridge_stg.training.demo import TEST_STREAM, VALIDATION_STREAM, demo_checkpoint_path, render_clips

    t0 = time.perf_counter()
    load_start = list(os.getloadavg())
    checkpoint = args.checkpoint or demo_checkpoint_path()
    n_train, n_test = (6, 3) if args.quick else (args.train_clips, args.test_clips)
    train_clips = {f: render_clips(VALIDATION_STREAM, 0, 0, n_train, families=(f,)) for f in TWIN_FAMILIES}
    test_clips = {f: render_clips(TEST_STREAM, 0, 0, n_test, families=(f,)) for f in TWIN_FAMILIES}
    processor = BridgeSTGProcessor.from_pretrained(checkpoint)
    trained = BridgeSTGForVideoGrounding.from_pretrained(checkpoint).eval()
    torch.manual_seed(0)
    untrained = BridgeSTGForVideoGrounding(trained.config).eval()
    results = {"trained": probe_model(trained, processor, train_clips, test_clips),
               "untrained": probe_model(untrained, processor, train_clips, test_clips)}

    fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    print("| family | pairs (fit / test) | stage | identity, trained | identity, untrained |")
    print("|---|---|---|---|---|")
    for family in TWIN_FAMILIES:
        t, u = results["trained"][family], results["untrained"][family]
        for stage in (*STAGES, "box_head"):
            print(f"| {family} | {t['train_pairs']} / {t['test_pairs']} | {stage} | {fmt(t['identity'][stage])} | "
                  f"{fmt(u['identity'][stage])} |")
    for stage in STAGES:
        t, u = results["trained"]["twins_motion"]["motion"][stage], results["untrained"]["twins_motion"]["motion"][stage]
        if t is not None:
            print(f"twins_motion, motion from the {stage} token: trained {t['accuracy']:.2f}, untrained {u['accuracy']:.2f}"
                  f" (majority class {t['majority']:.2f}, {t['objects']} objects)")
    for key, t in results["trained"]["twins_motion"]["box_head_by_motion"].items():
        u = results["untrained"]["twins_motion"]["box_head_by_motion"][key]
        print(f"twins_motion, box head picks the target, {key.replace('_', ' ')}: trained {fmt(t['accuracy'])}, "
              f"untrained {fmt(u['accuracy'])} ({t['pairs']} pairs)")
    for family in QUERY_WORDS:
        what = "the target's side of its twin" if QUERY_WORDS[family] == "target_side" else f"the query's {QUERY_WORDS[family]}"
        for source in QUERY_SOURCES:
            t, u = results["trained"][family]["query_word"][source], results["untrained"][family]["query_word"][source]
            if t is not None:
                print(f"{family}, {what} from the {source}: trained {t['accuracy']:.2f}, "
                      f"untrained {u['accuracy']:.2f} (majority word {t['majority']:.2f}, {t['clips']} clips)")
    print(json.dumps({**run_record("identity_probe", args.quick, t0, load_start), "checkpoint": os.path.abspath(checkpoint),
                      "train_clips_per_family": n_train, "test_clips_per_family": n_test, "threads": args.threads,
                      "results": results}))


if __name__ == "__main__":
    main()
