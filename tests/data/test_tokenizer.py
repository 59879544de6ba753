"""Tokenizers: GPT-2 ids equal OpenAI's, byte-level round trips, deterministic BPE training."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from steerflow.data.source import DataSource
from steerflow.data.tokenizer import (
    GPT2_VOCAB_SIZE,
    Tokenizer,
    build_tokenizer,
    parse_spec,
    train_bpe,
)
from steerflow.errors import DataError

# Reference ids from OpenAI's GPT-2 encoder (identical in tiktoken's "gpt2" encoding).
GPT2_KNOWN_IDS = {
    "Hello world": [15496, 995],
    " good": [922],
    " bad": [2089],
    " The movie was good": [383, 3807, 373, 922],
    "<|endoftext|>": [50256],
    "\n": [198],
}
TRICKY = [
    "",
    "  two  spaces\n\n\nnewlines\t tab",
    "Ünïcödé, 日本語, emoji 🙂 and a zero-width\u200bjoiner",
    "it's they're we've I'm you'll he'd",
    "<|endoftext|> between <|endoftext|>docs",
    " @-@ <unk> = = Section = = \n",
]


@pytest.fixture(scope="module")
def small_bpe(make_lines) -> Tokenizer:
    return train_bpe(make_lines(400, seed=3), 300)


@pytest.mark.parametrize(("text", "ids"), GPT2_KNOWN_IDS.items())
def test_gpt2_known_ids(gpt2: Tokenizer, text: str, ids: list[int]) -> None:
    assert gpt2.encode(text) == ids
    assert gpt2.decode(ids) == text


def test_gpt2_shape(gpt2: Tokenizer) -> None:
    assert gpt2.name == "gpt2"
    assert gpt2.vocab_size == GPT2_VOCAB_SIZE == 50257
    assert gpt2.eos_id == 50256


def test_gpt2_no_prefix_space(gpt2: Tokenizer) -> None:
    # "good" without a leading space is a different token than " good" (GPT-2 adds no prefix).
    assert gpt2.encode("good") == [11274]
    assert gpt2.encode("good") != gpt2.encode(" good")


def test_gpt2_round_trip_on_wikitext_lines(gpt2: Tokenizer, real_root: Path) -> None:
    lines = (real_root / "wikitext-2" / "valid.txt").read_text(encoding="utf-8").splitlines(True)
    sample = lines[:2000]
    encoded = gpt2.encode_batch(sample)
    assert [gpt2.decode(ids) for ids in encoded] == sample
    assert encoded[:50] == [gpt2.encode(line) for line in sample[:50]]  # batch == one by one


@pytest.mark.parametrize("text", TRICKY)
def test_gpt2_round_trip_tricky_strings(gpt2: Tokenizer, text: str) -> None:
    assert gpt2.decode(gpt2.encode(text)) == text


@pytest.mark.parametrize("text", TRICKY)
def test_bpe_round_trip_tricky_strings(small_bpe: Tokenizer, text: str) -> None:
    assert small_bpe.decode(small_bpe.encode(text)) == text


def test_gpt2_missing_files_are_named(tiny_root: Path) -> None:
    (tiny_root / "gpt2-tokenizer" / "vocab.bpe").unlink()
    with pytest.raises(DataError, match="vocab.bpe"):
        build_tokenizer("gpt2", DataSource("local", tiny_root))


def test_gpt2_wrong_vocabulary_rejected(tiny_root: Path) -> None:
    # The tiny layout's encoder.json has no entries; that is not GPT-2's vocabulary.
    with pytest.raises(DataError, match="encoder.json"):
        build_tokenizer("gpt2", DataSource("local", tiny_root))


def test_bpe_trained_is_deterministic_and_round_trips(make_lines, small_bpe: Tokenizer) -> None:
    again = train_bpe(make_lines(400, seed=3), 300)
    assert again.to_json() == small_bpe.to_json()
    assert small_bpe.name == "bpe:300"
    assert 257 < small_bpe.vocab_size <= 300
    assert small_bpe.encode("<|endoftext|>") == [small_bpe.eos_id]
    held_out = make_lines(50, seed=99)
    assert [small_bpe.decode(small_bpe.encode(t)) for t in held_out] == held_out


def test_bpe_with_room_merges_every_corpus_word(make_lines, caplog) -> None:
    # The generated corpus has ~40 distinct words; with room for 400 tokens every " word" becomes
    # one token, and training stops early (fewer than 400 tokens), which is logged.
    with caplog.at_level(logging.WARNING, logger="steerflow.data.tokenizer"):
        tokenizer = train_bpe(make_lines(400, seed=3), 400)
    assert tokenizer.vocab_size < 400
    assert "only supports" in caplog.text
    for word in ("movie", "good", "bad", "the", "boring"):
        assert len(tokenizer.encode(" " + word)) == 1, word
    # Unseen text falls back to byte tokens, so it still round-trips (no <unk>).
    assert tokenizer.decode(tokenizer.encode("zyx")) == "zyx"


def test_build_bpe_uses_the_train_split(tiny_source: DataSource) -> None:
    tokenizer = build_tokenizer("bpe:280", tiny_source)
    train = (tiny_source.root / "wikitext-2" / "train.txt").read_text(encoding="utf-8")
    expected = train_bpe(train.splitlines(keepends=True), 280)
    assert tokenizer.to_json() == expected.to_json()


def test_bpe_4096_on_wikitext_has_single_token_sentiment_words(real_source: DataSource) -> None:
    tokenizer = build_tokenizer("bpe:4096", real_source)
    assert tokenizer.vocab_size == 4096
    assert len(tokenizer.encode(" good")) == 1
    assert len(tokenizer.encode(" bad")) == 1


@pytest.mark.parametrize(
    "spec", ["gpt3", "bpe", "bpe:", "bpe:abc", "bpe:-5", "BPE:4096", "bpe:4096 "]
)
def test_bad_spec_lists_valid_forms(spec: str, tiny_source: DataSource) -> None:
    with pytest.raises(DataError, match="valid forms: 'gpt2' or 'bpe:N'"):
        build_tokenizer(spec, tiny_source)


def test_bpe_size_lower_bound() -> None:
    assert parse_spec("bpe:260") == 260
    assert parse_spec("gpt2") is None
    with pytest.raises(DataError, match="too small"):
        parse_spec("bpe:259")


def test_save_load_round_trip(small_bpe: Tokenizer, tmp_path: Path) -> None:
    small_bpe.save(tmp_path / "tok")
    meta = json.loads((tmp_path / "tok" / "tokenizer_meta.json").read_text(encoding="utf-8"))
    assert meta["name"] == "bpe:300"
    loaded = Tokenizer.load(tmp_path / "tok")
    assert loaded.name == small_bpe.name
    assert loaded.content_hash() == small_bpe.content_hash()
    assert loaded.eos_id == small_bpe.eos_id
    assert loaded.encode(TRICKY[2]) == small_bpe.encode(TRICKY[2])


def test_load_missing_files(small_bpe: Tokenizer, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="tokenizer_meta.json"):
        Tokenizer.load(tmp_path / "nothing")
    small_bpe.save(tmp_path / "tok")
    (tmp_path / "tok" / "tokenizer.json").unlink()
    with pytest.raises(DataError, match="tokenizer.json"):
        Tokenizer.load(tmp_path / "tok")


@pytest.mark.parametrize(
    ("filename", "content", "match"),
    [
        ("tokenizer.json", "{not json", "tokenizer.json is corrupt"),
        ("tokenizer_meta.json", "{not json", "tokenizer_meta.json is corrupt"),
        ("tokenizer_meta.json", '{"vocab_size": 3}', "no string field 'name'"),
    ],
)
def test_load_corrupt_files(small_bpe: Tokenizer, tmp_path: Path, filename, content, match) -> None:
    small_bpe.save(tmp_path / "tok")
    (tmp_path / "tok" / filename).write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=match):
        Tokenizer.load(tmp_path / "tok")


def test_load_detects_a_swapped_tokenizer(small_bpe: Tokenizer, make_lines, tmp_path: Path) -> None:
    small_bpe.save(tmp_path / "tok")
    other = train_bpe(make_lines(100, seed=5), 270)
    (tmp_path / "tok" / "tokenizer.json").write_text(other.to_json(), encoding="utf-8")
    with pytest.raises(DataError, match="does not match"):
        Tokenizer.load(tmp_path / "tok")
