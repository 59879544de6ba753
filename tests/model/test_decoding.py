"""Sampling and decoding from a contrast.

Sampling: the draws follow the renormalised top-k / nucleus distribution (chi-square on many seeded
draws against a float64 reference), a seed fixes them, each row draws with its own uniform.
Contrast (guidance over u, DExperts' rule): γ = 0 is plain sampling at u = 0 draw for draw, the
contrast is the formula on the base's nucleus, guided KV-cache decoding equals full recompute,
guidance moves the samples, bad input is refused."""

from __future__ import annotations

import math

import pytest
import torch

from steerflow.config import SolverSpec
from steerflow.errors import InputError, SolverError
from steerflow.model.decoding import (IncrementalDecoder, contrast_logits, filter_logits,
                                      sample_contrast, sample_next)

pytestmark = pytest.mark.usefixtures("single_thread")

#: draws per distribution: one call on this many copies of the row (each row is its own draw)
DRAWS = 100_000
#: chi-square p-value below which the draws are not from the expected distribution; the draws are
#: seeded, so the test is deterministic, and a right sampler fails it with probability 1e-6
P_VALUE = 1e-6


def nucleus_reference(logits: torch.Tensor, temperature: float = 1.0, top_k=None,
                      top_p=None) -> torch.Tensor:
    """The sampling distribution ``(V,)`` of one row in float64, written plainly: softmax at the
    temperature, the k likeliest, then the smallest prefix of the renormalised distribution sorted
    by probability whose mass before its last token is below ``top_p`` (ties with that token kept),
    renormalised."""
    probs = (logits.double() / temperature).softmax(-1)
    order = probs.argsort(descending=True)
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order[: top_k or len(probs)]] = True
    probs = torch.where(keep, probs, 0.0) / probs[keep].sum()
    if top_p is not None:
        ranked = probs[order]
        before = ranked.cumsum(0) - ranked
        least = ranked[(before < top_p).nonzero().max()]  # the least likely token kept
        probs = torch.where(probs >= least, probs, 0.0) / probs[probs >= least].sum()
    return probs


def assert_drawn_from(tokens: torch.Tensor, probs: torch.Tensor) -> None:
    """Tokens of probability 0 never appear; the counts of the others pass a chi-square test."""
    from scipy.stats import chi2  # scikit-learn's dependency

    counts = torch.bincount(tokens, minlength=len(probs)).double()
    assert counts[probs == 0].sum() == 0
    live = probs > 0
    if int(live.sum()) == 1:
        return  # one token: every draw is it
    expected = len(tokens) * probs[live]
    statistic = float(((counts[live] - expected) ** 2 / expected).sum())
    assert chi2.sf(statistic, int(live.sum()) - 1) > P_VALUE, (counts, expected)


PROBS = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05, 0.0])  # the last token: logit -inf


@pytest.mark.parametrize("kwargs", [
    dict(), dict(top_p=1.0), dict(top_k=6),  # the whole vocabulary
    dict(top_p=0.75),  # mass before each token: 0, .4, .7, .85: three tokens
    dict(top_k=4),
    dict(top_k=3, top_p=0.8),  # top-p alone keeps 3; on top-k's renormalised 3 it keeps 2
    dict(temperature=2.0), dict(temperature=0.5, top_p=0.9), dict(temperature=3.0, top_k=5),
])
def test_draws_follow_the_renormalised_nucleus(kwargs):
    logits = PROBS.log()
    expected = nucleus_reference(logits, **kwargs)
    rows = logits.expand(DRAWS, -1)  # (N, V): N independent draws in one call
    tokens = sample_next(rows, generator=torch.Generator().manual_seed(0), **kwargs)
    assert_drawn_from(tokens, expected)


def test_tokens_tied_with_the_least_kept_one_stay_in_the_nucleus():
    logits = torch.tensor([0.3, 0.2, 0.2, 0.2, 0.1]).log()  # mass before: 0, .3, .5: keeps 2
    expected = torch.tensor([0.3, 0.2, 0.2, 0.2, 0.0]) / 0.9  # ...and the two tied with the 2nd
    tokens = sample_next(logits.expand(DRAWS, -1), top_p=0.45,
                         generator=torch.Generator().manual_seed(1))
    assert_drawn_from(tokens, expected)
    torch.testing.assert_close(nucleus_reference(logits, top_p=0.45), expected.double())


