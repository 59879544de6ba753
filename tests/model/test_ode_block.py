"""The ODE block: α = 0 is the identity, the fused path equals torchdiffeq, gradients (gradcheck,
adjoint vs backprop), solve statistics, and solver failures that stop instead of hanging."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from steerflow.config import ModelConfig, SolverSpec
from steerflow.errors import ConfigError, InputError, SolverError
from steerflow.model.gpt import SteerFlowGPT
from steerflow.model.ode_block import ODEBlock

pytestmark = pytest.mark.usefixtures("single_thread")
D = 32


def _reduced_baseline(hybrid: SteerFlowGPT) -> SteerFlowGPT:
    """The hybrid with its ODE span removed: a discrete GPT with the hybrid's other weights."""
    config = hybrid.config
    start, end = config.ode_span
    baseline = SteerFlowGPT(config.replace(ode_span=None, n_layer=config.n_layer - (end - start)))
    state = {k: v for k, v in hybrid.state_dict().items() if not k.startswith("ode.")}
    baseline.load_state_dict(state, strict=True)  # blocks.i are the hybrid's i-th discrete block
    return baseline.eval()


@pytest.mark.parametrize("field", ["mlp", "block", "contractive"])
@pytest.mark.parametrize("solver", ["euler:4", "rk4:3", "dopri5"])
def test_alpha_zero_is_exactly_the_model_without_the_ode_span(make_tiny_model, field, solver):
    hybrid = make_tiny_model(field=field)
    with torch.no_grad():
        hybrid.ode.alpha.zero_()  # dH/dτ = 0·F: H(1) = H(0) bit for bit
    idx = torch.randint(0, 512, (3, 20))
    logits, _ = hybrid(idx, u=1.5, solver=SolverSpec.parse(solver))
    reference, _ = _reduced_baseline(hybrid)(idx)
    if SolverSpec.parse(solver).is_fixed_step:
        assert torch.equal(logits, reference)
    else:
        # torchdiffeq returns H(1) through dopri5's dense-output polynomial even at a step end;
        # its coefficients (e.g. 18·y₀ + 14·y₀ − 32·y₀) cancel only up to float32 rounding:
        # a few ulps of 32·|H|, about 1e-6 relative
        torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        hybrid.ode.alpha.fill_(0.5)  # and the ODE block does something once α ≠ 0
    assert not torch.allclose(hybrid(idx, u=1.5)[0], reference, atol=1e-3)


@pytest.mark.parametrize("alpha_shape", ["scalar", "channel"])
def test_reset_alpha_moves_the_scale_into_the_field_without_changing_the_model(make_tiny_model,
                                                                            alpha_shape):
    model = make_tiny_model(field="mlp", alpha_shape=alpha_shape)
    with torch.no_grad():  # a pretrained α: small, and per channel different
        model.ode.alpha.copy_(0.01 + 0.02 * torch.rand_like(model.ode.alpha))
    idx = torch.randint(0, 512, (2, 12))
    u = torch.tensor([[1.0], [-2.0]])
    before = model(idx, u)[0]
    old = model.ode.alpha.detach().clone()
    assert model.ode.reset_alpha_(0.1) == pytest.approx(float(old.mean()))
    assert torch.all(model.ode.alpha == torch.tensor(0.1))
    torch.testing.assert_close(model(idx, u)[0], before, rtol=1e-5, atol=1e-5)
    # α·F is the same product, but F's output layer now carries the old α / 0.1
    assert not torch.allclose(model.ode.alpha, old)
    with pytest.raises(ConfigError, match="positive"):
        model.ode.reset_alpha_(0.0)


@pytest.mark.parametrize("field", ["block", "contractive"])
def test_reset_alpha_is_refused_where_the_field_is_not_linear_in_an_output_layer(make_tiny_model,
                                                                               field):
    model = make_tiny_model(field=field)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="not linear"):
        model.ode.reset_alpha_(0.5)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # nothing changed


