"""WikiText-2 loading and the token cache: content, reuse, invalidation, damage detection."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from steerflow.data.source import DataSource
from steerflow.data.tokenizer import Tokenizer, train_bpe
from steerflow.data.wikitext import (
    SPLITS,
    load_lm_texts,
    prepare_lm_data,
    split_for_encoding,
    token_dtype,
)
from steerflow.errors import DataError


@pytest.fixture(scope="module")
def bpe(make_lines) -> Tokenizer:
    return train_bpe(make_lines(300, seed=0), 320)


def _texts(source: DataSource) -> dict[str, str]:
    return {
        s: (source.root / "wikitext-2" / f"{s}.txt").read_text(encoding="utf-8") for s in SPLITS
    }


def test_load_lm_texts_reads_the_three_splits(tiny_source: DataSource) -> None:
    assert load_lm_texts(tiny_source) == _texts(tiny_source)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "is missing"),
        (b"", "is empty"),
        (b" \n \n", "is empty"),
        (b"ok \xff\xfe bad", "not valid UTF-8"),
    ],
)
def test_bad_split_files_are_named(
    tiny_source: DataSource, content: bytes | None, match: str
) -> None:
    path = tiny_source.root / "wikitext-2" / "valid.txt"
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=match) as info:
        load_lm_texts(tiny_source)
    assert str(path) in str(info.value)


def test_manifest_content(tiny_source: DataSource, bpe: Tokenizer, tmp_path: Path) -> None:
    prepared = prepare_lm_data(tiny_source, bpe, tmp_path / "cache", progress=False)
    manifest = prepared.manifest
    assert manifest == json.loads(
        (prepared.cache_dir / "manifest.json").read_text(encoding="utf-8")
    )
    assert manifest["source"] == tiny_source.describe()
    assert manifest["tokenizer"] == {
        "name": "bpe:320",
        "sha256": bpe.content_hash(),
        "vocab_size": 320,
    }
    assert manifest["dtype"] == "uint16" and manifest["steerflow_version"]
    for split, text in _texts(tiny_source).items():
        entry, ids = manifest["splits"][split], bpe.encode(text)
        bin_path = prepared.cache_dir / f"{split}.bin"
        assert prepared.splits[split].dtype == np.uint16
        assert prepared.splits[split].tolist() == ids
        assert entry["tokens"] == len(ids) and entry["words"] == len(text.split())
        assert (
            entry["tokens_per_word"]
            == prepared.tokens_per_word[split]
            == len(ids) / len(text.split())
        )
        assert entry["sha256"] == hashlib.sha256(bin_path.read_bytes()).hexdigest()


def test_tokens_per_word_hand_count(make_layout, gpt2: Tokenizer, tmp_path: Path) -> None:
    # GPT-2: " Hello"," world","\n"," The"," cat"," sat"," .","\n" = 8 tokens for 6 words.
    text = " Hello world\n The cat sat .\n"
    root = make_layout(tmp_path / "d", {s: text for s in SPLITS})
    prepared = prepare_lm_data(DataSource("local", root), gpt2, tmp_path / "cache", progress=False)
    assert prepared.splits["train"].tolist() == [18435, 995, 198, 383, 3797, 3332, 764, 198]
    assert prepared.manifest["splits"]["valid"]["words"] == 6
    assert prepared.tokens_per_word == {s: 8 / 6 for s in SPLITS}


def _bin_stats(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.glob("*.bin"))}


def test_second_call_reuses_the_cache(
    tiny_source: DataSource, bpe: Tokenizer, tmp_path: Path, caplog
) -> None:
    first = prepare_lm_data(tiny_source, bpe, tmp_path, progress=False)
    before = _bin_stats(first.cache_dir)
    with caplog.at_level(logging.INFO, logger="steerflow.data.wikitext"):
        second = prepare_lm_data(tiny_source, bpe, tmp_path, progress=False)
    assert second.cache_dir == first.cache_dir
    assert _bin_stats(second.cache_dir) == before  # same files: nothing was re-encoded
    assert "Reusing token cache" in caplog.text
    assert second.manifest == first.manifest


def test_changed_tokenizer_gets_a_new_cache(
    tiny_source: DataSource, bpe: Tokenizer, make_lines, tmp_path: Path
) -> None:
    first = prepare_lm_data(tiny_source, bpe, tmp_path, progress=False)
    other = train_bpe(make_lines(300, seed=0), 300)
    second = prepare_lm_data(tiny_source, other, tmp_path, progress=False)
    assert second.cache_dir != first.cache_dir
    assert second.manifest["tokenizer"]["sha256"] == other.content_hash()
    assert second.splits["valid"].tolist() == other.encode(_texts(tiny_source)["valid"])
    assert (first.cache_dir / "manifest.json").is_file()  # the old cache is left alone


def test_changed_data_gets_a_new_cache(
    tiny_source: DataSource, bpe: Tokenizer, tmp_path: Path
) -> None:
    first = prepare_lm_data(tiny_source, bpe, tmp_path, progress=False)
    (tiny_source.root / "wikitext-2" / "test.txt").write_text(
        " a new test split \n", encoding="utf-8"
    )
    second = prepare_lm_data(tiny_source, bpe, tmp_path, progress=False)
    assert second.cache_dir != first.cache_dir
    assert second.splits["test"].tolist() == bpe.encode(" a new test split \n")


def _damage_truncate(folder: Path) -> None:
    path = folder / "train.bin"
    path.write_bytes(path.read_bytes()[:-6])


def _damage_flip(folder: Path) -> None:
    path = folder / "valid.bin"
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


def _damage_manifest(folder: Path) -> None:
    (folder / "manifest.json").write_text('{"format": 1, "spl', encoding="utf-8")


def _damage_manifest_entry(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["splits"]["valid"] = {"file": "valid.bin"}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def _damage_delete(folder: Path) -> None:
    (folder / "test.bin").unlink()


@pytest.mark.parametrize(
    "damage",
    [_damage_truncate, _damage_flip, _damage_manifest, _damage_manifest_entry, _damage_delete],
)
def test_damaged_cache_is_rebuilt(
    tiny_source: DataSource, bpe: Tokenizer, tmp_path: Path, caplog, damage
) -> None:
    first = prepare_lm_data(tiny_source, bpe, tmp_path, progress=False)
    expected = {s: a.tolist() for s, a in first.splits.items()}
    damage(first.cache_dir)
    with caplog.at_level(logging.WARNING, logger="steerflow.data.wikitext"):
        second = prepare_lm_data(tiny_source, bpe, tmp_path, progress=False)
    assert "Rebuilding token cache" in caplog.text
    assert {s: a.tolist() for s, a in second.splits.items()} == expected
    assert second.manifest == first.manifest


def test_interrupted_rebuild_is_not_trusted(
    tiny_source: DataSource, bpe: Tokenizer, tmp_path: Path
) -> None:
    # A rebuild killed after writing some .bin files must leave no manifest and no temp files,
    # so the next call rebuilds instead of trusting a half-written cache.
    class DiesOnSecondBatch(Tokenizer):
        calls = 0

        def encode_batch(self, texts):
            DiesOnSecondBatch.calls += 1
            if DiesOnSecondBatch.calls == 2:
                raise KeyboardInterrupt
            return super().encode_batch(texts)

    first = prepare_lm_data(tiny_source, bpe, tmp_path, progress=False)
    expected = {s: a.tolist() for s, a in first.splits.items()}
    _damage_truncate(first.cache_dir)
    with pytest.raises(KeyboardInterrupt):
        prepare_lm_data(
            tiny_source, DiesOnSecondBatch(bpe.backend, bpe.name), tmp_path, progress=False
        )
    assert DiesOnSecondBatch.calls == 2
    assert not (first.cache_dir / "manifest.json").exists()
    assert not list(first.cache_dir.glob(".*.tmp"))
    again = prepare_lm_data(tiny_source, bpe, tmp_path, progress=False)
    assert {s: a.tolist() for s, a in again.splits.items()} == expected


def test_token_dtype() -> None:
    assert token_dtype(50257) == np.uint16
    assert token_dtype(65536) == np.uint16  # ids 0..65535 fit
    assert token_dtype(65537) == np.uint32


def test_split_for_encoding_cuts_only_between_words() -> None:
    text = " alpha beta\n\n  gamma  delta\tepsilon " * 200
    pieces = split_for_encoding(text, chunk_chars=50)
    assert "".join(pieces) == text
    assert len(pieces) > 50
    for left, right in zip(pieces[:-1], pieces[1:], strict=True):
        assert not left[-1].isspace() and right[0] == " " and not right[1].isspace()


def test_chunked_encoding_equals_whole_text(
    gpt2: Tokenizer, bpe: Tokenizer, real_root: Path
) -> None:
    # The fast path (parallel chunks) must give exactly the ids of one whole-text encode call.
    text = (real_root / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")[:200_000]
    text += "  double  spaces\n\n\n it's  <|endoftext|> 日本語 🙂 \t end"
    pieces = split_for_encoding(text, chunk_chars=500)
    assert len(pieces) > 300
    for tokenizer in (gpt2, bpe):
        chunked = [i for ids in tokenizer.encode_batch(pieces) for i in ids]
        assert chunked == tokenizer.encode(text)


def test_gpt2_valid_split_counts(
    make_layout, gpt2: Tokenizer, real_root: Path, tmp_path: Path
) -> None:
    valid = (real_root / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")
    small = " tiny split \n"
    root = make_layout(tmp_path / "d", {"train": small, "valid": valid, "test": small})
    prepared = prepare_lm_data(DataSource("local", root), gpt2, tmp_path / "cache", progress=False)
    entry = prepared.manifest["splits"]["valid"]
    # SOURCES.md: 217,646 tokens counting one <eos> per line over 3,760 lines -> 213,886 words.
    assert entry["words"] == 217_646 - 3_760
    assert gpt2.decode(prepared.splits["valid"]) == valid
    assert 1.1 < prepared.tokens_per_word["valid"] < 1.35  # GPT-2 BPE on tokenized English text