@pytest.mark.parametrize("kwargs", [
    dict(top_p=0.3), dict(top_k=1),
    dict(top_k=2, top_p=0.55),  # top-p alone keeps 2; top-k's renormalised .57 is >= .55
])
def test_a_nucleus_of_one_token_is_greedy(kwargs):
    tokens = sample_next(PROBS.log().expand(200, -1), generator=torch.Generator().manual_seed(2),
                         **kwargs)
    assert (tokens == 0).all()
    logits = torch.randn(200, 40, generator=torch.Generator().manual_seed(3))  # (B, V)
    greedy = sample_next(logits, greedy=True)
    for cut in (dict(top_p=1e-6), dict(top_k=1)):
        assert torch.equal(sample_next(logits, generator=torch.Generator().manual_seed(4), **cut),
                           greedy)


def test_contrast_draws_follow_the_contrast_on_the_base_nucleus():
    gen = torch.Generator().manual_seed(4)
    base, plus, minus = (torch.randn(1, 12, generator=gen) for _ in range(3))
    expected = contrast_logits(base, plus, minus, 1.5, 0.8, None, 0.8).double().softmax(-1)[0]
    tokens = sample_contrast(base.expand(DRAWS, -1), plus.expand(DRAWS, -1),
                             minus.expand(DRAWS, -1), 1.5, temperature=0.8, top_p=0.8,
                             generator=torch.Generator().manual_seed(5))
    assert_drawn_from(tokens, expected)


def test_rows_are_independent_draws():
    """Rows 2i and 2i + 1 of one call: the pair's joint frequencies are the product of the
    marginals."""
    probs = torch.tensor([0.5, 0.3, 0.2])
    tokens = sample_next(probs.log().expand(DRAWS, -1),
                         generator=torch.Generator().manual_seed(6)).view(-1, 2)  # (N/2, 2)
    assert_drawn_from(tokens[:, 0] * 3 + tokens[:, 1], (probs[:, None] * probs).flatten().double())


def test_a_seed_fixes_the_draws_and_each_row_draws_alone():
    """The same seed gives the same tokens; a row's token does not depend on the other rows
    (row b takes the b-th uniform of the step), so row 0 of a batch is the draw of that row
    alone."""
    gen = torch.Generator().manual_seed(7)
    logits, others = torch.randn(4, 30, generator=gen), torch.randn(3, 30, generator=gen)
    plus, minus = torch.randn(4, 30, generator=gen), torch.randn(4, 30, generator=gen)
    for seed in range(30):
        def draw(rows, **kw):
            return sample_next(rows, generator=torch.Generator().manual_seed(seed), **kw)

        batch = draw(logits, top_p=0.9)
        assert torch.equal(batch, draw(logits, top_p=0.9))
        assert batch[0] == draw(logits[:1], top_p=0.9)[0]
        assert batch[0] == draw(torch.cat([logits[:1], others]), top_p=0.9)[0]
        contrast = [sample_contrast(logits, plus, minus, 2.0, top_p=0.9,
                                    generator=torch.Generator().manual_seed(seed))
                    for _ in range(2)]
        assert torch.equal(*contrast)


def test_a_row_with_nothing_to_sample_is_refused():
    logits = torch.zeros(2, 5)
    logits[1, 2] = math.nan
    with pytest.raises(SolverError, match="no token to sample from"):
        sample_next(logits, top_p=0.9)
    with pytest.raises(SolverError, match="no token to sample from"):
        sample_next(torch.full((1, 5), -math.inf))