@pytest.mark.parametrize("field", ["mlp", "block"])
@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_fused_fixed_step_path_equals_torchdiffeq(make_tiny_model, field, method):
    block = make_tiny_model(field=field, dtype=torch.float64).ode
    h = torch.randn(2, 9, D, dtype=torch.float64)  # (B, T, d)
    u = torch.tensor([[0.7], [-1.1]], dtype=torch.float64)
    for steps in (3, 6):
        fused = SolverSpec(method=method, steps=steps)
        plain = fused.replace(fused=False)
        taus = [k / 3 for k in range(4)]  # on both grids: a trajectory, not just H(1)
        a = block.solve(h, u, fused, taus=taus)
        b = block.solve(h, u, plain, taus=taus)
        assert a.states.shape == (4, 2, 9, D)
        assert a.stats.nfe_forward == b.stats.nfe_forward == steps * fused.evals_per_step
        # same arithmetic; torchdiffeq's grid times come from arange·dt, so τ and dt differ by
        # float64 rounding (~1e-16), amplified by a handful of O(1)-Lipschitz steps
        torch.testing.assert_close(a.states, b.states, rtol=1e-10, atol=1e-10)
        assert (a.states[-1] - h).abs().max() > 0.1  # the flow moves H


def test_ode_block_control_shape_is_checked(make_tiny_model):
    """u of shape (B,) would broadcast over tokens instead of rows when B == T; it is refused."""
    block = make_tiny_model().ode
    h = torch.randn(4, 4, D)  # B == T: the silent-broadcast case
    u = torch.tensor([[1.0], [-1.0], [0.5], [2.0]])  # (B, c)
    with pytest.raises(InputError, match=r"control u has shape \(4,\); expected \(4, 1\) or \(1, 1\)"):
        block(h, u.flatten(), SolverSpec())
    with pytest.raises(InputError, match=r"control u has shape \(4, 1, 1\)"):
        block(h, u[:, :, None], SolverSpec())
    shared = block(h, torch.full((1, 1), 0.5), SolverSpec())  # (1, c) is shared by every row
    torch.testing.assert_close(shared, block(h, torch.full((4, 1), 0.5), SolverSpec()), rtol=0, atol=0)


def test_fixed_step_trajectory_rejects_times_off_the_grid(make_tiny_model):
    block = make_tiny_model().ode
    h, u = torch.randn(1, 4, D), torch.zeros(1, 1)
    with pytest.raises(SolverError, match="not on the 4-step grid"):
        block.solve(h, u, SolverSpec(method="euler", steps=4), taus=[0.0, 0.3, 1.0])
    with pytest.raises(SolverError, match="taus must increase from 0 to 1"):
        block.solve(h, u, SolverSpec(method="euler", steps=4), taus=[0.0, 0.75, 0.5, 1.0])
    with pytest.raises(SolverError, match="taus must increase from 0 to 1"):
        block.solve(h, u, SolverSpec(method="dopri5"), taus=[0.0, 0.5])


# ----------------------------------------------------------------------------- gradients
def _small_block(field: str, seed: int = 0) -> ODEBlock:
    """A float64 ODE block with d = 8 and O(1) weights, small enough for finite differences."""
    torch.manual_seed(seed)
    config = ModelConfig.from_name("tiny", n_embd=8, n_head=2, field_hidden=8, field=field)
    block = ODEBlock(config).double()
    with torch.no_grad():
        block.field.fc_out.weight.normal_(0, 0.5)
        block.alpha.fill_(0.8)
    return block


@pytest.mark.parametrize("field, solver", [
    ("mlp", SolverSpec(method="euler", steps=3)),  # fused loop
    ("mlp", SolverSpec(method="midpoint", steps=2, fused=False)),  # torchdiffeq
    ("block", SolverSpec(method="rk4", steps=2)),
])
def test_gradcheck_through_the_ode_block(field, solver):
    block = _small_block(field)
    names = ["alpha", "field.fc_in.linear.weight", "field.fc_out.bias"]
    params = {n: p.detach().clone().requires_grad_() for n, p in block.named_parameters() if n in names}
    h = torch.randn(1, 3, 8, dtype=torch.float64, requires_grad=True)
    u = torch.randn(1, 1, dtype=torch.float64, requires_grad=True)

    def loss(h, u, *values):
        out = functional_call(block, dict(zip(params, values)), (h, u, solver))
        return (out ** 2).sum()

    # float64 central differences with eps 1e-6: truncation and rounding errors both ~1e-10
    assert torch.autograd.gradcheck(loss, (h, u, *params.values()), eps=1e-6, atol=1e-6, rtol=1e-5)


