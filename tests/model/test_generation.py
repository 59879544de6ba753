"""Generation: KV-cache decoding equals full recomputation (logits at every step, tokens under a
seed), the context-length fallback, end-of-sequence handling and the sampling rules."""

from __future__ import annotations

import pytest
import torch

from steerflow.config import SolverSpec
from steerflow.errors import InputError
from steerflow.model.decoding import sample_next

from .cache_check import CACHE_TOL, assert_cached_decoding_equals_recompute

pytestmark = pytest.mark.usefixtures("single_thread")

# float32: a cached step multiplies (1, d) rows where the recompute multiplies (T, d) blocks, so
# sums run in a different order; after a few layers the logits agree to ~1e-6


@pytest.mark.parametrize("field, solver", [
    ("mlp", "euler:4"), ("mlp", "rk4:2"),
    ("block", "euler:4"), ("block", "midpoint:3"), ("block", "rk4:2"),
    ("contractive", "euler:4"),
    (None, "euler:4"),  # the discrete baseline
])
def test_cached_logits_equal_full_recompute_at_every_step(make_tiny_model, field, solver):
    overrides = {"ode_span": None} if field is None else {"field": field}
    model = make_tiny_model(**overrides)
    assert_cached_decoding_equals_recompute(model, solver, steps=8)


@pytest.mark.parametrize("field", ["mlp", "block"])
def test_chunked_prefill_through_the_cache_equals_one_pass(make_tiny_model, field):
    """Several new tokens after cached ones: query i may see keys 0 .. past + i only."""
    model = make_tiny_model(field=field)
    spec = SolverSpec(method="midpoint", steps=2)
    idx = torch.randint(0, 512, (2, 20))
    full, _ = model(idx, u=-0.4, solver=spec)
    cache = model.new_cache(spec)
    chunks = [model(idx[:, a:b], u=-0.4, solver=spec, cache=cache)[0]
              for a, b in ((0, 6), (6, 7), (7, 15), (15, 20))]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, **CACHE_TOL)


@pytest.mark.parametrize("field", ["mlp", "block"])
def test_cached_and_uncached_sampling_give_the_same_tokens(make_tiny_model, field):
    model = make_tiny_model(field=field)
    prompt = torch.randint(0, 512, (3, 4))
    kwargs = dict(u=torch.tensor([1.0, 0.0, -1.0]), max_new_tokens=12, temperature=0.8,
                  top_k=100, top_p=0.95, seed=1234)
    with_cache = model.generate(prompt, use_cache=True, **kwargs)
    without = model.generate(prompt, use_cache=False, **kwargs)
    assert with_cache.shape == (3, 16)
    assert torch.equal(with_cache[:, :4], prompt)
    assert torch.equal(with_cache, without)
    assert torch.equal(model.generate(prompt, **kwargs), with_cache)  # the seed fixes the draw
    assert not torch.equal(model.generate(prompt, **{**kwargs, "seed": 99}), with_cache)


@pytest.mark.parametrize("field", ["mlp", "block"])
def test_generation_past_the_context_length_falls_back_to_recompute(make_tiny_model, field):
    model = make_tiny_model(field=field)  # block_size 32
    prompt = torch.randint(0, 512, (2, 28))
    out = model.generate(prompt, u=0.5, max_new_tokens=10, greedy=True)
    assert out.shape == (2, 38)
    assert torch.equal(out, model.generate(prompt, u=0.5, max_new_tokens=10, greedy=True,
                                           use_cache=False))
    # the last token is the greedy choice given the last 32 tokens
    window = out[:, -33:-1]
    assert torch.equal(out[:, -1], model(window, u=0.5)[0][:, -1].argmax(-1))


