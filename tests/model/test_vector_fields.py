"""Vector fields F_θ(H, τ, u): recomputed by hand from their weights, the block field as a pre-LN
block, additive injection and per-channel α, and the contractive field's log-norm bound."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import jvp

from steerflow.config import ModelConfig, SolverSpec
from steerflow.model.gpt import SteerFlowGPT
from steerflow.model.layers import Block
from steerflow.model.ode_block import ODEBlock
from steerflow.model.vector_fields import ControlledLinear, build_field

pytestmark = pytest.mark.usefixtures("single_thread")
D = 32  # tiny preset width


def _ode_block(liven, seed: int = 0, **overrides) -> ODEBlock:
    torch.manual_seed(seed)
    model = SteerFlowGPT(ModelConfig.from_name("tiny", **overrides))
    liven(model, alpha=0.7, seed=seed + 1)
    return model.ode.double()


def test_controlled_linear_equals_linear_on_the_concatenation():
    torch.manual_seed(0)
    layer = ControlledLinear(D, 20, control_dim=3, time=True).double()
    x = torch.randn(2, 5, D, dtype=torch.float64)  # (B, T, d)
    u = torch.randn(2, 1, 3, dtype=torch.float64)  # (B, 1, c)
    tau = torch.tensor(0.37, dtype=torch.float64)
    concat = torch.cat([x, tau.expand(2, 5, 1), u.expand(2, 5, 3)], dim=-1)  # (B, T, d + 1 + c)
    # float64: blockwise vs concatenated sums differ only by rounding (~1e-16 relative)
    torch.testing.assert_close(layer(x, tau, u), layer.linear(concat), rtol=1e-12, atol=1e-12)


def test_one_euler_step_equals_h_plus_alpha_f_by_hand(liven):
    block = _ode_block(liven)
    h = torch.randn(2, 6, D, dtype=torch.float64)  # (B, T, d)
    u = torch.tensor([[0.8], [-1.3]], dtype=torch.float64)  # (B, c)
    out = block(h, u, SolverSpec(method="euler", steps=1))

    field = block.field
    ln = F.layer_norm(h, (D,), field.norm.weight, field.norm.bias, eps=field.norm.eps)
    tau = torch.zeros(2, 6, 1, dtype=torch.float64)  # the only Euler stage is at τ = 0
    z = torch.cat([ln, tau, u[:, None, :].expand(2, 6, 1)], dim=-1)  # [LN(H), τ, u]
    hidden = F.softplus(F.linear(z, field.fc_in.linear.weight, field.fc_in.linear.bias))
    f = F.linear(hidden, field.fc_out.weight, field.fc_out.bias)  # F(H, 0, u)
    expected = h + block.alpha * f  # H(1) = H(0) + 1·α·F(H(0), 0, u)

    assert (expected - h).abs().max() > 0.1  # the step is not negligible
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)  # float64 rounding


def test_block_field_euler_step_of_size_one_is_a_pre_ln_block():
    """Paper 2's view: x + f(x) is one Euler step; with GELU, width 4d, no τ and u = 0 the block
    field's step is exactly a pre-LN transformer block with the same weights."""
    config = ModelConfig.from_name("tiny", field="block", field_activation="gelu",
                                   field_hidden=4 * D, time_conditioning=False)
    torch.manual_seed(0)
    ode = ODEBlock(config).double()
    reference = Block(config).double()
    with torch.no_grad():
        ode.alpha.fill_(1.0)
        for name in ("ln_1", "attn", "ln_2"):
            getattr(ode.field, name).load_state_dict(getattr(reference, name).state_dict())
        ode.field.fc_in.linear.weight[:, :D] = reference.mlp.c_fc.weight
        ode.field.fc_in.linear.bias.copy_(reference.mlp.c_fc.bias)
        ode.field.fc_out.load_state_dict(reference.mlp.c_proj.state_dict())
    h = torch.randn(2, 7, D, dtype=torch.float64)
    out = ode(h, torch.zeros(2, 1, dtype=torch.float64), SolverSpec(method="euler", steps=1))
    torch.testing.assert_close(out, reference(h), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("field", ["mlp", "block", "contractive"])
def test_additive_injection_runs_forward_and_backward_and_u_matters(make_tiny_model, field):
    model = make_tiny_model(field=field, injection="add")
    assert model.ode.field.u_proj is not None
    assert model.ode.field.fc_in.control_dim == 0  # u enters through u_proj only
    idx = torch.randint(0, 512, (2, 9))
    logits_pos, loss = model(idx, u=1.0, targets=idx)
    logits_neg, _ = model(idx, u=-1.0)
    assert (logits_pos - logits_neg).abs().max() > 1e-3
    loss.backward()
    for name, p in model.ode.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.ode.field.u_proj.weight.grad.abs().sum() > 0


def test_per_channel_alpha_runs_and_a_zero_channel_is_frozen(make_tiny_model):
    model = make_tiny_model(alpha_shape="channel")
    assert model.ode.alpha.shape == (D,)
    idx = torch.randint(0, 512, (2, 9))
    _, loss = model.train()(idx, u=0.5, targets=idx)
    loss.backward()  # train mode: the adjoint Euler solve of the train solver
    assert model.ode.alpha.grad.shape == (D,) and torch.isfinite(model.ode.alpha.grad).all()
    assert model.ode.last_stats.nfe_backward > 0

    with torch.no_grad():
        model.ode.alpha[3] = 0.0  # dH₃/dτ = 0·F₃ = 0, so channel 3 cannot move
        h = torch.randn(2, 9, D)
        out = model.ode(h, torch.ones(2, 1), SolverSpec(method="rk4", steps=2))
    assert torch.equal(out[..., 3], h[..., 3])
    assert (out[..., 4] - h[..., 4]).abs().max() > 1e-3


def _contractive_field(gamma: float, seed: int = 0, injection: str = "concat"):
    torch.manual_seed(seed)
    config = ModelConfig.from_name("tiny", field="contractive", contractive_gamma=gamma,
                                   field_hidden=64, injection=injection)
    field = build_field(config).double()
    with torch.no_grad():  # large raw weights: only the spectral normalisation keeps Lip(g) ≤ 0.9γ
        for p in field.parameters():
            p.mul_(30.0)
    return field


@pytest.mark.parametrize("gamma, injection", [(1.0, "concat"), (2.5, "add")])
def test_contractive_field_one_sided_lipschitz_bound(gamma, injection):
    """⟨F(x) − F(y), x − y⟩ ≤ −0.1γ‖x − y‖² for every token (paper 2's contractivity condition)."""
    field = _contractive_field(gamma, injection=injection)
    u = torch.randn(4, 1, 1, dtype=torch.float64)
    tau = torch.tensor(0.3, dtype=torch.float64)
    x = 3 * torch.randn(4, 50, D, dtype=torch.float64)  # (B, T, d)
    for scale in (1e-3, 1.0, 10.0):  # near pairs probe the Jacobian, far pairs the global bound
        y = x + scale * torch.randn_like(x)
        dx = x - y
        inner = ((field(tau, x, u) - field(tau, y, u)) * dx).sum(-1)  # (B, T)
        ratio = inner / (dx * dx).sum(-1)
        # float64 rounding of F(x) − F(y) is far below 1e-9 of ‖x − y‖²
        assert ratio.max() <= -0.1 * gamma + 1e-9
        assert ratio.max() > -gamma  # the nonlinear part g does contribute


def test_contractive_bound_is_attained_by_an_identity_field():
    """With W₁ = 5·I, W₂ = 3·I (normalised to I) and softplus in its linear regime, ∂F/∂H ≈
    (−γ + 0.9γ)·I: the log-norm equals the bound −0.1γ, so a looser margin would show here."""
    gamma = 2.0
    config = ModelConfig.from_name("tiny", field="contractive", contractive_gamma=gamma,
                                   field_hidden=D)
    field = build_field(config).double()
    with torch.no_grad():
        field.fc_in.linear.weight.zero_()
        field.fc_in.linear.weight[:, :D] = 5.0 * torch.eye(D)
        field.fc_in.linear.bias.fill_(5.0 * 20.0)  # pre-activation ≈ 20 after normalisation
        field.fc_out.weight.copy_(3.0 * torch.eye(D))
    h = torch.randn(2, 10, D, dtype=torch.float64)
    v = torch.randn_like(h)
    u = torch.zeros(2, 1, 1, dtype=torch.float64)
    _, jv = jvp(lambda x: field(torch.tensor(0.0, dtype=torch.float64), x, u), (h,), (v,))
    ratio = (v * jv).sum(-1) / (v * v).sum(-1)
    # softplus'(20 ± 0.5) = sigmoid(≥ 19.5) differs from 1 by < 4e-9
    torch.testing.assert_close(ratio, torch.full_like(ratio, -0.1 * gamma), rtol=0, atol=1e-7)


def test_contractive_field_log_norm_of_jacobian_by_jvp():
    """⟨v, J v⟩ ≤ −0.1γ‖v‖² with J = ∂F/∂H, from Jacobian-vector products (no dense Jacobian)."""
    gamma = 1.5
    field = _contractive_field(gamma, seed=3)
    u = torch.randn(2, 1, 1, dtype=torch.float64)
    tau = torch.tensor(0.8, dtype=torch.float64)
    h = torch.randn(2, 40, D, dtype=torch.float64)
    for _ in range(5):
        v = torch.randn_like(h)
        _, jv = jvp(lambda x: field(tau, x, u), (h,), (v,))
        ratio = (v * jv).sum(-1) / (v * v).sum(-1)  # per-token Rayleigh quotient of J's symmetric part
        assert ratio.max() <= -0.1 * gamma + 1e-10


def test_contractive_flow_shrinks_perturbations():
    """Contractivity integrated: ‖H_x(1) − H_y(1)‖ ≤ exp(−0.1γα)‖x − y‖ (up to the Euler error)."""
    torch.manual_seed(0)
    config = ModelConfig.from_name("tiny", field="contractive", contractive_gamma=2.0)
    block = ODEBlock(config).double()
    with torch.no_grad():
        block.alpha.fill_(1.0)
        for p in block.field.parameters():
            p.mul_(10.0)
    x = torch.randn(1, 30, D, dtype=torch.float64)
    y = x + 0.1 * torch.randn_like(x)
    u = torch.zeros(1, 1, dtype=torch.float64)
    solver = SolverSpec(method="rk4", steps=16)
    gap0 = (x - y).norm(dim=-1)
    gap1 = (block(x, u, solver) - block(y, u, solver)).norm(dim=-1)
    # rk4 with 16 steps on a field with Lipschitz ≤ 1.9γ is accurate to ~1e-6 relative
    assert (gap1 <= gap0 * torch.exp(torch.tensor(-0.1 * 2.0)) * (1 + 1e-6)).all()


def test_control_gain_scales_the_u_term_and_set_gain_keeps_the_function():
    torch.manual_seed(0)
    layer = ControlledLinear(D, 20, control_dim=2, time=True, gain=3.0).double()
    x = torch.randn(2, 5, D, dtype=torch.float64)  # (B, T, d)
    u = torch.randn(2, 1, 2, dtype=torch.float64)  # (B, 1, c)
    tau = torch.tensor(0.25, dtype=torch.float64)
    W = layer.linear.weight
    by_hand = (x @ W[:, :D].T + tau * W[:, D] + 3.0 * (u @ W[:, D + 1:].T) + layer.linear.bias)
    torch.testing.assert_close(layer(x, tau, u), by_hand, rtol=1e-12, atol=1e-12)
    before = layer(x, tau, u)
    layer.set_gain_(40.0)
    assert layer.gain == 40.0
    # W_u scaled by 3/40 and the gain by 40/3: the same function up to float64 rounding
    torch.testing.assert_close(layer(x, tau, u), before, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        layer.linear.weight[:, D + 1:] += 1.0  # one unit of W_u now moves the output 40 times more
    torch.testing.assert_close(layer(x, tau, u) - before,
                               40.0 * (u @ torch.ones(2, 20, dtype=torch.float64)).expand(2, 5, 20))


def test_control_out_starts_at_zero_and_adds_gain_times_w_o_u():
    torch.manual_seed(0)
    plain = SteerFlowGPT(ModelConfig.from_name("tiny"))
    torch.manual_seed(0)
    with_path = SteerFlowGPT(ModelConfig.from_name("tiny", control_out=True, control_gain=5.0))
    field = with_path.ode.field
    assert torch.equal(field.u_out.linear.weight, torch.zeros(D, 1))
    h = torch.randn(2, 4, D)  # (B, T, d)
    u = torch.tensor([[[1.0]], [[-2.0]]])  # (B, 1, c)
    tau = torch.tensor(0.5)
    base = field(tau, h, u)
    with torch.no_grad():
        field.u_out.linear.weight.fill_(0.1)
    # F gains 5 · 0.1 · u on every channel and token
    torch.testing.assert_close(field(tau, h, u) - base, (0.5 * u).expand(2, 4, D))
    with pytest.raises(Exception, match="control_out"):
        ModelConfig.from_name("tiny", field="block", control_out=True)


def test_control_adapter_is_zero_at_u_zero_linear_in_u_and_depends_on_the_token():
    torch.manual_seed(0)
    plain = SteerFlowGPT(ModelConfig.from_name("tiny", control_dim=2, control_gain=2.0))
    torch.manual_seed(0)
    adapted = SteerFlowGPT(ModelConfig.from_name("tiny", control_dim=2, control_adapter=8,
                                                 control_gain=2.0))
    field, adapter = adapted.ode.field.double(), adapted.ode.field.u_adapter
    assert torch.equal(adapter.up.weight, torch.zeros(D, 16))  # B = 0: the same model at first
    h = torch.randn(3, 5, D, dtype=torch.float64)  # (B, T, d)
    tau = torch.tensor(0.3, dtype=torch.float64)
    u = torch.randn(3, 1, 2, dtype=torch.float64)  # (B, 1, c)
    torch.testing.assert_close(field(tau, h, u), plain.ode.field.double()(tau, h, u),
                               rtol=0, atol=0)
    with torch.no_grad():
        adapter.up.weight.normal_()
    base = plain.ode.field(tau, h, u)
    zero = torch.zeros(3, 1, 2, dtype=torch.float64)
    torch.testing.assert_close(field(tau, h, zero), plain.ode.field(tau, h, zero), rtol=0, atol=0)
    # by hand: g · Σ_a u_a B_a silu(A LN(h)), B_a the columns a, a + c, a + 2c, ... of `up`
    x = field.norm(h)
    act = F.silu(x @ adapter.down.weight.T + adapter.down.bias)  # (B, T, r)
    by_hand = sum(2.0 * u[..., a: a + 1] * (act @ adapter.up.weight[:, a::2].T) for a in range(2))
    torch.testing.assert_close(field(tau, h, u) - base, by_hand, rtol=1e-10, atol=1e-12)
    delta = lambda v: field(tau, h, v) - plain.ode.field(tau, h, v)  # noqa: E731
    torch.testing.assert_close(delta(u + 2 * u), 3 * delta(u), rtol=1e-10, atol=1e-12)
    per_token = delta(u)[0]  # (T, d): a different direction at each token, unlike W_o u
    assert (per_token - per_token.mean(0)).norm() > 0.1 * per_token.norm()
    before = field(tau, h, u)
    adapter.set_gain_(7.0)
    torch.testing.assert_close(field(tau, h, u), before, rtol=1e-12, atol=1e-12)
    with pytest.raises(Exception, match="control_adapter"):
        ModelConfig.from_name("tiny", field="block", control_adapter=4)
