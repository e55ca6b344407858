"""Configuration of Bridge-STG (decoupled spatio-temporal video grounding).

Self-contained remote code: imports only ``transformers`` (and the standard library).
"""

from __future__ import annotations

import math
from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import logging


logger = logging.get_logger(__name__)

SUPPORTED_MLLM_TYPES = ("qwen2_5_vl", "qwen3_vl")
#: the training tasks (the dataset's ``task`` column) and their ``task_ids`` (docs/method.md §3.9)
TASK_IDS = {"stvg": 0, "tvg": 1, "rec": 2}
TASKS = tuple(TASK_IDS)
#: frame sampling defaults of the processor and the reader (docs/method.md §3.2)
DEFAULT_SAMPLE_FPS = 2.0
DEFAULT_MAX_FRAMES = 64
DEFAULT_MIN_FRAMES = 4
#: the component losses of ``BridgeSTGModelOutput`` (each weighted by ``<name>_weight``)
COMPONENT_LOSSES = ("loss_lm", "loss_l1", "loss_giou", "loss_presence", "loss_relevance", "loss_contrastive", "loss_span",
                    "loss_reference", "loss_query")
LOSS_WEIGHT_FIELDS = tuple(f"{name}_weight" for name in COMPONENT_LOSSES)


class BridgeSTGConfig(PreTrainedConfig):
    r"""
    Configuration of a [`BridgeSTGForVideoGrounding`]: a Qwen-VL video MLLM (temporal reasoning), the
    spatio-temporal semantic bridge (STSB, with explicit temporal alignment) and the query-guided
    spatial decoder (QGSL). Every hyperparameter of the method lives here; defaults follow the
    reference design (`docs/method.md` §3.14); the "tiny" column there is what the tests use.

    Args:
        mllm_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the temporal MLLM, a `qwen2_5_vl` or `qwen3_vl` config (a dict must carry
            `model_type`). There is deliberately no implicit default: a bare `BridgeSTGConfig()` has
            `mllm_config=None` and building a model from it raises, so a 7B-sized backbone is never
            allocated by accident. Use [`BridgeSTGForVideoGrounding.from_mllm_pretrained`] to start
            from Hub weights.
        bridge_token_ids (`list[int]`, *optional*):
            Token ids of the K bridge tokens `<bridge_0>`..`<bridge_{K-1}>` in the tokenizer; written by
            the processor / training code after adding the tokens. Required by `forward`.
        num_bridge_queries (`int`, defaults to 8): K, number of bridge tokens / bridging queries.
        bridge_num_layers (`int`, defaults to 4): L, number of last LLM layers fused (1 = ablation).
        decoder_layers (`int`, defaults to 6): QGSL decoder layers.
        decoder_hidden_size (`int`, defaults to 256): decoder width d.
        decoder_heads (`int`, defaults to 8): attention heads of the decoder (must divide d).
        decoder_ffn_dim (`int`, defaults to 2048): FFN width of the decoder.
        decoder_dropout (`float`, defaults to 0.1): dropout inside the decoder.
        box_head (`str`, defaults to `"reference_point"`): `"reference_point"` (each frame token
            proposes a box as a bounded offset from its grid cell, weighted by query attention) or
            `"mlp"` (3-layer MLP on the pooled frame embedding).
        visual_memory (`str`, defaults to `"vision"`): decoder memory per frame, `"vision"` (merged
            vision-encoder tokens) or `"llm"` (last-layer LLM states at the video tokens).
        eta (`bool`, defaults to `True`): explicit temporal alignment; `False` runs the decoder over all
            sampled frames (ablation).
        span_source (`str`, defaults to `"text"`): where the temporal span comes from at inference,
            `"text"` (the MLLM writes "From A s to B s.", as in the paper) or `"frame"` (per-frame
            start/end logits on the frame-aligned states; what small models trained from scratch learn
            quickly). Both heads are trained whenever their loss weight is positive.
        span_edges (`str`, defaults to `"sampled"`): how a span read from the sampled frames (frame mode, and the
            relevance fallback of text mode) becomes seconds: `"sampled"` (from the first frame inside to the first
            sampled frame after it) or `"midpoint"` (each edge half-way between the edge frame inside and its
            neighbour outside; the true edge lies anywhere between them, so the middle is the unbiased guess). Read at
            inference only (docs/method.md §3.11).
        grounding_mode (`str`, defaults to `"decoupled"`): `"decoupled"` (Bridge-STG) or `"coupled"`
            (baseline: the MLLM writes the span and one box per sampled frame as text).
        query_position (`str`, defaults to `"before_video"`): where the prompt puts the query: `"before_video"`
            (every frame state has read the query) or `"after_video"` (the video tokens are query-agnostic, so the
            query reaches the decoder only through the bridging queries, and queries can share the video's cache).
        bridge_query_norm (`bool`, defaults to `False`): LayerNorm on the bridging queries Q_b (the output of the
            query projection), so the query signal enters the decoder at unit scale from the first step.
        fusion_layer_norm (`bool`, defaults to `False`): LayerNorm each of the L fused LLM layers before the
            weighted sum (the last layer is after the final norm, the others are raw residual streams).
        decoder_init (`str`, defaults to `"normal"`): initialisation of the bridge and decoder layers: `"normal"`
            (N(0, `initializer_range`)) or `"fan_in"` (U(±1/sqrt(fan_in)), PyTorch's default for `nn.Linear`).
        relevance_bias_init (`float`, defaults to -5.0): initial beta of the relevance logit `alpha cos + beta`
            (the log-odds of the share of positive frames is the unbiased start: 0 for half of them).
        decoder_frame_sampling (`str`, defaults to `"random"`): training frames of the decoder: `"random"` (up to
            `num_positive_frames` positives and `num_negative_frames` negatives anywhere) or `"contiguous"` (one run
            of consecutive positives and the negatives next to it, like the span the decoder sees at inference).
        reference_supervision (`str`, defaults to `"mass"`): the form of `loss_reference`: `"mass"` (`-log` of the share
            of the box head's attention on the tokens whose cell overlaps the ground-truth box) or `"bce"` (BCE of
            each token's reference-point score).
        bridge_in_decoder (`bool`, defaults to `True`): the bridging queries Q_b enter the decoder's query positions
            (`False`: the ablation "decoder without the bridge"; Q_b still feed the temporal head).
        frame_evidence (`bool`, defaults to `False`): give each frame of a temporal group its own visual evidence
            in the decoder memory (a projection of that frame's pixels per merged token, added to the group's
            tokens), so that a box can follow the target within a group.
        motion_evidence (`bool`, defaults to `False`): add to each memory token a motion feature of its grid
            neighbourhood: per merged token, a projection of each of the group's two frames' pixels, mixed with their
            difference by a small MLP, then the 3x3 neighbourhood of those features (zeros off the grid) projected and
            normalised. A single merged token sees the inside of an object, its edges (where motion shows) lie in the
            cells around it (docs/method.md §3.25).
        motion_flow (`bool`, defaults to `False`): with `motion_evidence`, also give each token's motion feature the
            gradient-based (Lucas–Kanade) motion statistics of its cell between the group's two frames (the direction
            of the move as two signed numbers, how much changes, how much edge there is), computed from the pixels
            without parameters and then projected (docs/method.md §3.30).
        reference_learned_scale (`bool`, defaults to `False`): multiply the box head's reference-point logits by a
            learned scale (`exp` of a parameter that starts at 0) before the softmax that weights the tokens' boxes, so
            the box loss can sharpen that attention directly (`loss_reference` still reads the unscaled logits).
        reference_query_pos (`bool`, defaults to `False`): the reference-point box head scores the memory tokens
            with its frame's pooled decoder state plus the pooled query positions (`x + P`, the sum every decoder
            attention queries with), so the bridging queries Q_b in `P` reach the box head's match directly instead of
            only through what the decoder layers keep of them (docs/method.md §3.30).
        reference_readout (`str`, defaults to `"mean"`): how the reference-point box head turns its attention over
            the frame's tokens into one box at inference (the model in eval mode): `"mean"` (the attention-weighted
            average of every token's box) or `"peak"` (the same average over the highest-scoring token and the tokens
            of the 8 grid cells around it, renormalised), so that attention split between two distant look-alikes
            gives a box on one of them rather than between them.
        reference_readout_training (`str`, defaults to `"mean"`): the same choice in train mode. With `"mean"` the
            box loss reaches the attention on every token, which is what lets it find the target from a random start;
            with `"peak"` it reaches only the top token's neighbourhood (measured: two of three seeds stayed on the
            plateau, docs/method.md §3.23).
        num_positive_frames (`int`, defaults to 16): positive frames sampled per clip in training.
        num_negative_frames (`int`, defaults to 4): negative frames sampled per clip in training.
        sample_fps (`float`, defaults to 2.0), max_frames (`int`, defaults to 64), min_frames (`int`,
            defaults to 4): frame sampling of the processor (stored here so checkpoints carry them).
        max_pixels, min_pixels (`int`): per-frame pixel budget of the resize.
        max_video_tokens (`int`, defaults to 8192): total merged visual-token budget per clip.
        loss_*_weight (`float`): weights of `loss_lm` (1.0), `loss_l1` (5.0), `loss_giou` (2.0),
            `loss_presence` (1.0), `loss_relevance` (0.5), `loss_contrastive` (0.5), `loss_span`
            (frame start/end cross-entropy, 1.0) and `loss_reference` (BCE of the box head's reference-point scores
            against the memory tokens whose cell overlaps the ground-truth box, 0.0) and `loss_query` (0.0: the prompt's
            text tokens reconstructed as a bag of words from the mean bridging query, through the LLM's input
            embeddings, so that the bridge carries the query's words to the decoder; docs/method.md §3.25).
        loss_query_tokens (`str`, defaults to `"prompt"`): the bag of `loss_query`: `"prompt"` (every text token of the
            prompt) or `"distinct"` (only the tokens that are not in every prompt of the batch: the query's own words,
            such as a verb, without the template all prompts share; a batch of one keeps the whole prompt).
        contrastive_temperature (`float`, defaults to 0.07): InfoNCE temperature.
        answer_decimals (`int`, defaults to 1): decimals of the seconds in the answer text.
        answer_timestamps (`str`, defaults to `"exact"`): the seconds of the training answer: `"exact"` (the
            ground-truth span's bounds) or `"sampled"` (the first sampled frame inside the span and the next sampled
            frame after it: the bounds the sampled frames can show, so the answer is a function of the model's
            input; docs/method.md §3.3).
        max_new_tokens (`int`, defaults to 24): generation budget of the span answer.

    Example:

    ```python
    >>> from transformers import Qwen2_5_VLConfig
    >>> from bridge_stg import BridgeSTGConfig
    >>> mllm = Qwen2_5_VLConfig(text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    ...     num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
    ...     rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}),
    ...     vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64))
    >>> config = BridgeSTGConfig(mllm_config=mllm, num_bridge_queries=4, bridge_num_layers=2, decoder_layers=2,
    ...     decoder_hidden_size=64, decoder_heads=4, decoder_ffn_dim=128)
    >>> config.mllm_config.model_type
    'qwen2_5_vl'
    ```
    """

    model_type = "bridge_stg"
    sub_configs_defaults = {"mllm_config": SubConfigSpec(AutoConfig, model_type="qwen2_5_vl", optional=True)}
    keys_to_ignore_at_inference = ["hidden_states", "attentions", "layer_boxes", "layer_presence_logits", "cache"]

    mllm_config: dict | PreTrainedConfig | None = None
    bridge_token_ids: list[int] | None = None
    num_bridge_queries: int = 8
    bridge_num_layers: int = 4
    decoder_layers: int = 6
    decoder_hidden_size: int = 256
    decoder_heads: int = 8
    decoder_ffn_dim: int = 2048
    decoder_dropout: float = 0.1
    box_head: str = "reference_point"
    visual_memory: str = "vision"
    eta: bool = True
    span_source: str = "text"
    span_edges: str = "sampled"
    grounding_mode: str = "decoupled"
    query_position: str = "before_video"
    bridge_query_norm: bool = False
    fusion_layer_norm: bool = False
    decoder_init: str = "normal"
    relevance_bias_init: float = -5.0
    decoder_frame_sampling: str = "random"
    frame_evidence: bool = False
    motion_evidence: bool = False
    motion_flow: bool = False
    reference_learned_scale: bool = False
    reference_query_pos: bool = False
    reference_readout: str = "mean"
    reference_readout_training: str = "mean"
    bridge_in_decoder: bool = True
    reference_supervision: str = "mass"
    num_positive_frames: int = 16
    num_negative_frames: int = 4
    sample_fps: float = DEFAULT_SAMPLE_FPS
    max_frames: int = DEFAULT_MAX_FRAMES
    min_frames: int = DEFAULT_MIN_FRAMES
    max_pixels: int = 256 * 28 * 28
    min_pixels: int = 16 * 28 * 28
    max_video_tokens: int = 8192
    loss_lm_weight: float = 1.0
    loss_l1_weight: float = 5.0
    loss_giou_weight: float = 2.0
    loss_presence_weight: float = 1.0
    loss_relevance_weight: float = 0.5
    loss_contrastive_weight: float = 0.5
    loss_span_weight: float = 1.0
    loss_reference_weight: float = 0.0
    loss_query_weight: float = 0.0
    loss_query_tokens: str = "prompt"
    contrastive_temperature: float = 0.07
    answer_decimals: int = 1
    answer_timestamps: str = "exact"
    max_new_tokens: int = 24
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        mllm = self.mllm_config
        if isinstance(mllm, dict):
            model_type = mllm.get("model_type")
            if model_type is None:
                raise ValueError("mllm_config: a dict must carry 'model_type' (one of qwen2_5_vl, qwen3_vl)")
            if model_type not in SUPPORTED_MLLM_TYPES:
                raise ValueError(
                    f"mllm_config.model_type: unsupported backbone {model_type!r}; supported: {SUPPORTED_MLLM_TYPES}"
                )
        super().__post_init__(**kwargs)
        self.validate_bridge_config()

    # ------------------------------------------------------------------ validation
    def validate_bridge_config(self) -> None:
        """Raise `ValueError` naming the offending field for any invalid value."""
        mllm = self.mllm_config
        if mllm is not None:
            if getattr(mllm, "model_type", None) not in SUPPORTED_MLLM_TYPES:
                raise ValueError(
                    f"mllm_config.model_type: unsupported backbone {getattr(mllm, 'model_type', None)!r}; "
                    f"supported: {SUPPORTED_MLLM_TYPES}"
                )
        _check_int(self.num_bridge_queries, "num_bridge_queries", minimum=1)
        _check_int(self.bridge_num_layers, "bridge_num_layers", minimum=1)
        if mllm is not None and self.bridge_num_layers > self.num_llm_layers:
            raise ValueError(
                f"bridge_num_layers: {self.bridge_num_layers} exceeds the {self.num_llm_layers} layers of the LLM"
            )
        _check_int(self.decoder_layers, "decoder_layers", minimum=1)
        _check_int(self.decoder_hidden_size, "decoder_hidden_size", minimum=1)
        _check_int(self.decoder_heads, "decoder_heads", minimum=1)
        _check_int(self.decoder_ffn_dim, "decoder_ffn_dim", minimum=1)
        if self.decoder_hidden_size % self.decoder_heads != 0:
            raise ValueError(
                f"decoder_heads: {self.decoder_heads} does not divide decoder_hidden_size={self.decoder_hidden_size}"
            )
        if self.decoder_hidden_size % 4 != 0:
            raise ValueError(f"decoder_hidden_size: must be a multiple of 4 (2D sine embedding), got {self.decoder_hidden_size}")
        if not 0.0 <= float(self.decoder_dropout) < 1.0:
            raise ValueError(f"decoder_dropout: must be in [0, 1), got {self.decoder_dropout}")
        _check_choice(self.box_head, "box_head", ("reference_point", "mlp"))
        _check_choice(self.visual_memory, "visual_memory", ("vision", "llm"))
        _check_choice(self.span_source, "span_source", ("text", "frame"))
        _check_choice(self.span_edges, "span_edges", ("sampled", "midpoint"))
        _check_choice(self.grounding_mode, "grounding_mode", ("decoupled", "coupled"))
        _check_choice(self.query_position, "query_position", ("before_video", "after_video"))
        _check_choice(self.decoder_init, "decoder_init", ("normal", "fan_in"))
        _check_choice(self.decoder_frame_sampling, "decoder_frame_sampling", ("random", "contiguous"))
        _check_choice(self.reference_supervision, "reference_supervision", ("mass", "bce"))
        _check_choice(self.reference_readout, "reference_readout", REFERENCE_READOUTS)
        _check_choice(self.reference_readout_training, "reference_readout_training", REFERENCE_READOUTS)
        _check_choice(self.loss_query_tokens, "loss_query_tokens", ("prompt", "distinct"))
        for name in ("bridge_query_norm", "fusion_layer_norm", "frame_evidence", "motion_evidence", "motion_flow", "eta",
                     "bridge_in_decoder", "reference_learned_scale", "reference_query_pos"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: must be true or false, got {getattr(self, name)!r}")
        if self.reference_query_pos and self.box_head != "reference_point":
            raise ValueError("reference_query_pos: only the reference-point box head scores tokens (box_head='reference_point')")
        if self.motion_flow and not self.motion_evidence:
            raise ValueError("motion_flow: adds to the motion evidence's features, so it needs motion_evidence=True")
        if not (isinstance(self.relevance_bias_init, (int, float)) and math.isfinite(self.relevance_bias_init)):
            raise ValueError(f"relevance_bias_init: must be a finite number, got {self.relevance_bias_init!r}")
        _check_int(self.num_positive_frames, "num_positive_frames", minimum=1)
        _check_int(self.num_negative_frames, "num_negative_frames", minimum=0)
        if not (isinstance(self.sample_fps, (int, float)) and self.sample_fps > 0 and math.isfinite(self.sample_fps)):
            raise ValueError(f"sample_fps: must be a positive number, got {self.sample_fps!r}")
        _check_int(self.min_frames, "min_frames", minimum=2)
        _check_int(self.max_frames, "max_frames", minimum=2)
        if self.max_frames % 2 or self.max_frames < self.min_frames:
            raise ValueError(
                f"max_frames: must be even and >= min_frames={self.min_frames}, got {self.max_frames}"
            )
        _check_int(self.min_pixels, "min_pixels", minimum=1)
        _check_int(self.max_pixels, "max_pixels", minimum=1)
        if self.max_pixels < self.min_pixels:
            raise ValueError(f"max_pixels: {self.max_pixels} is smaller than min_pixels={self.min_pixels}")
        _check_int(self.max_video_tokens, "max_video_tokens", minimum=1)
        for name in LOSS_WEIGHT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: loss weights must be finite and non-negative, got {value!r}")
        if not self.contrastive_temperature > 0:
            raise ValueError(f"contrastive_temperature: must be > 0, got {self.contrastive_temperature}")
        _check_int(self.answer_decimals, "answer_decimals", minimum=0)
        _check_choice(self.answer_timestamps, "answer_timestamps", ("exact", "sampled"))
        _check_int(self.max_new_tokens, "max_new_tokens", minimum=1)
        if self.bridge_token_ids is not None:
            ids = list(self.bridge_token_ids)
            if len(ids) != self.num_bridge_queries or len(set(ids)) != len(ids):
                raise ValueError(
                    f"bridge_token_ids: expected {self.num_bridge_queries} distinct ids, got {ids}"
                )

    # ------------------------------------------------------------------ helpers
    @property
    def text_config(self) -> PreTrainedConfig:
        """The LLM (text) config of the MLLM."""
        if self.mllm_config is None:
            raise ValueError("mllm_config: not set (BridgeSTGConfig has no implicit backbone)")
        return self.mllm_config.get_text_config()

    @property
    def num_llm_layers(self) -> int:
        return int(self.text_config.num_hidden_layers)

    @property
    def llm_hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def patch_size(self) -> int:
        return int(self.mllm_config.vision_config.patch_size)

    @property
    def spatial_merge_size(self) -> int:
        return int(self.mllm_config.vision_config.spatial_merge_size)

    @property
    def temporal_patch_size(self) -> int:
        return int(self.mllm_config.vision_config.temporal_patch_size)


def _check_int(value: Any, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")


#: the reference-point box head's readouts (`reference_readout`, `reference_readout_training`): the softmax-weighted mean
#: of every token's box, or of the top token's 3x3 neighbourhood only
REFERENCE_READOUTS: tuple[str, ...] = ("mean", "peak")


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: must be one of {choices}, got {value!r}")


__all__ = ["BridgeSTGConfig", "TASKS", "TASK_IDS", "COMPONENT_LOSSES", "DEFAULT_SAMPLE_FPS", "DEFAULT_MAX_FRAMES",
           "DEFAULT_MIN_FRAMES", "REFERENCE_READOUTS"]