def test_block_field_generates_with_every_kind_of_solver(make_tiny_model):
    model = make_tiny_model(field="block")
    prompt = torch.randint(0, 512, (2, 5))
    fused = SolverSpec(method="rk4", steps=2)
    reference = model.generate(prompt, u=1.0, max_new_tokens=6, greedy=True, solver=fused)
    # torchdiffeq on the same grid: no per-evaluation caches, so it recomputes (same tokens)
    plain = fused.replace(fused=False)
    assert not model.can_cache(plain)
    assert torch.equal(model.generate(prompt, u=1.0, max_new_tokens=6, greedy=True, solver=plain),
                       reference)
    adaptive = SolverSpec(method="dopri5")
    assert not model.can_cache(adaptive)
    out = model.generate(prompt, u=1.0, max_new_tokens=6, greedy=True, solver=adaptive)
    assert out.shape == (2, 11)


def test_stream_yields_the_tokens_generate_returns(make_tiny_model):
    model = make_tiny_model()
    prompt = torch.randint(0, 512, (2, 3))
    streamed = list(model.stream(prompt, u=1.0, max_new_tokens=5, seed=7))
    assert [t.shape for t in streamed] == [(2,)] * 5
    out = model.generate(prompt, u=1.0, max_new_tokens=5, seed=7)
    assert torch.equal(out[:, 3:], torch.stack(streamed, dim=1))
    assert torch.equal(model.generate(prompt, max_new_tokens=0), prompt)


def test_eos_pads_finished_rows_and_stops_when_all_are_done(make_tiny_model):
    model = make_tiny_model()
    prompt = torch.randint(0, 512, (2, 4))
    free = model.generate(prompt, max_new_tokens=6, greedy=True)
    eos = int(free[0, 4])  # row 0's first greedy token
    out = model.generate(prompt, max_new_tokens=6, greedy=True, eos_id=eos)
    assert (out[0, 4:] == eos).all()  # row 0 is finished: eos from then on
    for row in range(2):  # each row: as without eos_id up to its first eos, then eos only
        generated = free[row, 4:]
        hits = (generated == eos).nonzero()
        stop = int(hits[0]) + 1 if len(hits) else len(generated)
        assert torch.equal(out[row, 4 : 4 + stop], generated[:stop])
        assert (out[row, 4 + stop :] == eos).all()
    single = model.generate(prompt[:1], max_new_tokens=6, greedy=True, eos_id=eos)
    assert single.shape == (1, 5)  # every row finished: generation stops early


# ----------------------------------------------------------------------------- sampling
def test_sampling_rules_on_a_known_distribution():
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    logits = probs.log()
    gen = torch.Generator().manual_seed(0)

    def draws(**kwargs) -> set[int]:
        return {int(sample_next(logits, generator=gen, **kwargs)) for _ in range(300)}

    assert int(sample_next(logits, greedy=True)) == 0
    assert draws(top_k=1) == {0}
    assert draws(top_k=2) == {0, 1}
    # nucleus: keep a token while the mass before it is < top_p: 0 (0.0), 1 (0.4); 2 has 0.7 before it
    assert draws(top_p=0.5) == {0, 1}
    assert draws(top_p=0.35) == {0}
    assert draws() == {0, 1, 2, 3}
    assert draws(temperature=1e-3) == {0}  # temperature → 0 is argmax


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(temperature=0.0), "temperature must be > 0"),
    (dict(temperature=float("nan")), "temperature must be > 0"),
    (dict(top_k=0), "top_k must be a positive integer"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(max_new_tokens=-1), "max_new_tokens must be a non-negative integer"),
    (dict(max_new_tokens=2.5), "max_new_tokens must be a non-negative integer"),
    (dict(u=torch.ones(3)), "u has shape"),
])
def test_bad_generation_arguments_raise_input_error(make_tiny_model, kwargs, fragment):
    model = make_tiny_model()
    with pytest.raises(InputError, match=fragment):
        model.generate(torch.zeros(2, 3, dtype=torch.long), **kwargs)


def test_bad_prompts_raise_input_error(make_tiny_model):
    model = make_tiny_model()
    with pytest.raises(InputError, match="the prompt is empty"):
        model.generate(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(InputError, match="exceeds the context length 32"):
        model.generate(torch.zeros(1, 40, dtype=torch.long))
    with pytest.raises(InputError, match="token ids must lie in"):
        model.generate(torch.full((1, 3), 600))
