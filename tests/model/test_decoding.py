"""Decoding from a contrast (guidance over u, DExperts' rule): γ = 0 is plain sampling at u = 0
draw for draw, the contrast is the formula on the base's nucleus, guided KV-cache decoding equals
full recompute, guidance moves the samples, bad input is refused."""

from __future__ import annotations

import math

import pytest
import torch

from steerflow.config import SolverSpec
from steerflow.errors import InputError
from steerflow.model.decoding import (IncrementalDecoder, contrast_logits, filter_logits,
                                      sample_contrast, sample_next)

pytestmark = pytest.mark.usefixtures("single_thread")


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
