"""STVG metric for ``evaluate``: exact m_tIoU / m_vIoU / vIoU@R / m_sIoU under a named protocol.

Load it with ``evaluate.load("<repo>/evaluation/stvg")`` or
``evaluate.load(bridge_stg.evaluation.METRIC_PATH)``. The maths lives in the numpy core
``bridge_stg.evaluation.metrics`` (the installed package), which this script calls.
"""

import datasets
import evaluate

from bridge_stg.evaluation.metrics import PROTOCOLS
from bridge_stg.evaluation.metrics import compute_stvg_metrics
from bridge_stg.evaluation.metrics import flatten_results

_CITATION = """\
@inproceedings{yang2022tubedetr,
  title={TubeDETR: Spatio-Temporal Video Grounding with Transformers},
  author={Yang, Antoine and Miech, Antoine and Sivic, Josef and Laptev, Ivan and Schmid, Cordelia},
  booktitle={CVPR},
  year={2022}
}
"""

_DESCRIPTION = """\
Spatio-temporal video grounding metrics: per query the temporal IoU of the predicted span, the
spatio-temporal vIoU (box IoU summed over scored frames of the span intersection, divided by the scored
frames of the span union) and the GT-span spatial IoU (m_sIoU); aggregated to m_tIoU, m_vIoU,
vIoU@0.3, vIoU@0.5 (strict >) and m_sIoU overall and per VidSTG query type, plus the "average m_vIoU"
(mean of the declarative and interrogative m_vIoU). Protocols: tubedetr (5 fps grid of the segment,
200-frame cap; default), dense (every frame; STCAT family), sampled (frames the model saw), hcstvg
(official HC-STVG script). Frame ids are original 0-based ids, spans half-open, boxes [x1, y1, x2, y2]
pixels. Values are fractions in [0, 1].
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of dicts, one per reference query (any order, matched by `query_id`):
        `query_id` (str), `span` ([start, end) original frame ids; None or [] = no prediction, scored 0),
        `frame_ids` (list of int), `boxes` (list of [x1, y1, x2, y2] pixels, one per frame id),
        `sampled_frame_ids` (list of int; None or [] = not given; required by protocol="sampled").
    references: list of dicts (canonical rows): `query_id`, `query_type` ("declarative" /
        "interrogative" / None or ""), `fps`, `segment_start`, `segment_end`, `tube_start`, `tube_end`
        (half-open), `frame_ids`, `boxes`.
    protocol: "tubedetr" (default), "dense", "sampled" or "hcstvg".
    interpolate: fill missing predicted boxes by linear interpolation between predicted frames.
    stcat_compat: dense only; reproduce STCAT's one-frame-short GT end.
    target_fps, max_frames: the tubedetr grid (default 5 fps, 200 frames).
    flat: return a flat {name: float} dict for Trainer.compute_metrics instead of the nested result.
Returns:
    {"protocol", "protocol_params", "all", "declarative", "interrogative", "avg_m_vIoU",
     "missing_predictions", "missing_boxes"}; each group holds m_tIoU, m_vIoU, vIoU@0.3, vIoU@0.5,
    m_sIoU and num_queries (metric values None for an empty group).
Examples:
    >>> import evaluate
    >>> from bridge_stg.evaluation import METRIC_PATH
    >>> metric = evaluate.load(METRIC_PATH)
    >>> ref = {"query_id": "q", "query_type": "declarative", "fps": 25.0, "segment_start": 0, "segment_end": 51,
    ...        "tube_start": 10, "tube_end": 30, "frame_ids": list(range(10, 30)), "boxes": [[0, 0, 10, 10]] * 20}
    >>> pred = {"query_id": "q", "span": [10, 30], "frame_ids": list(range(10, 30)), "boxes": [[0, 0, 10, 10]] * 20}
    >>> metric.compute(predictions=[pred], references=[ref])["all"]["m_vIoU"]
    1.0
"""

_INT_LIST = datasets.List(datasets.Value("int64"))
_BOXES = datasets.List(datasets.List(datasets.Value("float64"), length=4))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Stvg(evaluate.Metric):
    """Exact STVG metrics (see the module docstring and the metric card)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "query_id": datasets.Value("string"),
                        "span": _INT_LIST,
                        "frame_ids": _INT_LIST,
                        "boxes": _BOXES,
                        "sampled_frame_ids": _INT_LIST,
                    },
                    "references": {
                        "query_id": datasets.Value("string"),
                        "query_type": datasets.Value("string"),
                        "fps": datasets.Value("float64"),
                        "segment_start": datasets.Value("int64"),
                        "segment_end": datasets.Value("int64"),
                        "tube_start": datasets.Value("int64"),
                        "tube_end": datasets.Value("int64"),
                        "frame_ids": _INT_LIST,
                        "boxes": _BOXES,
                    },
                }
            ),
            reference_urls=["https://github.com/antoyang/TubeDETR"],
        )

    def _rows(self, rows, column):
        """Keep the feature's fields of every row; absent or None list fields become ``[]``.

        Arrow needs a value of the declared type in every row, so "no prediction" travels as
        ``span == []`` and "no sampled frames given" as ``sampled_frame_ids == []``; :meth:`_compute`
        turns both back into None for the core.
        """
        if rows is None:
            return None
        features = self._info().features[column]
        out = []
        for r in rows:
            row = {}
            for k, feature in features.items():
                v = r.get(k) if hasattr(r, "get") else None
                if v is None and isinstance(feature, datasets.List):
                    v = []
                elif v is None and k == "query_type":
                    v = ""  # evaluate rejects None where a string is declared
                row[k] = v
            out.append(row)
        return out

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of prediction and reference rows (absent optional fields are filled with None)."""
        return super().add_batch(
            predictions=self._rows(predictions, "predictions"), references=self._rows(references, "references"), **kwargs
        )

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one prediction row and one reference row."""
        pred = None if prediction is None else self._rows([prediction], "predictions")[0]
        ref = None if reference is None else self._rows([reference], "references")[0]
        return super().add(prediction=pred, reference=ref, **kwargs)

    def _compute(
        self,
        predictions,
        references,
        protocol: str = "tubedetr",
        interpolate: bool = False,
        stcat_compat: bool = False,
        target_fps: float = 5.0,
        max_frames: int = 200,
        flat: bool = False,
    ):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
        preds = []
        for p in predictions:
            p = dict(p)
            if p.get("span") is not None and len(p["span"]) == 0:
                p["span"] = None
            if p.get("sampled_frame_ids") is not None and len(p["sampled_frame_ids"]) == 0:
                p["sampled_frame_ids"] = None
            preds.append(p)
        refs = [dict(r, query_type=r.get("query_type") or None) for r in references]
        result = compute_stvg_metrics(
            refs, preds, protocol, interpolate=interpolate, stcat_compat=stcat_compat,
            target_fps=target_fps, max_frames=max_frames,
        )
        return flatten_results(result) if flat else result
