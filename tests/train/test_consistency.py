"""Training options against solver dependence: step-count randomisation and the consistency penalty."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from steerflow.config import SolverSpec
from steerflow.errors import ConfigError
from steerflow.analysis.divergence import displacement_divergence
from steerflow.analysis.inputs import control_batch
from steerflow.model.vector_fields import VectorField
from steerflow.train.consistency import (
    ODECapture, consistency_penalty, fine_solver, random_solver)

EULER4 = SolverSpec(method="euler", steps=4, adjoint=False)


class TimeField(VectorField):
    """``F(τ) = b τ``: rk4 is exact, n Euler steps miss ΔH = b/2 by b/(2n)."""

    def __init__(self, b: torch.Tensor) -> None:
        super().__init__()
        self.b = nn.Parameter(b)

    def forward(self, tau, h, u, cache=None):
        return (tau * self.b).expand_as(h)


def test_random_solver_is_a_function_of_seed_and_step():
    choices = (2, 4, 8, 16)
    draws = [random_solver(EULER4, step, seed=7, choices=choices).steps for step in range(200)]
    assert draws == [random_solver(EULER4, s, 7, choices).steps for s in range(200)]
    assert set(draws) == set(choices)  # 200 draws from 4 values: all appear
    assert draws != [random_solver(EULER4, s, 8, choices).steps for s in range(200)]
    assert random_solver(EULER4, 0, 7, choices).method == "euler"
    with pytest.raises(ConfigError, match="fixed-step"):
        random_solver(SolverSpec(method="dopri5", steps=None), 0, 0, choices)
    with pytest.raises(ConfigError, match="integers >= 1"):
        random_solver(EULER4, 0, 0, (0, 4))


def test_capture_records_the_ode_block_of_a_forward_pass(make_tiny_model):
    model = make_tiny_model()
    x = torch.randint(0, 512, (2, 8))
    with torch.no_grad(), ODECapture(model.ode) as cap:
        model(x, 1.0, solver=EULER4)
    assert cap.captured
    with torch.no_grad():
        h0 = model.ode_input(x)
        torch.testing.assert_close(cap.h0, h0, rtol=0, atol=0)
        torch.testing.assert_close(cap.h1, model.ode(h0, cap.u, EULER4), rtol=0, atol=0)
    assert len(model.ode._forward_hooks) == 0  # the hook is removed on exit


def test_penalty_is_the_displacement_divergence_from_rk4(make_tiny_model):
    model = make_tiny_model(dtype=torch.float64)
    x = torch.randint(0, 512, (2, 8))
    u = control_batch(model, -1.0, 2)
    fine = fine_solver(EULER4)
    assert (fine.method, fine.steps) == ("rk4", 4)
    with torch.no_grad():
        h0 = model.ode_input(x)
        h1 = model.ode(h0, u, EULER4)
        penalty = consistency_penalty(model.ode, h0, u, EULER4, fine)
        assert model.ode.last_stats.solver == "euler, 4 steps"  # the fine solve keeps the stats
        expected = displacement_divergence(h1, model.ode(h0, u, fine), h0)
    # float64 arithmetic; SQRT_EPS shifts the value by < 1e-6 / expected relative
    assert float(penalty) == pytest.approx(expected, rel=1e-8)


def test_penalty_on_a_time_linear_field_is_one_over_n(make_tiny_model):
    model = make_tiny_model(dtype=torch.float64)
    model.ode.field = TimeField(torch.linspace(-1, 1, 32, dtype=torch.float64))
    x = torch.randint(0, 512, (2, 8))
    u = control_batch(model, 0.0, 2)
    h0 = model.ode_input(x).detach()
    for n in (1, 4):
        coarse = SolverSpec(method="euler", steps=n)
        penalty = consistency_penalty(model.ode, h0, u, coarse, fine_solver(coarse))
        # rk4 integrates bτ exactly; Euler misses by b/(2n) of ΔH = b/2 at every token
        assert float(penalty.detach()) == pytest.approx(1 / n, rel=1e-9)
        penalty.backward()
        assert model.ode.field.b.grad.abs().sum() > 0


def test_minimising_the_penalty_makes_euler_agree_with_rk4(make_tiny_model):
    """The training solver asks for the adjoint, but the penalty must backpropagate through the
    steps: the adjoint's gradient is the exact flow's, blind to the discretisation gap (with it the
    penalty stalls after a ~2.3× drop; by backpropagation it falls ~11× in these 30 steps)."""
    model = make_tiny_model()
    x = torch.randint(0, 512, (4, 8))
    u = control_batch(model, 1.0, 4)
    with torch.no_grad():
        h0 = model.ode_input(x)
    coarse = EULER4.replace(adjoint=True)
    fine = fine_solver(coarse)
    opt = torch.optim.Adam(model.ode.parameters(), lr=1e-2)
    values = []
    for _ in range(30):
        opt.zero_grad()
        penalty = consistency_penalty(model.ode, h0, u, coarse, fine)
        penalty.backward()
        opt.step()
        values.append(float(penalty.detach()))
    assert values[-1] < 0.2 * values[0]  # a factor 5: between the two behaviours above


def test_training_loop_uses_both_options(make_cfg):
    """End to end on tiny: random step counts reach the solver, the penalty changes the update."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from steerflow.train import train

    plain = train(make_cfg("plain"))
    fixed = train(make_cfg("fixed", ode_consistency=1.0))
    mixed = train(make_cfg("mixed", ode_random_steps=[2, 3, 8]))
    mixed_seed = make_cfg("x").seed
    for result in (plain, fixed, mixed):
        assert result.summary()["completed"]
    records = [json.loads(line) for line in Path(mixed.out, "metrics.jsonl").read_text().splitlines()]
    nfes = {r["nfe_forward"] for r in records if r.get("type") == "train"}
    drawn = {random_solver(EULER4, s, mixed_seed, [2, 3, 8]).steps for s in range(8)}
    assert len(drawn) > 1 and nfes == drawn  # Euler: one evaluation per step
    weights = {name: load_file(Path(r.out, "model.safetensors")) for name, r in
               (("plain", plain), ("fixed", fixed))}
    field = [k for k in weights["plain"] if k.startswith("ode.")]
    assert any(not torch.equal(weights["plain"][k], weights["fixed"][k]) for k in field)
    saved = json.loads(Path(fixed.out, "train_config.json").read_text())
    assert saved["ode_consistency"] == 1.0
    with pytest.raises(ConfigError, match="ode_consistency"):
        make_cfg("bad", ode_consistency=-1.0)
    with pytest.raises(ConfigError, match="ode_random_steps"):
        make_cfg("bad", ode_random_steps=[0])
