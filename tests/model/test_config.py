"""ModelConfig / SolverSpec: presets, exact parameter counts, validation and (de)serialisation."""

from __future__ import annotations

import json

import pytest
import torch

from steerflow.config import PRESETS, ModelConfig, SolverSpec
from steerflow.errors import ConfigError
from steerflow.model.gpt import SteerFlowGPT

V, T, L, D = 50257, 128, 6, 256  # paper 1: vocab, context, layers, width


def _meta_model(config: ModelConfig) -> SteerFlowGPT:
    with torch.device("meta"):  # shapes only, no memory
        return SteerFlowGPT(config)


def _block_params(d: int) -> int:
    """One pre-LN GPT block, counted from its layer shapes."""
    ln = 2 * d  # LayerNorm weight + bias
    attn = (d * 3 * d + 3 * d) + (d * d + d)  # c_attn, c_proj
    mlp = (d * 4 * d + 4 * d) + (4 * d * d + d)  # c_fc, c_proj
    return 2 * ln + attn + mlp


def _mlp_ode_params(d: int, hidden: int, c: int) -> int:
    """Paper 1's ODE block: LN(d), Linear(d + τ + c → hidden), Linear(hidden → d), scalar α."""
    return 2 * d + ((d + 1 + c) * hidden + hidden) + (hidden * d + d) + 1


def _common(v: int, t: int, d: int) -> int:
    return v * d + t * d + 2 * d + d * v  # wte, wpe, ln_f, untied lm_head


def test_paper_baseline_has_exactly_30_503_424_parameters():
    model = _meta_model(ModelConfig.from_name("paper").as_baseline())
    assert _common(V, T, D) + L * _block_params(D) == 30_503_424  # the hand count itself
    assert model.num_params() == 30_503_424


