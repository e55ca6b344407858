"""bridge-stg: Bridge-STG spatio-temporal video grounding, Hugging Face-native.

Importing the package registers ``bridge_stg`` with ``AutoConfig`` / ``AutoModel`` / ``AutoProcessor`` and the
``video-grounding`` pipeline. This folder (``modeling_bridge_stg/`` in the repository) is also the remote code that
exported checkpoints carry: every file but this one imports only torch, transformers, numpy, PyAV, PIL and its
siblings.

One exception to the eager import: when the process is the ``bridge-stg`` console script, the model classes (and
with them torch) are imported on first use instead, so that ``bridge-stg --help`` and ``bridge-stg version`` start
in a fraction of a second. The dispatcher (:mod:`bridge_stg.commands.cli`) calls :func:`_import_and_register` before
any other subcommand, so every command still runs with the classes registered.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__version__ = "0.1.0"

from .errors_bridge_stg import (  # standard library only
    AnnotationError,
    BridgeSTGError,
    FrameSamplingError,
    InvalidQueryError,
    MissingAssetError,
    MissingDependencyError,
    OutputExistsError,
    PredictionError,
    UnsafePathError,
    VideoDecodeError,
)

#: names imported from the model files (torch, transformers) by :func:`_import_and_register`
_MODEL_NAMES: dict[str, str] = {
    "BridgeSTGConfig": "configuration_bridge_stg",
    "BridgeSTGForVideoGrounding": "modeling_bridge_stg",
    "BridgeSTGGroundingOutput": "modeling_bridge_stg",
    "BridgeSTGModelOutput": "modeling_bridge_stg",
    "BridgeSTGPreTrainedModel": "modeling_bridge_stg",
    "BridgeSTGProcessor": "processing_bridge_stg",
    "DecodedVideo": "video_io_bridge_stg",
    "VideoMetadata": "video_io_bridge_stg",
    "probe_video": "video_io_bridge_stg",
    "read_video": "video_io_bridge_stg",
    "BridgeSTGVideoProcessor": "video_processing_bridge_stg",
    "VideoGroundingPipeline": "pipeline_video_grounding",
}
_REGISTERED = False


def _import_and_register() -> None:
    """Import the model classes into the package namespace and register them with the Auto classes and the
    ``video-grounding`` pipeline (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    import importlib

    from transformers import AutoConfig, AutoModel, AutoProcessor
    from transformers.pipelines import PIPELINE_REGISTRY

    namespace = globals()
    for name, module in _MODEL_NAMES.items():
        namespace[name] = getattr(importlib.import_module(f".{module}", __name__), name)
    config, model = namespace["BridgeSTGConfig"], namespace["BridgeSTGForVideoGrounding"]
    AutoConfig.register(config.model_type, config, exist_ok=True)
    AutoModel.register(config, model, exist_ok=True)
    AutoProcessor.register(config, namespace["BridgeSTGProcessor"], exist_ok=True)
    # ``save_pretrained`` writes weights and configs only; a self-contained folder (code, auto_map, pipeline
    # registration) is written at export by ``bridge_stg.model_cards.hub.save_for_hub``
    PIPELINE_REGISTRY.register_pipeline(
        "video-grounding", pipeline_class=namespace["VideoGroundingPipeline"], pt_model=AutoModel, type="multimodal"
    )
    _REGISTERED = True


def _started_as_console_script() -> bool:
    """Whether this process is the ``bridge-stg`` console script (``bin/bridge-stg``, ``bridge-stg.exe``)."""
    return os.path.splitext(os.path.basename(sys.argv[0] if sys.argv else ""))[0] == "bridge-stg"


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        _import_and_register()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if not _started_as_console_script():
    _import_and_register()

__all__ = [
    "__version__",
    "BridgeSTGConfig",
    "BridgeSTGForVideoGrounding",
    "BridgeSTGPreTrainedModel",
    "BridgeSTGModelOutput",
    "BridgeSTGGroundingOutput",
    "BridgeSTGProcessor",
    "BridgeSTGVideoProcessor",
    "VideoGroundingPipeline",
    "read_video",
    "probe_video",
    "DecodedVideo",
    "VideoMetadata",
    "BridgeSTGError",
    "VideoDecodeError",
    "FrameSamplingError",
    "InvalidQueryError",
    "AnnotationError",
    "UnsafePathError",
    "PredictionError",
    "MissingAssetError",
    "MissingDependencyError",
    "OutputExistsError",
]
