"""The SST-2 TF-IDF classifier: training, persistence and caching on synthetic data, dev accuracy
and agreement with VADER on real SST-2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from steerflow.errors import DataError
from steerflow.steer.judges.agreement import cohens_kappa, judge_agreement
from steerflow.steer.judges.pretrained import VaderJudge
from steerflow.steer.judges.sst2 import SST2ClassifierJudge, load_or_train

from .conftest import CLEAR_NEGATIVE, CLEAR_POSITIVE, synthetic_pairs


# ------------------------------------------------- SST-2 classifier on synthetic data


def test_small_classifier_learns_polarity(small_judge: SST2ClassifierJudge) -> None:
    assert small_judge.dev_accuracy == 1.0
    proba = small_judge.positive_proba(
        ["a brilliant and charming story", "a tedious and awful plot"]
    )
    assert proba[0] > 0.8 and proba[1] < 0.2
    assert small_judge.meta["n_train"] == 300 and small_judge.meta["n_dev"] == 100


def test_save_load_gives_identical_probabilities(
    small_judge: SST2ClassifierJudge, tmp_path: Path
) -> None:
    texts = [text for text, _ in synthetic_pairs(50, 2)] + ["never seen words", ""]
    small_judge.save(tmp_path / "judge")
    loaded = SST2ClassifierJudge.load(tmp_path / "judge")
    assert loaded.positive_proba(texts).tobytes() == small_judge.positive_proba(texts).tobytes()
    assert loaded.dev_accuracy == small_judge.dev_accuracy
    assert loaded.config == small_judge.config
    assert loaded.meta == small_judge.meta
    assert not any(p.suffix == ".pkl" for p in (tmp_path / "judge").iterdir())


@pytest.fixture()
def saved_dir(small_judge: SST2ClassifierJudge, tmp_path: Path) -> Path:
    small_judge.save(tmp_path / "judge")
    return tmp_path / "judge"


def test_load_rejects_flipped_byte(saved_dir: Path) -> None:
    data = bytearray((saved_dir / "coef.npy").read_bytes())
    data[-3] ^= 0xFF
    (saved_dir / "coef.npy").write_bytes(bytes(data))
    with pytest.raises(DataError, match="coef.npy"):
        SST2ClassifierJudge.load(saved_dir)


@pytest.mark.parametrize("name", ["terms_0.json", "idf_1.npy", "manifest.json"])
def test_load_rejects_missing_file(saved_dir: Path, name: str) -> None:
    (saved_dir / name).unlink()
    with pytest.raises(DataError, match=name):
        SST2ClassifierJudge.load(saved_dir)


def test_load_rejects_garbled_manifest(saved_dir: Path) -> None:
    (saved_dir / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="manifest.json"):
        SST2ClassifierJudge.load(saved_dir)


def test_load_requires_files_listed_in_manifest(saved_dir: Path) -> None:
    manifest = json.loads((saved_dir / "manifest.json").read_text())
    del manifest["files"]["coef.npy"]
    (saved_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="coef.npy is not listed"):
        SST2ClassifierJudge.load(saved_dir)


def test_load_validates_arrays_even_with_matching_checksum(saved_dir: Path) -> None:
    """A wrong dtype is caught by validation, not only by the checksum."""
    np.save(saved_dir / "idf_0.npy", np.load(saved_dir / "idf_0.npy").astype(np.float32))
    manifest = json.loads((saved_dir / "manifest.json").read_text())
    import hashlib

    manifest["files"]["idf_0.npy"] = hashlib.sha256(
        (saved_dir / "idf_0.npy").read_bytes()
    ).hexdigest()
    (saved_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="idf_0.npy.*float64"):
        SST2ClassifierJudge.load(saved_dir)


def test_load_or_train_reuses_cache_only_for_same_data(tmp_path: Path) -> None:
    train, dev = synthetic_pairs(200, 5), synthetic_pairs(50, 6)
    first = load_or_train(tmp_path, lambda: train, lambda: dev)
    stamp = (tmp_path / "manifest.json").stat().st_mtime_ns
    second = load_or_train(tmp_path, lambda: train, lambda: dev)
    assert (
        tmp_path / "manifest.json"
    ).stat().st_mtime_ns == stamp  # not rewritten: loaded from cache
    texts = [t for t, _ in dev]
    assert second.positive_proba(texts).tobytes() == first.positive_proba(texts).tobytes()

    changed = train[:-1] + [(train[-1][0], 1 - train[-1][1])]
    third = load_or_train(tmp_path, lambda: changed, lambda: dev)
    assert third.meta["data_sha256"] != first.meta["data_sha256"]
    assert SST2ClassifierJudge.load(tmp_path).meta["data_sha256"] == third.meta["data_sha256"]


def test_load_or_train_retrains_corrupt_cache(tmp_path: Path) -> None:
    train, dev = synthetic_pairs(200, 5), synthetic_pairs(50, 6)
    load_or_train(tmp_path, lambda: train, lambda: dev)
    (tmp_path / "coef.npy").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="coef.npy"):
        judge = load_or_train(tmp_path, lambda: train, lambda: dev)
    assert SST2ClassifierJudge.load(tmp_path).positive_proba(["good"]) == judge.positive_proba(
        ["good"]
    )


@pytest.mark.parametrize(
    "pairs, match",
    [
        ([("fine", 2)], "labels must be 0"),
        ([("fine",)], "pair"),
        ([], "empty"),
        ([("good", 1), ("great", 1)], "both labels"),
    ],
)
def test_train_rejects_bad_pairs(pairs: list, match: str) -> None:
    with pytest.raises(DataError, match=match):
        SST2ClassifierJudge.train(pairs, [("good", 1)])


# ------------------------------------------------------------------ SST-2 classifier on real data


def test_sst2_classifier_dev_accuracy(sst2_judge: tuple[SST2ClassifierJudge, float]) -> None:
    judge, seconds = sst2_judge
    assert judge.dev_accuracy >= 0.80
    assert judge.meta["n_train"] == 67349 and judge.meta["n_dev"] == 872
    assert seconds < 120  # budget is < 30 s on 2 idle cores; this bound only catches blow-ups


def test_both_judges_agree_on_clear_cases(sst2_judge: tuple[SST2ClassifierJudge, float]) -> None:
    texts = [CLEAR_POSITIVE, CLEAR_NEGATIVE]
    for judge in (VaderJudge(), sst2_judge[0]):
        assert judge.is_positive(texts).tolist() == [True, False], judge.name


def test_classifier_handles_generated_text(sst2_judge: tuple[SST2ClassifierJudge, float]) -> None:
    judge = sst2_judge[0]
    generated = [
        "The film was a beautiful , heart @-@ warming <unk> story that I loved .",
        "The film was a boring , badly acted <unk> waste of time .",
    ]
    assert judge.is_positive(generated).tolist() == [True, False]


def test_judges_agree_beyond_chance_on_sst2_dev(
    sst2: tuple[list, list], sst2_judge: tuple[SST2ClassifierJudge, float]
) -> None:
    texts = [t for t, _ in sst2[1]]
    vader, clf = VaderJudge().is_positive(texts), sst2_judge[0].is_positive(texts)
    assert judge_agreement(vader, clf) > 0.6
    assert cohens_kappa(vader, clf) > 0.2
