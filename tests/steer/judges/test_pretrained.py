"""The judges without training: VADER, and the HF pipeline wrapper with an injected fake."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from steerflow.errors import InputError
from steerflow.steer.judges.pretrained import HFPipelineJudge, VaderJudge

from .conftest import CLEAR_NEGATIVE, CLEAR_POSITIVE, FakePipeline


# ------------------------------------------------------------------ VADER


def test_vader_clear_cases_and_threshold() -> None:
    judge = VaderJudge()
    texts = [CLEAR_POSITIVE, CLEAR_NEGATIVE, "the table is made of wood"]
    compound = judge.compound(texts)
    assert compound[0] > 0.5 and compound[1] < -0.5 and abs(compound[2]) < 0.05
    assert judge.is_positive(texts).tolist() == [True, False, False]
    np.testing.assert_array_equal(judge.positive_proba(texts), (compound + 1) / 2)


def test_vader_sees_through_wikitext_markers() -> None:
    judge = VaderJudge()
    raw = judge.compound(["a truly wonderful @-@ film <unk> , great fun"])
    assert raw[0] == judge.compound(["a truly wonderful-film , great fun"])[0]
    assert raw[0] > 0.5


def test_judges_reject_bare_string_and_accept_empty() -> None:
    judge = VaderJudge()
    with pytest.raises(InputError, match="single string"):
        judge.positive_proba(CLEAR_POSITIVE)
    assert judge.positive_proba([]).shape == (0,)
    assert judge.is_positive([]).dtype == bool


# ------------------------------------------------------------------ Hugging Face pipeline judge


@pytest.mark.parametrize(
    "labels, expected",
    [
        (("POSITIVE", "NEGATIVE"), [0.9, 0.1]),
        (("NEGATIVE", "POSITIVE"), [0.1, 0.9]),
        (("LABEL_1", "LABEL_0"), [0.9, 0.1]),
        (("LABEL_0", "LABEL_1"), [0.1, 0.9]),
        (("pos", "neutral", "neg"), [0.9 / 0.95, 0.1 / 0.55]),
    ],
)
def test_hf_judge_label_mapping(labels: tuple[str, ...], expected: list[float]) -> None:
    fake = FakePipeline(labels)
    judge = HFPipelineJudge("some/model", pipeline_fn=fake)
    assert fake.calls == [("sentiment-analysis", "some/model")]
    assert judge.name == "hf:some/model"
    np.testing.assert_allclose(
        judge.positive_proba(["good film", "bad film"]), expected, rtol=1e-12
    )
    assert judge.is_positive(["good film", "bad film"]).tolist() == [e >= 0.5 for e in expected]


def test_hf_judge_ambiguous_labels_need_explicit_names() -> None:
    fake = FakePipeline(("LABEL_0", "LABEL_1", "LABEL_2"))
    with pytest.raises(InputError, match="positive_label"):
        HFPipelineJudge("m", pipeline_fn=fake).positive_proba(["good"])
    judge = HFPipelineJudge(
        "m", pipeline_fn=fake, positive_label="label_2", negative_label="LABEL_0"
    )
    np.testing.assert_allclose(judge.positive_proba(["good"]), [0.05 / 0.95])


@pytest.mark.skipif(
    importlib.util.find_spec("transformers") is not None, reason="transformers is installed"
)
def test_hf_judge_without_transformers_says_how_to_install() -> None:
    with pytest.raises(InputError, match="pip install transformers"):
        HFPipelineJudge("distilbert-base-uncased-finetuned-sst-2-english")
