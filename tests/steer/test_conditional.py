"""Conditional pretraining data: each row is a WikiText window at u = 0 or a labelled sentence
at its label (u dropped with the given rate); the global batch is a function of (seed, step) and
ranks split it."""

from __future__ import annotations

import pytest
import torch

from steerflow.data import DataSource, prepare_lm_data
from steerflow.errors import ConfigError
from steerflow.steer.conditional import ConditionalLMSource
from steerflow.steer.data import SteerBatchSource, sst2_examples
from steerflow.train.tasks import LMBatchSource

BLOCK = 24


@pytest.fixture(scope="module")
def sources(fake_data_dir, tokenizer, tmp_path_factory):
    data = DataSource("local", fake_data_dir)
    prepared = prepare_lm_data(data, tokenizer, tmp_path_factory.mktemp("cache"), progress=False)
    lm = LMBatchSource(prepared, BLOCK, seed=3)
    labelled = SteerBatchSource(sst2_examples(data, "train"), sst2_examples(data, "dev"),
                                tokenizer, BLOCK, seed=3, name="sst2")
    return lm, labelled


def test_rows_are_general_text_at_zero_or_labelled_text_at_its_label(sources):
    lm, labelled = sources
    mix = ConditionalLMSource(lm, labelled, share=0.5, u_dropout=0.25, seed=3)
    seen_labelled = seen_dropped = 0
    for step in range(6):
        x, y, u = mix.train_batch(step, 16)
        xg, yg, _ = lm.train_batch(step, 16)
        xl, yl, ul = labelled.train_batch(step, 16)
        is_lab, dropped = mix.row_kinds(step, 16)
        assert x.shape == y.shape == (16, BLOCK) and u.shape == (16, 1)
        for row in range(16):
            if is_lab[row]:
                n = xl.shape[1]
                assert torch.equal(x[row, :n], xl[row]) and torch.equal(y[row, :n], yl[row])
                assert bool((y[row, n:] == -1).all())  # padding has no targets
                assert float(u[row]) == (0.0 if dropped[row] else float(ul[row]))
            else:
                assert torch.equal(x[row], xg[row]) and torch.equal(y[row], yg[row])
                assert float(u[row]) == 0.0
        seen_labelled += int(is_lab.sum())
        seen_dropped += int(dropped.sum())
    assert 25 <= seen_labelled <= 71 and 0 < seen_dropped < seen_labelled  # 96 rows at 0.5, 0.25


def test_a_batch_is_a_function_of_the_step_and_ranks_split_it(sources):
    mix = ConditionalLMSource(*sources, share=0.4, u_dropout=0.1, seed=7)
    whole = mix.train_batch(5, 8)
    again = ConditionalLMSource(*sources, share=0.4, u_dropout=0.1, seed=7).train_batch(5, 8)
    parts = [mix.train_batch(5, 8, rank, 2) for rank in range(2)]
    for i in range(3):
        assert torch.equal(whole[i], again[i])
        assert torch.equal(torch.cat([p[i] for p in parts]), whole[i])


def test_share_zero_is_plain_pretraining_and_evaluation_is_the_general_text(sources):
    lm, labelled = sources
    mix = ConditionalLMSource(lm, labelled, share=0.0, u_dropout=0.0, seed=3)
    x, y, u = mix.train_batch(2, 8)
    xg, yg, _ = lm.train_batch(2, 8)
    assert torch.equal(x, xg) and torch.equal(y, yg) and not u.any()
    for (a, b, ua), (c, d, _) in zip(mix.eval_batches("valid", 4), lm.eval_batches("valid", 4)):
        assert torch.equal(a, c) and torch.equal(b, d) and ua is None


@pytest.mark.parametrize("share, dropout", [(-0.1, 0.0), (1.5, 0.0), (0.5, float("nan"))])
def test_bad_rates_are_refused(sources, share, dropout):
    with pytest.raises(ConfigError, match="must be in \\[0, 1\\]"):
        ConditionalLMSource(*sources, share=share, u_dropout=dropout, seed=0)
