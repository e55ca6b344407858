"""Torch-only video processor of Bridge-STG: resize, normalise and patchify frames the Qwen-VL way.

Self-contained remote code: imports only torch, numpy, transformers and sibling files. No torchvision
(see docs/hf_notes.md §5: every stock video processor needs it); the output layout is that of
``Qwen2VLVideoProcessor`` except that each temporal group gets its own ``video_grid_thw`` row
``(1, h, w)`` so that a timestamp can be written before each group in the prompt.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers.feature_extraction_utils import BatchFeature
from transformers.video_processing_utils import VideoProcessorMixin

from .errors_bridge_stg import VideoDecodeError


OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def smart_resize(
    height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56, max_pixels: int = 14 * 14 * 4 * 1280
) -> tuple[int, int]:
    """Qwen-VL's resize rule: sides multiple of ``factor``, area within ``[min_pixels, max_pixels]`` when
    possible, aspect ratio kept as closely as possible.

    Returns:
        ``(new_height, new_width)``.
    """
    if height <= 0 or width <= 0:
        raise VideoDecodeError(f"frame size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > 200:
        raise VideoDecodeError(f"aspect ratio must be at most 200, got {height}x{width}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return int(h_bar), int(w_bar)


class BridgeSTGVideoProcessor(VideoProcessorMixin):
    r"""
    Video processor of Bridge-STG (torch only).

    Takes already-sampled frames (see `read_video`), resizes every frame of a video to one size whose
    sides are multiples of `patch_size * merge_size` (Qwen's `smart_resize` under a per-frame pixel
    budget and a total merged-token budget), rescales to [0, 1], normalises with the CLIP mean/std and
    patchifies into the Qwen-VL layout.

    Args:
        patch_size (`int`, defaults to 14): ViT patch size (Qwen2.5-VL 14, Qwen3-VL 16).
        merge_size (`int`, defaults to 2): spatial merge of the vision tower.
        temporal_patch_size (`int`, defaults to 2): frames per temporal group.
        min_pixels (`int`, defaults to 16·28²): per-frame minimum area.
        max_pixels (`int`, defaults to 256·28²): per-frame maximum area.
        max_video_tokens (`int`, defaults to 8192): maximum merged visual tokens over a whole video.
        image_mean, image_std (`list[float]`): normalisation (CLIP).
        rescale_factor (`float`, defaults to 1/255).
    """

    model_input_names = ["pixel_values_videos", "video_grid_thw"]

    def __init__(
        self,
        patch_size: int = 14,
        merge_size: int = 2,
        temporal_patch_size: int = 2,
        min_pixels: int = 16 * 28 * 28,
        max_pixels: int = 256 * 28 * 28,
        max_video_tokens: int = 8192,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        rescale_factor: float = 1 / 255,
        **kwargs: Any,
    ) -> None:
        for key in ("video_processor_type", "auto_map", "processor_class", "image_processor_type"):
            kwargs.pop(key, None)
        super().__init__(**kwargs)
        for name, value in (("patch_size", patch_size), ("merge_size", merge_size),
                            ("temporal_patch_size", temporal_patch_size), ("min_pixels", min_pixels),
                            ("max_pixels", max_pixels), ("max_video_tokens", max_video_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        if max_pixels < min_pixels:
            raise ValueError(f"max_pixels: {max_pixels} is smaller than min_pixels={min_pixels}")
        self.patch_size = int(patch_size)
        self.merge_size = int(merge_size)
        self.temporal_patch_size = int(temporal_patch_size)
        self.min_pixels = int(min_pixels)
        self.max_pixels = int(max_pixels)
        self.max_video_tokens = int(max_video_tokens)
        self.image_mean = [float(x) for x in (image_mean if image_mean is not None else OPENAI_CLIP_MEAN)]
        self.image_std = [float(x) for x in (image_std if image_std is not None else OPENAI_CLIP_STD)]
        self.rescale_factor = float(rescale_factor)

    # ----------------------------------------------------------------------------- sizes
    @property
    def factor(self) -> int:
        """Side granularity: ``patch_size * merge_size`` (28 for Qwen2.5-VL, 32 for Qwen3-VL)."""
        return self.patch_size * self.merge_size

    def num_groups(self, num_frames: int) -> int:
        """Temporal groups of a clip of ``num_frames`` frames (odd counts are padded by one frame)."""
        return -(-int(num_frames) // self.temporal_patch_size)

    def target_size(self, height: int, width: int, num_frames: int) -> tuple[int, int]:
        """Resized ``(height, width)`` of a clip: per-frame budget, then the total merged-token budget."""
        groups = max(self.num_groups(num_frames), 1)
        per_group_tokens = max(self.max_video_tokens // groups, 1)
        budget_pixels = per_group_tokens * self.factor * self.factor
        max_px = min(self.max_pixels, budget_pixels)
        min_px = min(self.min_pixels, max_px)
        h, w = smart_resize(height, width, factor=self.factor, min_pixels=min_px, max_pixels=max_px)
        if (h // self.factor) * (w // self.factor) * groups > self.max_video_tokens and h * w > self.factor**2:
            # the ceil branch of smart_resize overshot the token budget: shrink to fit
            h, w = smart_resize(height, width, factor=self.factor, min_pixels=1, max_pixels=max_px)
        return h, w

    def tokens_per_group(self, height: int, width: int) -> int:
        """Merged visual tokens (``<|video_pad|>`` count) of one temporal group at a resized size."""
        return (height // self.patch_size) * (width // self.patch_size) // (self.merge_size**2)

    # ----------------------------------------------------------------------------- core
    def _to_tensor(self, video: Any) -> torch.Tensor:
        """One video to a float tensor ``(T, 3, H, W)`` in [0, 255]."""
        frames = getattr(video, "frames", video)  # DecodedVideo or raw frames
        if isinstance(frames, (list, tuple)):
            frames = np.stack([np.asarray(f.convert("RGB") if hasattr(f, "convert") else f) for f in frames])
        if isinstance(frames, np.ndarray):
            tensor = torch.from_numpy(np.ascontiguousarray(frames))
        elif isinstance(frames, torch.Tensor):
            tensor = frames
        else:
            raise VideoDecodeError(f"unsupported frames type {type(frames).__name__}; expected (T, H, W, 3) uint8")
        if tensor.ndim != 4:
            raise VideoDecodeError(f"frames must have 4 dims (T, H, W, 3), got shape {tuple(tensor.shape)}")
        if tensor.shape[-1] == 3:
            tensor = tensor.permute(0, 3, 1, 2)
        elif tensor.shape[1] != 3:
            raise VideoDecodeError(f"frames must be RGB (T, H, W, 3), got shape {tuple(tensor.shape)}")
        if tensor.shape[0] == 0:
            raise VideoDecodeError("the video has no frames")
        return tensor.float()

    def preprocess_one(self, video: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Process one clip.

        Args:
            video: ``(T, H, W, 3)`` uint8 frames (array / tensor / list of PIL) or a `DecodedVideo`.

        Returns:
            ``pixel_values_videos`` ``(G·h/p·w/p, 3·tp·p·p)`` float32 and ``video_grid_thw`` ``(G, 3)`` long
            with rows ``(1, h/p, w/p)``, G = ceil(T / tp).
        """
        frames = self._to_tensor(video)
        t, _, height, width = frames.shape
        rh, rw = self.target_size(height, width, t)
        if (rh, rw) != (height, width):
            frames = F.interpolate(frames, size=(rh, rw), mode="bicubic", antialias=True, align_corners=False)
            frames = frames.clamp_(0, 255).round_()  # what a uint8 resize (Qwen's processors) yields
        tp = self.temporal_patch_size
        if t % tp:
            frames = torch.cat([frames, frames[-1:].expand(tp - t % tp, -1, -1, -1)], dim=0)
        mean = torch.tensor(self.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        frames = (frames * self.rescale_factor - mean) / std
        p, m = self.patch_size, self.merge_size
        groups = frames.shape[0] // tp
        gh, gw = rh // p, rw // p
        patches = frames.reshape(groups, tp, 3, gh // m, m, p, gw // m, m, p)
        patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        pixel_values = patches.reshape(groups * gh * gw, 3 * tp * p * p).contiguous()
        grid = torch.tensor([[1, gh, gw]] * groups, dtype=torch.long)
        return pixel_values, grid

    def preprocess(self, videos: Any, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        """Process one video or a list of videos.

        Args:
            videos: a video (``(T, H, W, 3)`` uint8 array / tensor, list of PIL images, `DecodedVideo`) or a
                list of them.

        Returns:
            `BatchFeature` with ``pixel_values_videos`` ``(ΣN_patches, 3·tp·p·p)`` and ``video_grid_thw``
            ``(ΣG_i, 3)``, sample-major, group order.
        """
        if kwargs:
            raise TypeError(f"BridgeSTGVideoProcessor got unexpected arguments {sorted(kwargs)}")
        if _is_single_video(videos):
            videos = [videos]
        pixels, grids = [], []
        for video in videos:
            pv, grid = self.preprocess_one(video)
            pixels.append(pv)
            grids.append(grid)
        data = {"pixel_values_videos": torch.cat(pixels), "video_grid_thw": torch.cat(grids)}
        return BatchFeature(data=data, tensor_type=return_tensors)

    def __call__(self, videos: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(videos, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for key in ("_valid_kwargs_names", "_processor_class"):
            out.pop(key, None)
        return out


def _is_single_video(videos: Any) -> bool:
    if hasattr(videos, "frames") and hasattr(videos, "frame_ids"):
        return True
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        return videos.ndim == 4
    if isinstance(videos, (list, tuple)) and videos:
        first = videos[0]
        return hasattr(first, "convert") or (isinstance(first, np.ndarray) and first.ndim == 3)
    return False


__all__ = ["BridgeSTGVideoProcessor", "smart_resize", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD"]
