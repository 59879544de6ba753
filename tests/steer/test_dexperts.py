"""DExperts (Liu et al. 2021, Eq. 1): α = 0 and direction 0 are plain sampling from the base draw
for draw, an expert equal to its anti-expert changes nothing at any α, cached decoding equals
recompute, the contrast is Eq. 1 step by step, and mismatched tokenizers or bad α are refused."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from steerflow.config import ModelConfig, SolverSpec
from steerflow.data.tokenizer import train_bpe
from steerflow.errors import InputError
from steerflow.model.decoding import contrast_logits
from steerflow.model.gpt import SteerFlowGPT
from steerflow.steer.dexperts import DExperts

pytestmark = pytest.mark.usefixtures("single_thread")


def _model(seed: int, **overrides) -> SteerFlowGPT:
    torch.manual_seed(seed)
    return SteerFlowGPT(ModelConfig.from_name("tiny", **overrides)).eval()


@pytest.fixture(scope="module")
def trio():
    """A hybrid base, a hybrid expert and a discrete anti-expert with the tiny vocabulary."""
    return _model(0), _model(1), _model(2, ode_span=None)


def _prompt(seed: int, shape=(3, 4)) -> torch.Tensor:
    return torch.randint(0, 512, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kw", [dict(), dict(top_p=0.8), dict(top_k=7, temperature=0.6),
                                dict(greedy=True)])
def test_alpha_zero_and_direction_zero_sample_the_base_draw_for_draw(trio, kw):
    base, expert, anti = trio
    steer = DExperts(base, expert, anti)
    idx = _prompt(1)
    for seed in range(3):
        plain = base.generate(idx, None, 10, seed=seed, **kw)
        assert torch.equal(steer.generate(idx, 1, 10, alpha=0.0, seed=seed, **kw), plain)
        assert torch.equal(steer.generate(idx, 0, 10, alpha=3.0, seed=seed, **kw), plain)


def test_equal_expert_and_anti_expert_leave_the_base_unchanged(trio):
    base, expert, _ = trio
    steer = DExperts(base, expert, copy.deepcopy(expert))
    idx = _prompt(2)
    for alpha in (0.5, 4.0, 50.0):
        for direction in (1, -1):
            assert torch.equal(steer.generate(idx, direction, 12, alpha=alpha, seed=3, top_p=0.9),
                               base.generate(idx, None, 12, seed=3, top_p=0.9))


def test_each_step_samples_equation_one_and_the_direction_swaps_the_pair(trio):
    base, expert, anti = trio
    steer = DExperts(base, expert, anti)
    idx = _prompt(3, (2, 5))
    for direction, (plus, minus) in ((1, (expert, anti)), (-1, (anti, expert))):
        out = steer.generate(idx, direction, 6, alpha=2.0, greedy=True)
        with torch.no_grad():
            for t in range(idx.shape[1], out.shape[1]):
                seq = out[:, :t]
                z = [m(seq)[0][:, -1] for m in (base, plus, minus)]
                expected = contrast_logits(*z, 2.0).argmax(-1)
                assert torch.equal(out[:, t], expected)
    assert not torch.equal(steer.generate(idx, 1, 8, alpha=20.0, greedy=True),
                           steer.generate(idx, -1, 8, alpha=20.0, greedy=True))


@pytest.mark.parametrize("field, solver", [("mlp", "euler:4"), ("block", "rk4:2")])
def test_cached_decoding_equals_full_recompute(field, solver):
    steer = DExperts(_model(0, field=field), _model(1, field=field), _model(2, ode_span=None))
    kw = dict(alpha=1.5, greedy=True, solver=SolverSpec.parse(solver))
    idx = _prompt(4, (2, 5))
    assert torch.equal(steer.generate(idx, 1, 10, use_cache=True, **kw),
                       steer.generate(idx, 1, 10, use_cache=False, **kw))


def test_eos_rows_stay_finished(trio):
    steer = DExperts(*trio)
    idx = _prompt(5, (4, 3))
    first = steer.generate(idx, 1, 1, alpha=1.0, greedy=True)[:, -1]
    eos = int(first[0])
    out = steer.generate(idx, 1, 6, alpha=1.0, greedy=True, eos_id=eos)
    assert bool((out[0, idx.shape[1]:] == eos).all())


def test_a_tokenizer_mismatch_names_both_checkpoints(tmp_path):
    texts = ["the movie was good .", "the film was bad .", "a story of a ship"] * 20
    tok_a, tok_b = train_bpe(texts, 300), train_bpe(texts + ["zebra quartz jumps"] * 20, 300)
    assert tok_a.content_hash() != tok_b.content_hash()
    paths = []
    for name, tok, vocab in (("base", tok_a, 300), ("pos", tok_a, 300), ("neg", tok_b, 300),
                             ("wide", tok_a, 512)):
        model = _model(0, vocab_size=vocab)
        model.save_pretrained(tmp_path / name, tok)
        paths.append(tmp_path / name)
    with pytest.raises(InputError, match=f"{paths[2]} and {paths[0]} have different tokenizers"):
        DExperts.load(paths[0], paths[1], paths[2])
    with pytest.raises(InputError, match=f"{paths[3]} has a vocabulary of 512 ids but {paths[0]}"):
        DExperts.load(paths[0], paths[3], paths[1])
    assert DExperts.load(paths[0], paths[1], paths[1]).tokenizer.content_hash() == \
        tok_a.content_hash()


@pytest.mark.parametrize("alpha", [math.nan, -0.5, math.inf, True, "1"])
def test_bad_alpha_is_refused(trio, alpha):
    with pytest.raises(InputError, match="alpha must be a finite number >= 0"):
        DExperts(*trio).generate(_prompt(6), 1, 4, alpha=alpha)


@pytest.mark.parametrize("direction", [2, 0.5, True])
def test_bad_direction_is_refused(trio, direction):
    with pytest.raises(InputError, match="direction must be -1, 0 or 1"):
        DExperts(*trio).generate(_prompt(6), direction, 4, alpha=1.0)