def test_weight_zero_samples_exactly_like_the_base():
    gen = torch.Generator().manual_seed(0)
    base, plus, minus = (torch.randn(4, 50, generator=gen) for _ in range(3))
    for kw in (dict(), dict(top_p=0.8), dict(top_k=5, temperature=0.7)):
        a = [sample_next(base, generator=torch.Generator().manual_seed(s), **kw) for s in range(20)]
        b = [sample_contrast(base, plus, minus, 0.0, generator=torch.Generator().manual_seed(s),
                             **kw) for s in range(20)]
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_contrast_is_the_formula_on_the_base_nucleus():
    gen = torch.Generator().manual_seed(1)
    base, plus, minus = (torch.randn(3, 40, generator=gen) for _ in range(3))
    out = contrast_logits(base, plus, minus, 2.5, temperature=0.5, top_p=0.7)
    kept = torch.isfinite(filter_logits(base, 0.5, None, 0.7))
    assert torch.equal(torch.isfinite(out), kept)  # the nucleus is the base's, not the mixture's
    expected = (base + 2.5 * (plus - minus)) / 0.5
    torch.testing.assert_close(out[kept], expected[kept])


def test_contrast_can_pick_a_token_the_base_alone_would_not():
    base = torch.tensor([[2.0, 1.9, -5.0]])
    plus, minus = torch.tensor([[0.0, 3.0, 9.0]]), torch.zeros(1, 3)
    assert int(sample_contrast(base, plus, minus, 1.0, greedy=True)) == 1
    # token 2 is outside the base's nucleus: no weight brings it back
    assert int(sample_contrast(base, plus, minus, 100.0, top_p=0.9,
                               generator=torch.Generator().manual_seed(0))) == 1


def test_guidance_zero_is_plain_sampling_at_u_zero(make_tiny_model):
    model = make_tiny_model()
    idx = torch.randint(0, 512, (3, 4), generator=torch.Generator().manual_seed(2))
    plain = model.generate(idx, u=0.0, max_new_tokens=12, seed=5, top_p=0.9)
    for u in (1.0, -2.0):
        assert torch.equal(model.generate(idx, u=u, max_new_tokens=12, seed=5, top_p=0.9,
                                          guidance=0), plain)


@pytest.mark.parametrize("field, solver", [("mlp", "euler:4"), ("block", "rk4:2")])
def test_guided_cached_decoding_equals_full_recompute(make_tiny_model, field, solver):
    model = make_tiny_model(field=field)
    spec = SolverSpec.parse(solver)
    idx = torch.randint(0, 512, (2, 5), generator=torch.Generator().manual_seed(3))
    kw = dict(u=1.0, max_new_tokens=10, greedy=True, solver=spec, guidance=3.0)
    assert torch.equal(model.generate(idx, use_cache=True, **kw),
                       model.generate(idx, use_cache=False, **kw))
    # and the batched decoder's logits match a recompute at every step, at all three controls
    u = torch.tensor([[0.0], [0.0], [1.0], [1.0], [-1.0], [-1.0]])
    seq = idx.repeat(3, 1)
    cached, full = IncrementalDecoder(model, u, spec), IncrementalDecoder(model, u, spec, False)
    with torch.no_grad():
        for _ in range(6):
            a, b = cached(seq), full(seq)
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # float32, other sum order
            seq = torch.cat([seq, b.argmax(-1, keepdim=True)], dim=1)


def test_guidance_moves_the_samples_where_u_matters(make_tiny_model):
    model = make_tiny_model()
    idx = torch.randint(0, 512, (4, 4), generator=torch.Generator().manual_seed(4))
    plus = model.generate(idx, u=1.0, max_new_tokens=8, seed=0, guidance=20.0)
    minus = model.generate(idx, u=-1.0, max_new_tokens=8, seed=0, guidance=20.0)
    assert not torch.equal(plus, minus)


@pytest.mark.parametrize("guidance, message", [
    (math.nan, "guidance must be a finite number >= 0"), (-1.0, "guidance"),
    (math.inf, "guidance"), (True, "guidance")])
def test_bad_guidance_is_refused(make_tiny_model, guidance, message):
    with pytest.raises(InputError, match=message):
        make_tiny_model().generate(torch.zeros(1, 2, dtype=torch.long), guidance=guidance)


def test_guidance_on_a_discrete_model_is_refused(make_tiny_model):
    with pytest.raises(InputError, match="discrete baseline"):
        make_tiny_model(ode_span=None).generate(torch.zeros(1, 2, dtype=torch.long), guidance=1.0)
