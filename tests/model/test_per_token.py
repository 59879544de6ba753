"""The per-token solver (:mod:`steerflow.model.per_token`): with a tolerance that forces the full
grid it is the fixed-grid Euler solve bit for bit (forward and gradients); its NFE count is the
number of rows the field evaluates; every token's solve is its own; KV-cache generation through
it equals full recompute; fields that mix tokens, dense output and the adjoint are refused."""

from __future__ import annotations

import pytest
import torch

from steerflow.config import SolverSpec
from steerflow.errors import ConfigError, SolverError
from steerflow.model.per_token import error_ratio, next_cells

pytestmark = pytest.mark.usefixtures("single_thread")

#: so tight that every predicted error ratio exceeds 1: every step is one cell of the grid
FULL_GRID = 1e-30
#: on the lively tiny field (α = 0.5, O(1) weights) this gives tokens 2, 3 and 4 evaluations
MIXED = 0.3


def _per_token(rtol: float, steps: int = 4) -> SolverSpec:
    return SolverSpec(method="per-token", steps=steps, rtol=rtol, atol=rtol / 10)


def _inputs(model, batch: int = 3, length: int = 20, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 512, (batch, length), generator=gen)
    u = model.control(torch.linspace(-1.5, 1.5, batch), batch)
    with torch.no_grad():
        return idx, model.ode_input(idx), u


@pytest.mark.parametrize("field", ["mlp", "contractive"])
@pytest.mark.parametrize("steps", [4, 3])
def test_a_tolerance_that_forces_the_full_grid_is_the_fixed_grid_solve_exactly(make_tiny_model,
                                                                              field, steps):
    model = make_tiny_model(field=field)
    idx, h0, u = _inputs(model)
    with torch.no_grad():
        fixed = model.ode.solve(h0, u, SolverSpec(method="euler", steps=steps)).final
        solution = model.ode.solve(h0, u, _per_token(FULL_GRID, steps))
    assert torch.equal(solution.final, fixed)  # same τ, same step, same arithmetic: bit for bit
    assert torch.equal(solution.stats.token_evals, torch.full(idx.shape, steps))
    assert solution.stats.nfe_forward == steps
    logits, _ = model(idx, u, solver=_per_token(FULL_GRID, steps))
    assert torch.equal(logits, model(idx, u, solver=SolverSpec(method="euler", steps=steps))[0])


def test_gradients_through_the_full_grid_equal_the_fixed_grid_gradients(make_tiny_model):
    model = make_tiny_model()
    idx, _, u = _inputs(model, batch=2, length=10)
    grads = []
    for spec in (SolverSpec(method="euler", steps=4), _per_token(FULL_GRID)):
        model.zero_grad()
        model(idx, u, targets=idx, solver=spec)[1].backward()
        grads.append([p.grad.clone() for p in model.ode.parameters()])
    for fixed, per_token in zip(*grads):
        # the forward is bit for bit the same; the gradient of the u-columns of the field's
        # first layer sums B·T per-token rows where the fixed grid sums a broadcast, so float32
        # rounding differs in the last bits (measured 5e-6 relative)
        torch.testing.assert_close(per_token, fixed, rtol=1e-5, atol=1e-8)


def test_nfe_is_the_number_of_rows_the_field_evaluates(make_tiny_model):
    model = make_tiny_model()
    _, h0, u = _inputs(model)
    calls = []  # (rows, τ values) of every field call
    hook = model.ode.field.register_forward_hook(
        lambda module, args, out: calls.append((args[1].shape[0], args[0].reshape(-1).tolist())))
    try:
        with torch.no_grad():
            solution = model.ode.solve(h0, u, _per_token(MIXED))
    finally:
        hook.remove()
    evals = solution.stats.token_evals
    assert len(set(evals.reshape(-1).tolist())) > 1, "the tolerance should give a mix of depths"
    assert int(evals.sum()) == sum(rows for rows, _ in calls)  # every row counted once
    assert solution.stats.nfe_forward == len(calls) == int(evals.max())
    rows = [r for r, _ in calls]
    assert rows[0] == h0.shape[0] * h0.shape[1]  # τ = 0: every token
    assert rows == sorted(rows, reverse=True)  # a halted token never comes back
    for r in range(1, int(evals.max()) + 1):  # call r evaluates the tokens that take ≥ r
        assert rows[r - 1] == int((evals >= r).sum())
    grid = {k / 4 for k in range(4)}
    assert all(set(taus) <= grid for _, taus in calls)  # the field is only read on the grid
    assert int(evals.min()) >= 2 and int(evals.max()) <= 4