def test_paper_hybrid_parameter_count_matches_hand_count():
    config = ModelConfig.from_name("paper")
    model = _meta_model(config)
    hand = _common(V, T, D) + 4 * _block_params(D) + _mlp_ode_params(D, 256, 1)
    print(f"paper hybrid: {model.num_params():,} parameters (hand count {hand:,}; "
          f"the paper reports 29,781,249 for its own field)")
    assert hand == 29_056_513
    assert model.num_params() == hand
    counts = model.param_counts()
    assert counts.ode == _mlp_ode_params(D, 256, 1)
    assert counts.total == counts.embeddings + counts.head + counts.discrete_blocks + counts.ode + 2 * D
    assert list(counts.per_layer) == ["block 0", "block 1", "block 4", "block 5", "ode"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_counts_are_consistent(name):
    config = ModelConfig.from_name(name)
    model = _meta_model(config)
    d, v = config.n_embd, config.vocab_size
    n_blocks = config.n_layer - (config.ode_span[1] - config.ode_span[0])
    hand = (_common(v, config.block_size, d) + n_blocks * _block_params(d)
            + _mlp_ode_params(d, config.field_hidden, config.control_dim))
    assert model.num_params() == hand


def test_tied_head_is_counted_once():
    untied = _meta_model(ModelConfig.from_name("tiny"))
    tied = _meta_model(ModelConfig.from_name("tiny", tie_weights=True))
    assert untied.num_params() - tied.num_params() == 512 * 32  # one (V, d) matrix fewer
    assert tied.param_counts().head == 0


def test_other_fields_and_options_change_counts_as_their_shapes_say():
    d, hidden = 32, 48  # hidden != d so that a swapped shape would show

    def ode(**overrides) -> int:
        config = ModelConfig.from_name("tiny", field_hidden=hidden, **overrides)
        return _meta_model(config).param_counts().ode

    base = ode()
    assert base == _mlp_ode_params(d, hidden, 1)
    assert ode(alpha_shape="channel") - base == d - 1  # α becomes a (d,) vector
    assert ode(injection="add") - base == d * 1 - hidden * 1  # u_proj (c → d) replaces fc_in's u column
    assert ode(control_dim=3) - base == 2 * hidden  # two more u columns
    assert ode(time_conditioning=False) - base == -hidden  # no τ column
    assert ode(field="contractive") == base - 2 * d  # no LayerNorm
    # block field: LN₁, attention (as in a block), LN₂, then the controlled MLP and α
    attn = (d * 3 * d + 3 * d) + (d * d + d)
    assert ode(field="block") == base + attn + 2 * d


def test_layer_layout_names_the_replaced_layers():
    assert ModelConfig.from_name("paper").layer_layout() == [
        "block 0", "block 1", "ode (replaces 2-3, field=mlp)", "block 4", "block 5"]
    assert ModelConfig.from_name("tiny").as_baseline().layer_layout() == [
        "block 0", "block 1", "block 2", "block 3"]


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("overrides, fragment", [
    (dict(n_head=3), "n_head=3 must divide n_embd=32"),
    (dict(ode_span=(2, 5)), "ode_span"),
    (dict(ode_span=(2, 2)), "ode_span"),
    (dict(ode_span=(-1, 2)), "ode_span"),
    (dict(alpha_init=0.0), "alpha_init"),
    (dict(alpha_init=-0.1), "alpha_init"),
    (dict(alpha_init=float("inf")), "alpha_init"),
    (dict(n_layer="6"), "n_layer"),
    (dict(n_layer=True), "n_layer"),
    (dict(n_layer=6.0), "n_layer"),
    (dict(n_embd=0), "n_embd"),
    (dict(dropout=1.0), "dropout"),
    (dict(field="attention"), "field"),
    (dict(injection="mul"), "injection"),
    (dict(alpha_shape="matrix"), "alpha_shape"),
    (dict(contractive_gamma=0.0), "contractive_gamma"),
    (dict(train_solver="euler"), "train_solver"),
])
def test_bad_model_config_raises_config_error_naming_the_field(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        ModelConfig.from_name("tiny", **overrides)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def test_unknown_config_key_is_an_error_listing_valid_keys():
    data = ModelConfig.from_name("tiny").to_dict()
    data["n_layers"] = 4
    with pytest.raises(ConfigError, match=r"unknown ModelConfig key\(s\) \['n_layers'\].*n_layer"):
        ModelConfig.from_dict(data)
    with pytest.raises(ConfigError, match="unknown config 'huge'"):
        ModelConfig.from_name("huge")
    with pytest.raises(ConfigError, match="unknown SolverSpec key"):
        SolverSpec.from_dict({"method": "euler", "step": 4})


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(method="rk45"), "unknown solver method 'rk45'"),
    (dict(method="dopri5", rtol=-1e-3), "rtol"),
    (dict(method="dopri5", atol=0.0), "atol"),
    (dict(method="dopri5", rtol=float("nan")), "rtol"),
    (dict(method="euler", steps=0), "steps >= 1"),
    (dict(method="euler", steps=None), "steps >= 1"),
    (dict(method="euler", steps=2.5), "steps"),
    (dict(max_nfe=0), "max_nfe"),
    (dict(adjoint=1), "adjoint"),
    (dict(method="per-token", steps=0), "steps >= 1"),
    (dict(method="per-token", adjoint=True), "no adjoint"),
])
def test_bad_solver_spec_raises_config_error(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        SolverSpec(**kwargs)


def test_contractive_field_refuses_gelu():
    with pytest.raises(ConfigError, match="1-Lipschitz"):
        _meta_model(ModelConfig.from_name("tiny", field="contractive", field_activation="gelu"))


# ----------------------------------------------------------------------------- (de)serialisation
def test_config_json_round_trip(tmp_path):
    config = ModelConfig.from_name("tiny", field="block", control_dim=2, alpha_shape="channel",
                                   eval_solver=SolverSpec.parse("dopri5:1e-5"))
    config.to_json(tmp_path / "c.json")
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["ode_span"] == [1, 3] and data["eval_solver"]["method"] == "dopri5"
    back = ModelConfig.from_json(tmp_path / "c.json")
    assert back == config
    assert isinstance(back.eval_solver, SolverSpec) and back.ode_span == (1, 3)


def test_config_json_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="missing.json: config file not found"):
        ModelConfig.from_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        ModelConfig.from_json(tmp_path / "bad.json")


@pytest.mark.parametrize("text, method, steps, rtol, atol", [
    ("euler:4", "euler", 4, 1e-3, 1e-4),
    ("rk4:8", "rk4", 8, 1e-3, 1e-4),
    ("midpoint", "midpoint", 4, 1e-3, 1e-4),
    ("dopri5", "dopri5", None, 1e-3, 1e-4),
    ("dopri5:1e-6", "dopri5", None, 1e-6, 1e-7),
    ("per-token:1e-2", "per-token", 4, 1e-2, 1e-3),
])
def test_solver_spec_parse(text, method, steps, rtol, atol):
    spec = SolverSpec.parse(text)
    assert (spec.method, spec.steps) == (method, steps)
    assert spec.rtol == pytest.approx(rtol) and spec.atol == pytest.approx(atol)


def test_solver_spec_parse_errors_and_overrides():
    with pytest.raises(ConfigError, match="cannot parse solver spec 'euler:x'"):
        SolverSpec.parse("euler:x")
    with pytest.raises(ConfigError, match="unknown solver method"):
        SolverSpec.parse("heun:3")
    assert SolverSpec.parse("euler:2", adjoint=True).describe() == "euler, 2 steps, adjoint"
    assert SolverSpec(method="rk4", steps=3).evals_per_step == 4
