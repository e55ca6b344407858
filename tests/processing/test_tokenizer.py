"""Offline tokenizers: the real Qwen2.5 BPE (ids equal tiktoken's) and the compact demo tokenizer."""

from __future__ import annotations

import pytest

from bridge_stg.processing.tokenizer import (
    QWEN2_5_SPECIAL_TOKENS,
    bridge_token_ids,
    build_compact_tokenizer,
    qwen_ranks_path,
)

TEXTS = [
    "Query: the man in the red shirt picks up the ball.\nFrom 3.0s to 7.5s.",
    "  leading spaces, TABS\tand\r\nwindows newlines\n\n\nand 1234567 digits",
    "Unicode: café naïve 日本語のテキスト 한국어 emoji 🎥🙂 — dashes… ‘quotes’",
    "def f(x):\n    return x ** 2  # it's, we'll, they've",
    'When does the query happen? Answer "From A s to B s".',
]


def test_qwen_ids_equal_tiktoken(qwen_tokenizer):
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    from bridge_stg.processing.tokenizer import QWEN2_SPLIT_PATTERN

    enc = tiktoken.Encoding("qwen", pat_str=QWEN2_SPLIT_PATTERN, mergeable_ranks=load_tiktoken_bpe(qwen_ranks_path()),
                            special_tokens={})
    for text in TEXTS:
        ids = qwen_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids == enc.encode(text), text
        assert qwen_tokenizer.decode(ids) == text


def test_qwen_special_tokens(qwen_tokenizer):
    ids = qwen_tokenizer.convert_tokens_to_ids(list(QWEN2_5_SPECIAL_TOKENS))
    assert ids == list(range(151643, 151665))
    named = dict(zip(QWEN2_5_SPECIAL_TOKENS, ids))
    assert named["<|vision_start|>"] == 151652 and named["<|vision_end|>"] == 151653
    assert named["<|video_pad|>"] == 151656 and named["<|im_end|>"] == 151645
    assert bridge_token_ids(qwen_tokenizer, 4) == [151665, 151666, 151667, 151668]
    assert len(qwen_tokenizer) == 151669
    assert qwen_tokenizer.pad_token == "<|endoftext|>" and qwen_tokenizer.pad_token_id == 151643
    assert qwen_tokenizer.model_max_length == 32768
    # special tokens inside text are single ids, never split into pieces
    ids = qwen_tokenizer("<|im_start|>user\n<|video_pad|><|video_pad|><bridge_3>", add_special_tokens=False)["input_ids"]
    assert ids == [151644, 872, 198, 151656, 151656, 151668]
    with pytest.raises(ValueError, match="bridge_4"):
        bridge_token_ids(qwen_tokenizer, 5)


def test_compact_tokenizer(compact_tokenizer):
    learned = compact_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert 256 < learned <= 1024  # specials come right after the learned vocabulary
    ids = compact_tokenizer.convert_tokens_to_ids(list(QWEN2_5_SPECIAL_TOKENS))
    assert ids == list(range(learned, learned + 22))
    assert bridge_token_ids(compact_tokenizer, 4) == list(range(learned + 22, learned + 26))
    assert len(compact_tokenizer) == learned + 26
    for text in TEXTS:  # byte-level: any text round-trips
        assert compact_tokenizer.decode(compact_tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    # the corpus makes the prompt vocabulary compact
    # (digits are single pre-tokens under the Qwen2 split pattern: 13 is the minimum, as with Qwen itself)
    assert len(compact_tokenizer("From 3.0s to 7.5s.", add_special_tokens=False)["input_ids"]) == 13
    assert len(compact_tokenizer(" the red square", add_special_tokens=False)["input_ids"]) == 3


def test_compact_tokenizer_deterministic(compact_tokenizer):
    again = build_compact_tokenizer(num_bridge_queries=4)
    assert again.get_vocab() == compact_tokenizer.get_vocab()
    custom = build_compact_tokenizer(num_bridge_queries=2, vocab_size=300, corpus=["abc abc abd"] * 5)
    assert custom.convert_tokens_to_ids("<|endoftext|>") <= 300
    with pytest.raises(ValueError, match="vocab_size"):
        build_compact_tokenizer(vocab_size=100)