def _gradients(block: ODEBlock, h0: torch.Tensor, u0: torch.Tensor,
               solver: SolverSpec) -> dict[str, torch.Tensor]:
    """d loss / d(H(0), u, each parameter)."""
    block.zero_grad()
    h = h0.clone().requires_grad_()
    u = u0.clone().requires_grad_()
    out = block(h, u, solver)
    loss = (out ** 2).sum() + out[:, -1].sum()
    loss.backward()
    return {"h": h.grad, "u": u.grad, **{n: p.grad for n, p in block.named_parameters()}}


def _flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads.values()])


def test_adjoint_equals_backprop_for_dopri5_at_tight_tolerance():
    block = _small_block("mlp")
    h0 = torch.randn(2, 5, 8, dtype=torch.float64)
    u0 = torch.randn(2, 1, dtype=torch.float64)
    spec = SolverSpec(method="dopri5", rtol=1e-7, atol=1e-7)
    direct = _gradients(block, h0, u0, spec)
    adjoint = _gradients(block, h0, u0, spec.replace(adjoint=True))
    assert block.last_stats.nfe_backward > 0  # the adjoint pass did run
    # both approximate the exact gradient to O(rtol) (~1e-5 once the adjoint integral of the
    # parameter gradients accumulates it); 1e-4 per tensor, so no gradient can be missing or off
    for name in direct:
        assert direct[name].abs().max() > 0, name
        rel = (direct[name] - adjoint[name]).norm() / direct[name].norm()
        assert rel < 1e-4, (name, float(rel))


def test_adjoint_of_fixed_euler_converges_to_backprop_at_order_one():
    """The adjoint of a fixed Euler grid solves the adjoint ODE with Euler too, so it differs from
    the exact discrete gradient by O(dt): the gap halves each time the steps double."""
    block = _small_block("mlp", seed=1)
    h0 = torch.randn(2, 5, 8, dtype=torch.float64)
    u0 = torch.randn(2, 1, dtype=torch.float64)
    gaps = []
    for steps in (4, 8, 16):
        spec = SolverSpec(method="euler", steps=steps)
        direct = _flat(_gradients(block, h0, u0, spec))
        adjoint = _flat(_gradients(block, h0, u0, spec.replace(adjoint=True)))
        gaps.append(float((direct - adjoint).norm() / direct.norm()))
    assert gaps[0] > 1e-3  # not the same computation
    for coarse, fine in zip(gaps, gaps[1:]):
        # gap = C·dt + O(dt²): the ratio is 2 up to an O(dt) correction
        assert 1.8 < coarse / fine < 2.2


def test_gradients_work_after_torchdiffeq_was_first_imported_in_inference_mode(monkeypatch):
    """Regression: generate() runs under torch.inference_mode; if it was the first to import
    torchdiffeq, its module-level tableaus became inference tensors and every later float64
    dopri5 solve with gradients failed ("Inference tensors cannot be saved for backward")."""
    import sys

    for name in [m for m in sys.modules if m == "torchdiffeq" or m.startswith("torchdiffeq.")]:
        monkeypatch.delitem(sys.modules, name)  # restored after the test
    block = _small_block("mlp")
    h = torch.randn(1, 3, 8, dtype=torch.float64)
    u = torch.zeros(1, 1, dtype=torch.float64)
    with torch.inference_mode():
        block(h, u, SolverSpec(method="dopri5"))  # first import of torchdiffeq happens here
    h.requires_grad_()
    block(h, u, SolverSpec(method="dopri5")).sum().backward()
    assert torch.isfinite(h.grad).all()


# ----------------------------------------------------------------------------- statistics
def _count_field_calls(block: ODEBlock) -> list[int]:
    calls = [0]
    block.field.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("solver", ["euler:3", "midpoint:3", "rk4:3", "dopri5", "bosh3"])
@pytest.mark.parametrize("field", ["mlp", "block"])
def test_nfe_forward_counts_vector_field_calls(make_tiny_model, solver, field):
    block = make_tiny_model(field=field).ode
    calls = _count_field_calls(block)
    spec = SolverSpec.parse(solver)
    block.solve(torch.randn(2, 6, D), torch.ones(2, 1), spec)
    stats = block.last_stats
    assert stats.nfe_forward == calls[0] > 0
    if spec.is_fixed_step:
        assert stats.nfe_forward == spec.steps * spec.evals_per_step
        assert stats.accepted_steps == spec.steps
    assert stats.nfe_backward == 0


