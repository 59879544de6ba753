"""Fuzzing with hypothesis: any config dict and any sampling parameters either work or raise a
steerflow error (a ValueError subclass with a message) — never another exception type."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steerflow.config import ModelConfig, SolverSpec
from steerflow.errors import ConfigError, InputError
from steerflow.model.gpt import SteerFlowGPT

anything = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.lists(st.integers(-2, 8), max_size=3),
)
config_keys = st.sampled_from(
    [f.name for f in ModelConfig.__dataclass_fields__.values()] + ["n_layers", "width", "typo"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(config_keys, anything, max_size=4))
def test_any_config_dict_is_accepted_or_rejected_with_config_error(overrides):
    base = ModelConfig.from_name("tiny").to_dict()
    base.update(overrides)
    try:
        config = ModelConfig.from_dict(base)
    except ConfigError as exc:
        assert str(exc)  # a message that names the problem
        return
    # an accepted config must be internally consistent and round-trip through JSON form
    assert config.n_embd % config.n_head == 0
    assert ModelConfig.from_dict(config.to_dict()) == config


solver_values = st.fixed_dictionaries({}, optional={
    "method": st.sampled_from(["euler", "rk4", "dopri5", "adaptive_heun", "rk45", ""]),
    "steps": st.one_of(st.none(), st.integers(-3, 10)),
    "rtol": st.floats(allow_nan=True, allow_infinity=True),
    "atol": st.floats(-1, 1),
    "max_nfe": st.integers(-2, 100),
    "adjoint": st.one_of(st.booleans(), st.integers(0, 2)),
})


@settings(max_examples=300, deadline=None)
@given(solver_values)
def test_any_solver_spec_is_accepted_or_rejected_with_config_error(values):
    try:
        spec = SolverSpec(**values)
    except ConfigError as exc:
        assert str(exc)
        return
    assert spec.rtol > 0 and spec.atol > 0 and math.isfinite(spec.rtol)
    assert not spec.is_fixed_step or spec.steps >= 1


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return SteerFlowGPT(ModelConfig.from_name("tiny")).eval()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    temperature=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 3)),
    top_k=st.one_of(st.none(), st.integers(-2, 600)),
    top_p=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    max_new_tokens=st.integers(-2, 4),
    u=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
)
def test_any_generation_parameters_work_or_raise_input_error(tiny_model, temperature, top_k, top_p,
                                                             max_new_tokens, u):
    prompt = torch.tensor([[1, 2, 3]])
    try:
        out = tiny_model.generate(prompt, u=u, max_new_tokens=max_new_tokens,
                                  temperature=temperature, top_k=top_k, top_p=top_p, seed=0)
    except InputError as exc:
        assert str(exc)
        return
    assert out.shape == (1, 3 + max_new_tokens)
    assert int(out.min()) >= 0 and int(out.max()) < tiny_model.config.vocab_size


@pytest.mark.parametrize("temperature", [1e-30, 1e-40, 1e-286, 5e-324])
def test_tiny_temperatures_sample_the_argmax_instead_of_nan(temperature):
    """Found by the fuzz above: logits / 1e-286 overflowed to ±inf (and 1e-286 is 0 in float32),
    softmax gave NaN and torch.multinomial raised. As T → 0+ sampling tends to argmax; with the
    row maximum shifted to 0 first the limit is reached exactly, top-k/top-p or not."""
    from steerflow.model.decoding import sample_next

    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 10  # (B, V)
    for top_k, top_p in ((None, None), (5, None), (None, 0.5)):
        token = sample_next(logits, temperature, top_k, top_p,
                            generator=torch.Generator().manual_seed(1))
        assert torch.equal(token, logits.argmax(dim=-1))


@pytest.mark.parametrize("top_p", [1e-30, 1e-46, 2.3e-183])
def test_tiny_top_p_keeps_the_likeliest_token(top_p):
    """Found by the fuzz above: top_p = 2.3e-183 is 0 in float32, so the nucleus rule dropped
    every token (mass before it >= 0) and multinomial raised. The nucleus always holds the
    likeliest token, so a tiny top_p samples the argmax."""
    from steerflow.model.decoding import sample_next

    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))  # (B, V)
    token = sample_next(logits, 1.0, None, top_p, generator=torch.Generator().manual_seed(1))
    assert torch.equal(token, logits.argmax(dim=-1))



@pytest.mark.parametrize("u", [-1.2755637458321824e24, 9.566727553309413e23, 1e4 + 1])
def test_a_huge_control_is_refused_not_overflowed(tiny_model, u):
    """Found by the fuzz above: u = ±1e24 overflowed the field (a SolverError for non-finite
    states, or NaN logits that torch.multinomial refused); |u| ≤ U_MAX is enforced up front."""
    with pytest.raises(InputError, match=r"\|u\| must be at most"):
        tiny_model.generate(torch.tensor([[1, 2, 3]]), u=u, max_new_tokens=1, seed=0)
    assert tiny_model.generate(torch.tensor([[1, 2, 3]]), u=1e4, max_new_tokens=1, seed=0).shape == (1, 4)
