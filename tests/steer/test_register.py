"""The register attribute (:mod:`steerflow.steer.register`): movie-review text against
encyclopedic text, split so that the experts and the judge never read the same sentence, and an
expert trained from its JSON-lines file (``--task expert --steer-data FILE.jsonl``)."""

from __future__ import annotations

import json
import random

import pytest

from steerflow.data import load_lm_texts, resolve_data_source
from steerflow.errors import DataError
from steerflow.steer import register

PLACES = ("the old harbour", "the north of the city", "a small town near the coast")
GOOD = ("wonderful", "charming", "moving")
BAD = ("dull", "tedious", "boring")


def _wiki(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(f" The council moved the station to {rng.choice(PLACES)} in {1900 + i} . \n"
                   for i in range(n))


def _reviews(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    rows = [(f"the film of {1900 + i} is {rng.choice(GOOD)} from the first scene to the last", 1)
            for i in range(n)]
    rows += [(f"the film of {1900 + i} is {rng.choice(BAD)} from the first scene to the last", 0)
             for i in range(n, n + n // 2)]
    rows += [("too short", 1)]  # under MIN_WORDS: dropped
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def source(tmp_path_factory, make_fake_data):
    texts = {split: _wiki(n, seed) for split, n, seed in
             (("train", 80, 0), ("valid", 30, 1), ("test", 10, 2))}
    root = make_fake_data(tmp_path_factory.mktemp("register-data"), texts=texts,
                          sst2=_reviews(40, 0), sst2_dev=_reviews(10, 1))
    return resolve_data_source(root, require=("wikitext-2", "sst2"))


def test_movie_sentences_are_balanced_and_long_enough(source):
    movie = register.movie_sentences(source, "train")
    assert len(movie) == 40  # 20 of each label: the larger class is cut
    assert sum("dull" in t or "tedious" in t or "boring" in t for t in movie) == 20
    assert all(len(t.split()) >= register.MIN_WORDS for t in movie)
    assert len(register.movie_sentences(source, "train", balanced=False)) == 60


def test_experts_and_judge_read_disjoint_halves(source):
    records = register.expert_examples(source, per_class=1000)
    expert_texts = {r["text"] for r in records}
    train, held = register.judge_pairs(source, per_class=1000)
    movie = register.movie_sentences(source, "train")
    assert {t for t in register.half(movie, 0)} <= expert_texts
    assert not expert_texts & set(register.half(movie, 1))
    wiki = register.encyclopedic_sentences(load_lm_texts(source)["train"])
    assert not expert_texts & set(register.half(wiki, 1))
    # the judge's windows come from its own halves: every window is inside one of them
    judge_movie = register.half(movie, 1)
    assert all(any(w in t for t in judge_movie) for w, y in train if y == 1)
    assert {y for _, y in train} == {0, 1} and {y for _, y in held} == {0, 1}
    assert sum(y for _, y in train) * 2 == len(train)  # as many of one class as of the other
    lo, hi = register.WINDOW_WORDS
    assert all(min(lo, 6) <= len(w.split()) <= hi for w, _ in train + held)


def test_the_register_judge_separates_the_poles(source, tmp_path):
    from steerflow.steer.judges.register import RegisterJudge, load_or_train_register

    judge = load_or_train_register(tmp_path / "judge", source, per_class=1000)
    assert isinstance(judge, RegisterJudge) and judge.name == "register-tfidf"
    assert judge.dev_accuracy >= 0.9
    again = load_or_train_register(tmp_path / "judge", source, per_class=1000)  # from the cache
    assert again.dev_accuracy == judge.dev_accuracy and isinstance(again, RegisterJudge)
    p = judge.positive_proba(["the film is charming from the first scene",
                              "The council moved the station to the old harbour in 1905 ."])
    assert p[0] > 0.5 > p[1]


def test_an_expert_learns_one_pole_of_a_jsonl_file(source, tmp_path, tokenizer):
    from types import SimpleNamespace

    from steerflow.steer.data import build_expert_source

    path = register.write_expert_data(source, tmp_path / "register.jsonl", per_class=1000)
    labels = {json.loads(line)["u"][0] for line in path.read_text().splitlines()}
    assert labels == {1.0, -1.0}
    model = SimpleNamespace(config=SimpleNamespace(block_size=32))
    for label, word in ((1, "film"), (-1, "council")):
        cfg = SimpleNamespace(block_size=None, steer_data=str(path), expert_label=label, seed=0)
        batches = build_expert_source(cfg, model, tokenizer, source)
        x, _, u = batches.train_batch(0, 16)
        assert u is None and batches.name.endswith("positive" if label > 0 else "negative")
        texts = [tokenizer.decode(row.tolist()) for row in x]
        assert all(word in t for t in texts)
    empty = tmp_path / "one_pole.jsonl"
    empty.write_text(json.dumps({"text": "a film", "u": [1]}) + "\n")
    cfg = SimpleNamespace(block_size=None, steer_data=str(empty), expert_label=-1, seed=0)
    with pytest.raises(DataError, match="no text labelled -1"):
        build_expert_source(cfg, model, tokenizer, source)
