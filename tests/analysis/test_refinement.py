"""Depth-dependent continuous transformers and their refinement."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from steerflow.analysis.refinement import (DepthConfig, DepthLM, depth_roughness,
                                           evaluate_refinement, legendre_basis, linear_basis,
                                           piecewise_basis, refinement_study, with_basis)
from steerflow.errors import ConfigError


def test_legendre_basis_is_orthogonal_on_the_unit_interval():
    # ∫₀¹ P_j(2τ−1) P_k(2τ−1) dτ = δ_jk / (2k + 1); Gauss–Legendre with 8 nodes is exact here
    nodes, weights = np.polynomial.legendre.leggauss(8)
    taus = (nodes + 1) / 2
    values = np.array([legendre_basis(t, 5) for t in taus])  # (8, 5)
    gram = (values * weights[:, None] / 2).T @ values
    np.testing.assert_allclose(gram, np.diag(1 / (2 * np.arange(5) + 1)), atol=1e-12)


def test_piecewise_and_linear_bases_agree_on_the_step_nodes():
    for k in range(4):
        assert piecewise_basis(k / 4, 4) == linear_basis(k / 4, 4)
        assert piecewise_basis(k / 4, 4)[k] == 1.0
    assert linear_basis(0.125, 4) == [0.5, 0.5, 0.0, 0.0]  # halfway between layers 0 and 1
    assert piecewise_basis(1.0, 4) == [0, 0, 0, 1.0]


def _batches(vocab: int, n: int = 2):
    g = torch.Generator().manual_seed(0)
    return [(torch.randint(0, vocab, (2, 8), generator=g), torch.randint(0, vocab, (2, 8), generator=g))
            for _ in range(n)]


def test_interpolated_weights_reproduce_the_trained_model_at_its_own_step_count():
    torch.manual_seed(0)
    model = DepthLM(DepthConfig(vocab_size=50, block_size=8, n_embd=16, n_head=2,
                                basis="piecewise", basis_size=4)).eval()
    x, _ = _batches(50, 1)[0]
    with torch.no_grad():
        a = model(x, 4)[0]
        b = with_basis(model, "linear")(x, 4)[0]
        c = with_basis(model, "linear")(x, 8)[0]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_euler_refinement_converges_at_first_order():
    # a depth-independent field (only P_0) is a smooth autonomous ODE: ‖H_N − H_2N‖ ∝ 1/N
    torch.manual_seed(0)
    model = DepthLM(DepthConfig(vocab_size=50, block_size=8, n_embd=16, n_head=2, basis_size=1))
    with torch.no_grad():
        for lin in model.field.linears():
            lin.weight.mul_(3.0)  # strong enough for a visible Euler error, mild enough for N ≥ 4
    losses, change, gap, order, _ = evaluate_refinement(model, _batches(50), [4, 8, 16, 32, 64])
    assert order == pytest.approx(-1.0, abs=0.2)
    assert all(a > b for a, b in zip(gap, gap[1:]))
    assert depth_roughness(model, 4) == 0.0  # one basis function: the same weights at every τ


def test_refinement_study_trains_and_reports_every_variant():
    batches = _batches(50, 3)
    results = refinement_study("piecewise", DepthConfig(vocab_size=50, block_size=8, n_embd=16,
                                                        n_head=2), lambda i: batches[i % 3],
                               batches[:1], train_steps=2, iters=3, refinements=3)
    assert [r.basis for r in results] == ["piecewise", "linear"]
    assert results[1].label == "piecewise (iid init), interpolated"
    for r in results:
        assert r.eval_steps == [2, 4, 8] and len(r.val_loss) == 3 and len(r.state_change) == 2
        assert np.isfinite(r.val_loss).all() and r.extra["trained_basis"] == "piecewise"
    with pytest.raises(ConfigError):
        refinement_study("linear", DepthConfig(vocab_size=50), None, None)
    with pytest.raises(ConfigError):
        DepthConfig(vocab_size=50, basis="fourier")


@pytest.mark.parametrize("basis", ["piecewise", "legendre"])
def test_smooth_init_starts_constant_in_depth(basis):
    torch.manual_seed(0)
    kw = dict(vocab_size=50, block_size=8, n_embd=16, n_head=2, basis=basis, basis_size=4)
    assert depth_roughness(DepthLM(DepthConfig(**kw, init="smooth")), 8) == 0.0
    assert depth_roughness(DepthLM(DepthConfig(**kw, init="iid")), 8) > 0.1


def test_flow_refinement_reports_training_progress_per_iteration():
    # the depth-refinement study is the flow stage's longest part (74 min at paper scale): it must
    # say how far each model's training has got, not only which model is training
    from steerflow.analysis.flow import REFINEMENT_MODELS, FlowConfig, refinement_part

    rng = np.random.default_rng(0)
    tokens = {split: rng.integers(0, 50, 4000).astype(np.int64) for split in ("train", "valid")}
    cfg = FlowConfig(checkpoint="unused", out="unused", refinement_iters=20,
                     refinement_train_steps=2, refinement_basis=1, refinement_width=16,
                     refinement_batch_size=2, loss_batches=1)
    seen = []
    out = refinement_part(tokens, 50, 8, cfg, seen.append)
    assert len(out["models"]) == 5  # each piecewise model is also evaluated interpolated
    for basis, init in REFINEMENT_MODELS:
        label = f"refinement: training {basis} ({init} init)"
        mine = [m for m in seen if m.startswith(label)]
        assert mine[0] == label and len(mine) == 3
        assert re.fullmatch(re.escape(label) + r" 10/20, loss \d+\.\d{3}", mine[1])
        assert re.fullmatch(re.escape(label) + r" 20/20, loss \d+\.\d{3}", mine[2])
