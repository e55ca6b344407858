"""Post-processing of Bridge-STG: model outputs -> tubes in the video's own frame ids and pixels.

The processor's ``post_process_grounding`` (a mixin of :class:`BridgeSTGProcessor`, kept in its own file so the
processor file holds the input side only). Self-contained remote code: numpy, torch and sibling files.

Contract: ``docs/design.md`` §4; docs/method.md §3.11.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .box_ops_bridge_stg import box_cxcywh_to_xyxy, clip_boxes_xyxy, round_half_up


class BridgeSTGPostProcessingMixin:
    """``post_process_grounding`` for :class:`BridgeSTGProcessor` (needs no processor state)."""

    def post_process_grounding(
        self,
        outputs: Any,
        metadata: Any,
        eval_frame_ids: Sequence[Sequence[int] | None] | Sequence[int] | None = None,
        threshold: float | None = None,
    ) -> list[dict[str, Any]]:
        """Map model outputs to tubes in the video's own frame ids and pixels (design.md §4, docs/method.md §3.11).

        Args:
            outputs: `BridgeSTGGroundingOutput` (or a mapping) with ``pred_span_seconds`` (B, 2) [A, B) seconds
                from the segment start (or ``pred_span_frames`` (B, 2) half-open sampled-frame indices),
                ``pred_boxes`` (B, F, 4) normalised cxcywh, ``presence_scores`` (B, F), optional
                ``decoder_frame_mask`` (B, F) and ``span_source``.
            metadata: the `BatchFeature` returned by ``__call__`` (its ``video_metadata``) or that list.
            eval_frame_ids: frame ids to also get boxes on: one list per sample (or one list for a batch of
                one). Ids inside the predicted span get a box, linearly interpolated between decoded frames
                (nearest decoded box before the first / after the last).
            threshold: if given, decoded frames whose presence score is below it are left out of ``frames``/``boxes``.

        Returns:
            One dict per sample: ``"span"`` ``[start_frame, end_frame)`` (half-open frame ids of the video),
            ``"span_seconds"`` ``[start, end)`` (seconds from the video start), ``"frames"``, ``"boxes"``
            (``[x1, y1, x2, y2]`` original pixels, clamped to the image), ``"scores"`` (presence scores),
            ``"span_source"`` and, with ``eval_frame_ids``, ``"eval_frame_ids"``, ``"eval_boxes"``, ``"eval_scores"``.
        """
        metas = getattr(metadata, "video_metadata", metadata)
        metas = [metas] if isinstance(metas, Mapping) else list(metas)
        batch = len(metas)
        get = (lambda k: outputs.get(k)) if isinstance(outputs, Mapping) else (lambda k: getattr(outputs, k, None))
        fields = {k: _np(get(k)) for k in ("pred_span_seconds", "pred_span_frames", "pred_boxes", "presence_scores",
                                          "decoder_frame_mask")}
        sources = get("span_source")
        if fields["pred_boxes"] is None or fields["pred_boxes"].shape[0] != batch:
            got = None if fields["pred_boxes"] is None else fields["pred_boxes"].shape
            raise ValueError(f"outputs.pred_boxes: expected {batch} samples, got {got}")
        if fields["pred_span_seconds"] is None and fields["pred_span_frames"] is None:
            raise ValueError("outputs: need pred_span_seconds or pred_span_frames")
        eval_list = [None] * batch
        if eval_frame_ids is not None:
            eval_list = list(eval_frame_ids)
            if eval_list and not isinstance(eval_list[0], (list, tuple, np.ndarray, type(None))):
                eval_list = [eval_list]
            if len(eval_list) != batch:
                raise ValueError(f"eval_frame_ids: expected {batch} lists, got {len(eval_list)}")
        results = []
        for i, meta in enumerate(metas):
            source = sources[i] if isinstance(sources, (list, tuple)) and i < len(sources) else None
            results.append(self._post_process_one(fields, i, meta, eval_list[i], threshold, source))
        return results

    @staticmethod
    def _span_frames(fields: dict[str, Any], i: int, meta: Mapping[str, Any]) -> tuple[int, int]:
        """Sample ``i``'s span as half-open frame ids of the video, inside its segment."""
        fps = float(meta["fps"])
        seg_start, seg_end = (int(x) for x in meta["segment"])
        ids = [int(f) for f in meta["frame_ids"]]
        if fields["pred_span_seconds"] is not None:
            a, b = (float(v) for v in fields["pred_span_seconds"][i])
            start, end = seg_start + round_half_up(a * fps), seg_start + round_half_up(b * fps)
        else:
            first = int(min(max(fields["pred_span_frames"][i, 0], 0), len(ids) - 1))
            last = int(min(max(fields["pred_span_frames"][i, 1] - 1, first), len(ids) - 1))
            start, end = ids[first], ids[last] + 1
        start = min(max(start, seg_start), seg_end - 1)
        return start, min(max(end, start + 1), seg_end)

    def _post_process_one(self, fields: dict[str, Any], i: int, meta: Mapping[str, Any], eval_ids: Any,
                          threshold: float | None, source: str | None) -> dict[str, Any]:
        ids = [int(f) for f in meta["frame_ids"]]
        n = len(ids)
        fps = float(meta["fps"])
        start, end = self._span_frames(fields, i, meta)
        width, height = float(meta["width"]), float(meta["height"])
        boxes_px = _to_pixels(fields["pred_boxes"][i, :n].astype(np.float64), width, height)
        scores = fields["presence_scores"][i, :n].astype(np.float64) if fields["presence_scores"] is not None else np.ones(n)
        ran = fields["decoder_frame_mask"][i, :n].astype(bool) if fields["decoder_frame_mask"] is not None \
            else np.ones(n, dtype=bool)
        # unique decoded frames (an id repeated to complete a temporal group counts once)
        seen: dict[int, int] = {}
        for k in range(n):
            if ran[k] and ids[k] not in seen:
                seen[ids[k]] = k
        in_span = [(f, k) for f, k in sorted(seen.items()) if start <= f < end]
        kept = [(f, k) for f, k in in_span if threshold is None or scores[k] >= threshold]
        res: dict[str, Any] = {
            "span": [start, end], "span_seconds": [start / fps, end / fps],
            "frames": [f for f, _ in kept], "boxes": [[float(v) for v in boxes_px[k]] for _, k in kept],
            "scores": [float(scores[k]) for _, k in kept], "span_source": source,
        }
        if eval_ids is not None:
            anchors = in_span if in_span else sorted(seen.items())
            req = [int(f) for f in eval_ids if start <= int(f) < end]
            res["eval_frame_ids"], res["eval_boxes"], res["eval_scores"] = [], [], []
            if anchors:
                af = np.array([f for f, _ in anchors], dtype=np.float64)
                ab = np.stack([boxes_px[k] for _, k in anchors])
                asc = np.array([scores[k] for _, k in anchors], dtype=np.float64)
                rf = np.array(req, dtype=np.float64)
                eb = np.stack([np.interp(rf, af, ab[:, c]) for c in range(4)], axis=-1) if req else np.zeros((0, 4))
                res["eval_frame_ids"] = req
                res["eval_boxes"] = [[float(v) for v in b] for b in clip_boxes_xyxy(eb, width, height)]
                res["eval_scores"] = [float(v) for v in (np.interp(rf, af, asc) if req else np.zeros(0))]
        return res


def _np(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def _to_pixels(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Normalised (cx, cy, w, h) (..., 4) -> absolute (x1, y1, x2, y2) clamped to the image."""
    return clip_boxes_xyxy(box_cxcywh_to_xyxy(boxes) * np.array([width, height, width, height]), width, height)


__all__ = ["BridgeSTGPostProcessingMixin"]
