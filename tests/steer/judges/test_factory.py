"""``make_judge``: every spec and its argument errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerflow.errors import DataError, InputError
from steerflow.steer.judges.factory import make_judge
from steerflow.steer.judges.pretrained import VaderJudge
from steerflow.steer.judges.sst2 import SST2ClassifierJudge, TfidfConfig

from .conftest import FakePipeline, synthetic_pairs


# ------------------------------------------------------------------ make_judge


def test_make_judge_specs(small_judge: SST2ClassifierJudge, tmp_path: Path) -> None:
    assert isinstance(make_judge("vader"), VaderJudge)
    small_judge.save(tmp_path / "j")
    loaded = make_judge("sst2-tfidf", path=tmp_path / "j")
    assert isinstance(loaded, SST2ClassifierJudge) and loaded.name == "sst2-tfidf"
    hf = make_judge("hf:local/model", pipeline_fn=FakePipeline(("POSITIVE", "NEGATIVE")))
    assert hf.is_positive(["good"]).tolist() == [True]
    trained = make_judge(
        "sst2-tfidf",
        train_pairs=synthetic_pairs(100, 0),
        dev_pairs=synthetic_pairs(20, 1),
        config=TfidfConfig(char_ngrams=None),
        cache_dir=tmp_path / "cache",
    )
    assert (tmp_path / "cache" / "manifest.json").is_file()
    assert len(trained.blocks) == 1


@pytest.mark.parametrize(
    "spec, kw, match",
    [
        ("roberta", {}, "vader, sst2-tfidf, minilm, hf:"),
        ("hf:", {}, "valid specs"),
        ("vader", {"threshold": 0.1}, "unknown arguments"),
        ("sst2-tfidf", {}, "train_pairs"),
        ("sst2-tfidf", {"path": "x", "seed": 1}, "unknown arguments"),
        ("hf:m", {"device": 0}, "unknown arguments"),
    ],
)
def test_make_judge_errors(spec: str, kw: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        make_judge(spec, **kw)


def test_load_missing_directory_names_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="manifest.json"):
        make_judge("sst2-tfidf", path=tmp_path / "nowhere")
