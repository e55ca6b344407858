"""Ground a data set and score it: the one prediction path of the package.

Every place that grounds many queries and scores them goes through :func:`ground_batch` (``model.ground`` +
``post_process_grounding`` + canonical prediction rows): :func:`predict_grounding` over dataset rows and a
collator, :func:`predict_clips` over synthetic clips in memory (the demo), and :func:`make_compute_metrics` for
``BridgeSTGTrainer`` evaluation. The rows are scored with :func:`bridge_stg.evaluation.compute_stvg_metrics`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import EvalPrediction

from bridge_stg.errors_bridge_stg import PredictionError

from .trainer import PREDICTION_FIELDS, SPAN_SOURCES, unwrap_bridge_model


def eval_frame_ids_for(references: Sequence[Mapping[str, Any]], protocol: str, target_fps: float = 5.0,
                       max_frames: int = 200) -> list[list[int]] | None:
    """Frames each prediction needs a box on for ``protocol``: the ``tubedetr`` 5 fps grid, every segment
    frame for ``dense`` / ``hcstvg``, or ``None`` for ``sampled`` (the decoded frames are scored)."""
    from bridge_stg.evaluation import tubedetr_grid

    if protocol == "tubedetr":
        return [tubedetr_grid(int(r["segment_start"]), int(r["segment_end"]), float(r["fps"]), target_fps, max_frames).tolist()
                for r in references]
    if protocol in ("dense", "hcstvg"):
        return [list(range(int(r["segment_start"]), int(r["segment_end"]))) for r in references]
    if protocol == "sampled":
        return None
    raise ValueError(f"protocol: expected tubedetr, dense, hcstvg or sampled, got {protocol!r}")


def choose_protocol(references: Sequence[Mapping[str, Any]], target_fps: float = 5.0) -> str:
    """``tubedetr`` when every reference's fps allows the 5 fps grid (fps >= ``target_fps``), else ``sampled``."""
    return "tubedetr" if all(float(r["fps"]) >= target_fps for r in references) else "sampled"


