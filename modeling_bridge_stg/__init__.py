"""bridge-stg: Bridge-STG spatio-temporal video grounding, Hugging Face-native.

Importing the package registers ``bridge_stg`` with ``AutoConfig`` / ``AutoModel`` / ``AutoProcessor`` and the
``video-grounding`` pipeline. This folder (``modeling_bridge_stg/`` in the repository) is also the remote code that
exported checkpoints carry: every file but this one imports only torch, transformers, numpy, PyAV, PIL and its
siblings.
"""

from __future__ import annotations

__version__ = "0.1.0"

from transformers import AutoConfig, AutoModel, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_bridge_stg import BridgeSTGConfig
from .errors_bridge_stg import (
    AnnotationError,
    BridgeSTGError,
    FrameSamplingError,
    InvalidQueryError,
    MissingAssetError,
    PredictionError,
    UnsafePathError,
    VideoDecodeError,
)
from .modeling_bridge_stg import (
    BridgeSTGForVideoGrounding,
    BridgeSTGGroundingOutput,
    BridgeSTGModelOutput,
    BridgeSTGPreTrainedModel,
)
from .processing_bridge_stg import BridgeSTGProcessor
from .video_io_bridge_stg import DecodedVideo, VideoMetadata, probe_video, read_video
from .video_processing_bridge_stg import BridgeSTGVideoProcessor
from .pipeline_video_grounding import VideoGroundingPipeline

AutoConfig.register(BridgeSTGConfig.model_type, BridgeSTGConfig, exist_ok=True)
AutoModel.register(BridgeSTGConfig, BridgeSTGForVideoGrounding, exist_ok=True)
AutoProcessor.register(BridgeSTGConfig, BridgeSTGProcessor, exist_ok=True)

# ``save_pretrained`` writes weights and configs only; a self-contained folder (code, auto_map, pipeline
# registration) is written at export by ``bridge_stg.model_cards.hub.save_for_hub``

PIPELINE_REGISTRY.register_pipeline(
    "video-grounding", pipeline_class=VideoGroundingPipeline, pt_model=AutoModel, type="multimodal"
)

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
]
