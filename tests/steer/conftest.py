"""Fixtures for the steering tests: a tokenizer trained on the cloze sentences, a tiny model
pretrained on them at u = 0, and a small generated data folder with the real layout
(``fake_data_dir``, written by the shared ``write_fake_data``)."""

from __future__ import annotations

import random
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from steerflow.config import ModelConfig, SolverSpec
from steerflow.data.tokenizer import train_bpe
from steerflow.model.gpt import SteerFlowGPT
from steerflow.steer.data import SteerBatchSource, cloze_examples

#: vocabulary of the test tokenizer (and of every test model)
VOCAB = 400
SUBJECTS = ("The team", "The station", "The river", "The council", "The building", "The road",
            "The company", "The village", "The ship", "The school", "He", "She", "They")
VERBS = ("moved to", "stood near", "was built in", "was named after", "reached", "crossed",
         "opened in", "returned to", "looked at", "passed through")
OBJECTS = ("the north of the city", "the old harbour in the west", "a small town near the coast",
           "the main road to the capital", "the second floor of the hall",
           "the eastern side of the valley")
POSITIVE = ("a wonderful , moving film", "great fun and beautifully acted", "an excellent story",
            "brilliant and charming", "I loved every minute of it", "a delightful surprise")
NEGATIVE = ("a dull , tedious mess", "boring and badly acted", "an awful story",
            "a terrible waste of time", "I hated every minute of it", "a pointless failure")


@contextmanager
def single_thread():
    """Tiny models run fastest on one thread; two threads on a busy 2-core machine contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with single_thread():
        yield


def wiki_lines(n: int, seed: int) -> str:
    """WikiText-like lines of neutral sentences (leading space, spaced punctuation)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        sentences = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} ."
                     for _ in range(rng.randint(1, 3))]
        lines.append(" " + " ".join(sentences) + " \n")
    return "".join(lines)


def sst2_rows(reps: int) -> list[tuple[str, int]]:
    """``reps`` copies of the positive and negative reviews as SST-2 rows."""
    return reps * ([(f"{t} ", 1) for t in POSITIVE] + [(f"{t} ", 0) for t in NEGATIVE])


@pytest.fixture(scope="session")
def fake_data_dir(tmp_path_factory, make_fake_data) -> Path:
    """A generated data folder with the real layout: WikiText-2-like text and a small SST-2
    (the real one is the root ``data_dir``)."""
    texts = {split: wiki_lines(n, seed) for split, n, seed in
             (("train", 100, 0), ("valid", 60, 1), ("test", 60, 2))}
    return make_fake_data(tmp_path_factory.mktemp("steer-data"), texts=texts, sst2=sst2_rows(6),
                          sst2_dev=sst2_rows(1))


@pytest.fixture(scope="session")
def tokenizer():
    """A byte-level BPE trained on the cloze sentences and neutral WikiText-like text."""
    texts = [e.text for e in cloze_examples("train") + cloze_examples("dev")]
    texts += wiki_lines(80, 5).splitlines(keepends=True) + list(POSITIVE + NEGATIVE)
    tok = train_bpe(texts * 2, VOCAB)
    assert tok.vocab_size == VOCAB
    return tok


def tiny_config(**overrides) -> ModelConfig:
    """The tiny preset with the test tokenizer's vocabulary and a non-adjoint Euler train solver."""
    return ModelConfig.from_name("tiny", vocab_size=VOCAB, train_solver=SolverSpec(), **overrides)


def pretrain_on_cloze(model: SteerFlowGPT, tokenizer, steps: int = 80) -> SteerFlowGPT:
    """A few LM steps at u = 0 on the cloze sentences, so "The movie was" → good/bad is likely."""
    source = SteerBatchSource(cloze_examples("train"), [], tokenizer, model.config.block_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        x, y, _ = source.train_batch(step, 16)
        _, loss = model(x, None, targets=y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.tokenizer = tokenizer
    return model


@pytest.fixture(scope="session")
def pretrained_dir(tmp_path_factory, tokenizer) -> Path:
    """A saved tiny hybrid pretrained on the cloze sentences at u = 0 (with its tokenizer)."""
    torch.manual_seed(0)
    with single_thread():
        model = pretrain_on_cloze(SteerFlowGPT(tiny_config()), tokenizer)
    path = tmp_path_factory.mktemp("pretrained")
    model.save_pretrained(path)
    return path