def test_dopri5_counts_accepted_and_rejected_steps():
    """Dormand–Prince is FSAL: each attempted step costs 6 new evaluations, plus 2 for
    torchdiffeq's initial step-size selection. A stiff contractive field forces rejections."""
    torch.manual_seed(0)
    block = ODEBlock(ModelConfig.from_name("tiny", field="contractive"))
    with torch.no_grad():
        block.alpha.fill_(40.0)  # eigenvalues near −40: dopri5's stability limit rejects steps
    calls = _count_field_calls(block)
    block.solve(torch.randn(2, 8, D), torch.zeros(2, 1), SolverSpec(method="dopri5"))
    stats = block.last_stats
    assert stats.rejected_steps > 0 and stats.accepted_steps > 0
    assert stats.nfe_forward == calls[0] == 2 + 6 * (stats.accepted_steps + stats.rejected_steps)
    assert stats.tau_reached == pytest.approx(1.0)


@pytest.mark.parametrize("solver", ["euler:4", "dopri5"])
def test_adjoint_counts_backward_evaluations(make_tiny_model, solver):
    block = make_tiny_model().ode
    calls = _count_field_calls(block)
    h = torch.randn(2, 6, D, requires_grad=True)
    out = block(h, torch.ones(2, 1), SolverSpec.parse(solver, adjoint=True))
    stats = block.last_stats
    assert stats.nfe_backward == 0 and stats.nfe_forward == calls[0]
    out.square().sum().backward()
    assert stats.nfe_backward > 0
    assert stats.nfe_forward + stats.nfe_backward == calls[0]
    assert stats.as_dict()["nfe_backward"] == stats.nfe_backward


# ----------------------------------------------------------------------------- failures
def test_exceeding_max_nfe_raises_solver_error_naming_solver_and_nfe(make_tiny_model):
    model = make_tiny_model()
    idx = torch.randint(0, 512, (2, 8))
    with pytest.raises(SolverError, match=r"max_nfe=5 .*forward pass \(dopri5"):
        model(idx, solver=SolverSpec(method="dopri5", max_nfe=5))
    assert model.ode.last_stats.nfe_forward == 6  # stopped at the first evaluation past the cap


def test_max_nfe_also_bounds_the_adjoint_pass(make_tiny_model):
    block = make_tiny_model().ode
    h = torch.randn(2, 6, D, requires_grad=True)
    spec = SolverSpec(method="dopri5", adjoint=True)
    block(h, torch.ones(2, 1), spec)
    forward_nfe = block.last_stats.nfe_forward
    out = block(h, torch.ones(2, 1), spec.replace(max_nfe=forward_nfe))  # forward fits exactly
    with pytest.raises(SolverError, match="backward pass"):
        out.sum().backward()


def _exploding_model(make_tiny_model) -> SteerFlowGPT:
    """No LayerNorm in the field, huge weights and α = 1000: H grows like exp(10⁵ τ)."""
    model = make_tiny_model(field_norm=False)
    with torch.no_grad():
        model.ode.field.fc_in.linear.weight.normal_(0, 10.0)
        model.ode.field.fc_out.weight.normal_(0, 10.0)
        model.ode.alpha.fill_(1e3)
    return model


@pytest.mark.parametrize("solver", ["rk4:2", "euler:16", "rk4:2:torchdiffeq"])
def test_blow_up_on_a_fixed_grid_is_a_solver_error(make_tiny_model, solver):
    model = _exploding_model(make_tiny_model)
    spec = SolverSpec.parse(solver.removesuffix(":torchdiffeq"), fused=not solver.endswith("torchdiffeq"))
    with pytest.raises(SolverError, match="non-finite states"):
        model(torch.randint(0, 512, (1, 6)), solver=spec)


def test_blow_up_with_an_adaptive_solver_stops_before_max_nfe(make_tiny_model):
    model = _exploding_model(make_tiny_model)
    with pytest.raises(SolverError, match="dopri5") as info:
        model(torch.randint(0, 512, (1, 6)), solver=SolverSpec(method="dopri5"))
    assert "underflow" in str(info.value) or "non-finite" in str(info.value)
    # it gave up on its own (step-size underflow), long before the 10,000-evaluation cap
    assert model.ode.last_stats.nfe_forward < 2_000