def test_every_token_is_solved_on_its_own(make_tiny_model):
    """Position-wise: a token's steps and H(1) do not depend on the tokens batched with it."""
    model = make_tiny_model()
    _, h0, u = _inputs(model)
    with torch.no_grad():
        together = model.ode.solve(h0, u, _per_token(MIXED))
        for b, t in ((0, 0), (1, 7), (2, 19), (2, 3)):
            alone = model.ode.solve(h0[b:b + 1, t:t + 1], u[b:b + 1], _per_token(MIXED))
            assert int(alone.stats.token_evals) == int(together.stats.token_evals[b, t])
            # float32: a (1, d) row against a (60, d) block sums in another order
            torch.testing.assert_close(alone.final[0, 0], together.final[b, t],
                                       rtol=1e-5, atol=1e-6)


def test_tighter_tolerances_never_take_fewer_evaluations(make_tiny_model):
    model = make_tiny_model()
    _, h0, u = _inputs(model)
    with torch.no_grad():
        means = [float(model.ode.solve(h0, u, _per_token(tol)).stats.token_evals.double().mean())
                 for tol in (10.0, 1.0, MIXED, 0.1, 1e-3)]
    assert means == sorted(means) and means[0] == 2.0 and means[-1] == 4.0


def test_a_field_that_euler_integrates_exactly_halts_after_the_first_estimate(make_tiny_model):
    model = make_tiny_model(time_conditioning=False)
    with torch.no_grad():
        model.ode.alpha.zero_()  # α·F = 0: Euler is exact and the Heun–Euler estimate is 0
    _, h0, u = _inputs(model)
    with torch.no_grad():
        solution = model.ode.solve(h0, u, _per_token(FULL_GRID))
    assert torch.equal(solution.stats.token_evals, torch.full(h0.shape[:2], 2))
    assert torch.equal(solution.final, h0)


def test_the_controller_takes_the_most_cells_its_error_estimate_allows():
    e, y = torch.full((3, 1, 4), 0.01), torch.ones(3, 1, 4)
    # ‖e / (atol + rtol·|y|)‖_rms with atol = 0.01, rtol = 0.09: 0.01 / 0.1 = 0.1 per channel
    torch.testing.assert_close(error_ratio(e, y, y, 0.09, 0.01), torch.full((3,), 0.1))
    err = torch.tensor([0.0625, 0.25, 0.25, 1.5, 0.0, float("nan")])
    cells = torch.tensor([1, 1, 2, 1, 1, 1])
    left = torch.tensor([9, 9, 9, 9, 3, 3])
    # err·(m / cells)² ≤ 1: m ≤ cells / √err = 4, 2, 4, 0.8 → 1 (the smallest step); 0 → the rest
    assert next_cells(err, cells, left).tolist() == [4, 2, 4, 1, 3, 1]


def test_kv_cache_generation_with_it_equals_full_recompute(make_tiny_model):
    model = make_tiny_model()
    spec = _per_token(MIXED)
    assert model.can_cache(spec)  # position-wise: the new token is solved alone
    prompt = torch.randint(0, 512, (2, 5), generator=torch.Generator().manual_seed(1))
    u = torch.tensor([0.8, -1.2])
    cached = model.generate(prompt, u, 12, greedy=True, solver=spec, use_cache=True)
    full = model.generate(prompt, u, 12, greedy=True, solver=spec, use_cache=False)
    assert torch.equal(cached, full)
    sampled = [model.generate(prompt, u, 12, top_p=0.9, seed=3, solver=spec, use_cache=c)
               for c in (True, False)]
    assert torch.equal(*sampled)
    # and the cached last-position logits match a recompute at every step
    cache = model.new_cache(spec)
    with torch.no_grad():
        step, _ = model(prompt, u, solver=spec, cache=cache)
        seq = prompt
        for _ in range(6):
            torch.testing.assert_close(step[:, -1], model(seq, u, solver=spec)[0][:, -1],
                                       rtol=1e-4, atol=1e-5)  # as in test_generation.CACHE_TOL
            token = step[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, token], dim=1)
            step, _ = model(token, u, solver=spec, cache=cache)


def test_fields_that_mix_tokens_dense_output_and_the_adjoint_are_refused(make_tiny_model):
    model = make_tiny_model(field="block")
    idx = torch.randint(0, 512, (1, 6))
    with pytest.raises(ConfigError, match="position-wise"):
        model(idx, solver=_per_token(1e-3))
    mlp = make_tiny_model()
    h0 = mlp.ode_input(idx)
    with pytest.raises(SolverError, match="τ = 0 and 1 only"):
        mlp.ode.solve(h0, mlp.control(0.0, 1), _per_token(1e-3), taus=[0.0, 0.5, 1.0])
    with pytest.raises(ConfigError, match="no adjoint"):
        SolverSpec(method="per-token", adjoint=True)
    spec = SolverSpec.parse("per-token:1e-3")
    assert (spec.steps, spec.rtol, spec.atol) == (4, 1e-3, pytest.approx(1e-4))
    assert spec.describe() == "per-token euler on 4 steps, rtol=0.001, atol=0.0001"