def results_to_prediction_rows(
    results: Sequence[Mapping[str, Any]], metadata: Sequence[Mapping[str, Any]], query_ids: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """``post_process_grounding`` results -> canonical prediction rows (``docs/schema.md``).

    ``frame_ids``/``boxes``/``scores`` are the ``eval_*`` entries when the results have them (boxes on the
    protocol's frames inside the predicted span), else the decoded frames. ``sampled_frame_ids`` are the
    frames the model saw (``metadata[i]["frame_ids"]``, each once); ``query_id`` from ``query_ids`` or
    ``metadata[i]["query_id"]``.
    """
    if len(results) != len(metadata):
        raise PredictionError(f"{len(results)} results for {len(metadata)} metadata entries")
    rows = []
    for i, (res, meta) in enumerate(zip(results, metadata)):
        qid = query_ids[i] if query_ids is not None else meta.get("query_id")
        if qid is None:
            raise PredictionError(f"result {i}: no query_id (pass query_ids or collator metadata)")
        key = "eval_" if "eval_frame_ids" in res else ""
        frames = res["eval_frame_ids"] if key else res["frames"]
        rows.append({
            "query_id": str(qid),
            "span": [int(v) for v in res["span"]],
            "frame_ids": [int(f) for f in frames],
            "boxes": [[float(v) for v in b] for b in res[key + "boxes"]],
            "scores": [float(s) for s in res[key + "scores"]],
            "sampled_frame_ids": sorted({int(f) for f in meta["frame_ids"]}),
            "span_source": res.get("span_source"),
        })
    return rows


@torch.no_grad()
def ground_batch(
    model: nn.Module, processor: Any, batch: Any, eval_frame_ids: Sequence[Sequence[int]] | None = None,
    query_ids: Sequence[str] | None = None, **ground_kwargs: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Ground one processed batch (a processor or inference-collator output) and map it to prediction rows.

    Runs ``model.ground`` on the batch's tensors, ``processor.post_process_grounding`` (boxes on
    ``eval_frame_ids`` when given) and :func:`results_to_prediction_rows`. Returns ``(rows, results)``; each
    result also carries the model's ``generated_text`` / ``num_malformed`` when it has them (coupled baseline).
    """
    base = unwrap_bridge_model(model)
    meta = batch.video_metadata
    device = next(base.parameters()).device
    tensors = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor) and k not in ("frame_ids", "task_ids")}
    out = base.ground(**tensors, tokenizer=processor.tokenizer, **ground_kwargs)
    results = processor.post_process_grounding(out, meta, eval_frame_ids=eval_frame_ids)
    for j, res in enumerate(results):
        for key in ("generated_text", "num_malformed"):
            value = getattr(out, key, None)
            if value is not None:
                res[key] = value[j]
    return results_to_prediction_rows(results, meta, query_ids), results


class _EvalMode:
    """Context manager: the model in eval mode inside, its previous mode restored after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = unwrap_bridge_model(model)

    def __enter__(self) -> nn.Module:
        self.was_training = self.model.training
        self.model.eval()
        return self.model

    def __exit__(self, *exc: Any) -> None:
        self.model.train(self.was_training)


def predict_grounding(
    model: nn.Module,
    collator: Any,
    rows: Sequence[Mapping[str, Any]],
    batch_size: int = 8,
    protocol: str | None = None,
    progress: bool = False,
    **ground_kwargs: Any,
) -> list[dict[str, Any]]:
    """Ground dataset ``rows`` with ``model.ground`` (extra ``ground_kwargs``: ``span_source``, ``max_new_tokens``)
    through an inference collator (``training=False``) and return canonical prediction rows with boxes on
    the frames ``protocol`` scores (default :func:`choose_protocol`)."""
    if getattr(collator, "training", False):
        raise ValueError("predict_grounding: needs an inference collator (BridgeSTGDataCollator(..., training=False))")
    rows = list(rows)
    protocol = protocol or choose_protocol(rows)
    out_rows: list[dict[str, Any]] = []
    with _EvalMode(model):
        for s in tqdm(range(0, len(rows), batch_size), desc="grounding", disable=not progress, leave=False):
            chunk = rows[s:s + batch_size]
            found, _ = ground_batch(model, collator.processor, collator(chunk), eval_frame_ids_for(chunk, protocol),
                                    **ground_kwargs)
            out_rows.extend(found)
    return out_rows


def predict_clips(
    model: nn.Module,
    processor: Any,
    clips: Sequence[Any],
    prefix: str,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "grounding",
    **ground_kwargs: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Ground synthetic clips held in memory (``bridge_stg.processing.synthetic.SyntheticClip``: frames, fps,
    query) and return ``(prediction rows, post-processed results)``; query ids are ``{prefix}_{i}`` and the boxes
    are on the ``tubedetr`` protocol's frames, as :func:`bridge_stg.training.demo.reference_rows` expects."""
    from bridge_stg.evaluation import tubedetr_grid

    rows: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    with _EvalMode(model):
        for s in tqdm(range(0, len(clips), batch_size), desc=desc, disable=not progress, leave=False):
            chunk = clips[s: s + batch_size]
            batch = processor(videos=[c.frames for c in chunk], text=[c.query for c in chunk],
                              video_fps=[c.fps for c in chunk])
            grids = [tubedetr_grid(0, c.num_frames, c.fps).tolist() for c in chunk]
            found, results = ground_batch(model, processor, batch, grids,
                                          query_ids=[f"{prefix}_{s + j}" for j in range(len(chunk))], **ground_kwargs)
            rows.extend(found)
            raw.extend(results)
    return rows, raw


def evaluate_grounding(
    model: nn.Module, collator: Any, rows: Sequence[Mapping[str, Any]], batch_size: int = 8, protocol: str | None = None,
    ground_kwargs: Mapping[str, Any] | None = None, **metric_kwargs: Any,
) -> dict[str, Any]:
    """:func:`predict_grounding` + :func:`bridge_stg.evaluation.compute_stvg_metrics` (the full result dict;
    ``flatten_results`` gives Trainer-style scalars). Only ``stvg`` rows are scored."""
    from bridge_stg.evaluation import compute_stvg_metrics

    refs = [r for r in rows if r.get("task", "stvg") == "stvg"]
    if not refs:
        raise ValueError("evaluate_grounding: no stvg rows to score")
    protocol = protocol or choose_protocol(refs)
    preds = predict_grounding(model, collator, refs, batch_size=batch_size, protocol=protocol, **dict(ground_kwargs or {}))
    return compute_stvg_metrics(refs, preds, protocol=protocol, **metric_kwargs)


def make_compute_metrics(
    processor: Any, references: Sequence[Mapping[str, Any]], protocol: str | None = None, **metric_kwargs: Any
) -> Callable[[EvalPrediction], dict[str, float]]:
    """``compute_metrics`` for :class:`BridgeSTGTrainer` (``eval_dataset`` = ``references`` in the same order,
    collated by ``BridgeSTGDataCollator(training=False)``; the Trainer's evaluation sampler is sequential).

    Predictions (``PREDICTION_FIELDS``, concatenated over batches with −100 padding; label_ids = the sampled
    frame ids) are turned into pixel tubes by ``processor.post_process_grounding`` with metadata rebuilt from the reference rows
    (``fps``, ``width``, ``height``, segment; note: the row's ``fps`` is taken as the video's) and the sampled
    frame ids of the batch, then scored with ``compute_stvg_metrics`` (``tubedetr`` when every fps allows,
    else ``sampled``). Returns ``flatten_results`` scalars (``m_tIoU``, ``m_vIoU``, ``vIoU@0.3`` …) plus
    ``span_source/<name>``: how many queries got their span from each source (``SPAN_SOURCES``; e.g. the coupled
    baseline's ``unparsable`` generations, which are scored as empty tubes); the
    function's ``last_result`` attribute keeps the full result dict of its latest call (the format of
    ``bridge-stg evaluate --json``, e.g. for a model card).
    """
    from bridge_stg.evaluation import compute_stvg_metrics, flatten_results

    refs = [dict(r) for r in references]
    if not refs:
        raise ValueError("make_compute_metrics: no reference rows")
    proto = protocol or choose_protocol(refs)
    grids = eval_frame_ids_for(refs, proto)

    def compute_metrics(pred: EvalPrediction) -> dict[str, float]:
        arrays = pred.predictions
        if not isinstance(arrays, (tuple, list)) or len(arrays) != len(PREDICTION_FIELDS):
            raise PredictionError(
                f"compute_metrics: expected the {len(PREDICTION_FIELDS)} arrays {PREDICTION_FIELDS} of "
                "BridgeSTGTrainer.prediction_step (use BridgeSTGTrainer with an inference collator)"
            )
        fields = dict(zip(PREDICTION_FIELDS, (np.asarray(a) for a in arrays)))
        fields["frame_ids"] = np.asarray(pred.label_ids)
        n = fields["frame_ids"].shape[0]
        if n != len(refs):
            raise PredictionError(f"compute_metrics: {n} predictions for {len(refs)} reference rows (same order needed)")
        metas, keep = [], []
        for i, r in enumerate(refs):
            ids = fields["frame_ids"][i]
            valid = ids >= 0  # -1 inside a batch, -100 between batches
            k = int(valid.sum())
            if not valid[:k].all():
                raise PredictionError(f"compute_metrics: frame ids of query {r['query_id']!r} are not left-aligned")
            metas.append({"query_id": r["query_id"], "fps": float(r["fps"]), "width": int(r["width"]), "height": int(r["height"]),
                          "segment": [int(r["segment_start"]), int(r["segment_end"])], "frame_ids": ids[:k].tolist()})
            keep.append(k)
        Fm = max(keep)
        seconds = fields["pred_span_seconds"]
        outputs = {
            "pred_span_seconds": None if np.isnan(seconds).all() else seconds,
            "pred_span_frames": fields["pred_span_frames"],
            "pred_boxes": fields["pred_boxes"][:, :Fm],
            "presence_scores": fields["presence_scores"][:, :Fm],
            "decoder_frame_mask": fields["decoder_frame_mask"][:, :Fm] == 1,
            "span_source": [SPAN_SOURCES[int(s)] if 0 <= int(s) < len(SPAN_SOURCES) else None for s in fields["span_source"]],
        }
        if outputs["pred_span_seconds"] is not None and np.isnan(seconds).any():
            raise PredictionError("compute_metrics: pred_span_seconds is missing for some queries only")
        results = processor.post_process_grounding(outputs, metas, eval_frame_ids=grids)
        rows = results_to_prediction_rows(results, metas)
        scored = [(r, p) for r, p in zip(refs, rows) if r.get("task", "stvg") == "stvg"]
        result = compute_stvg_metrics([r for r, _ in scored], [p for _, p in scored], protocol=proto, **metric_kwargs)
        compute_metrics.last_result = result  # the full result dict (``bridge-stg evaluate --json`` format)
        flat = flatten_results(result)
        # how many spans each source produced (e.g. the coupled baseline's unparsable generations), counted
        for name in SPAN_SOURCES:
            n_src = sum(1 for src in outputs["span_source"] if src == name)
            if n_src:
                flat[f"span_source/{name}"] = float(n_src)
        return flat

    compute_metrics.last_result = None
    return compute_metrics


__all__ = [
    "eval_frame_ids_for", "choose_protocol", "results_to_prediction_rows", "ground_batch", "predict_grounding",
    "predict_clips", "evaluate_grounding", "make_compute_metrics",
]
