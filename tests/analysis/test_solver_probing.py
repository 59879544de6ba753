"""Solver probing: NFE counting, NFE sweeps, linear probes over depth, figures."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from steerflow.config import SolverSpec
from steerflow.errors import InputError
from steerflow.analysis.inputs import control_batch
from steerflow.analysis.solver_probing import (
    ProbeSettings, count_nfe, count_nfe_per_example, depth_features, encode_sentences,
    format_report, growth_exponent, probe_accuracy, run_probe, solver_agreement, write_figures)
from steerflow.model.vector_fields import VectorField

WORDS = "the a movie film was is plot story very quite".split()


class CountingField(VectorField):
    """Wraps a vector field and counts its calls."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.position_wise = inner.position_wise
        self.calls = 0

    def forward(self, tau, h, u, cache=None):
        self.calls += 1
        return self.inner(tau, h, u, cache)


def _sentences(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """Sentences whose label is carried by one word, so a probe can find it."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 9))]
        words.insert(rng.randint(0, len(words)), "good" if label else "bad")
        out.append((" ".join(words), label))
    return out


@pytest.fixture
def tiny_with_tokenizer(make_tiny_model):
    from steerflow.data import train_bpe

    model = make_tiny_model()
    model.tokenizer = train_bpe([s for s, _ in _sentences(200, seed=1)], 300)
    return model


@pytest.mark.parametrize("method", ["dopri5", "adaptive_heun", "bosh3"])
def test_nfe_equals_the_number_of_field_calls(make_tiny_model, single_thread, method):
    model = make_tiny_model()
    model.ode.field = CountingField(model.ode.field)
    x = torch.randint(0, 512, (3, 10))
    with torch.no_grad():
        h0 = model.ode_input(x)
        u = control_batch(model, 1.0, 3)
        spec = SolverSpec(method=method, steps=None, rtol=1e-5, atol=1e-6)
        model.ode.field.calls = 0
        count = count_nfe(model, h0, u, spec)
        assert count.nfe == model.ode.field.calls > 0
        assert count.accepted >= 1
        model.ode.field.calls = 0
        each = count_nfe_per_example(model, h0, u, spec)
        assert len(each) == 3
        assert sum(c.nfe for c in each) == model.ode.field.calls


def test_batch_nfe_lies_between_its_examples(make_tiny_model, single_thread):
    """torchdiffeq controls a batch's step size by the RMS error over the whole batch, which lies
    between the easiest and the hardest example's; the step sequences are path-dependent, so
    allow one dopri5 step (6 evaluations) either side."""
    model = make_tiny_model()
    x = torch.randint(0, 512, (4, 16))
    with torch.no_grad():
        h0 = model.ode_input(x)
        u = control_batch(model, -1.0, 4)
        spec = SolverSpec(method="dopri5", steps=None, rtol=1e-6, atol=1e-7)
        batch = count_nfe(model, h0, u, spec)
        each = count_nfe_per_example(model, h0, u, spec)
    assert min(c.nfe for c in each) - 6 <= batch.nfe <= max(c.nfe for c in each) + 6


def test_solver_agreement_and_growth_exponent():
    rows = [{"method": m, "u": 0.0, "nfe_per_batch": n, "nfe_per_example": n,
             "steps_per_batch": s, "steps_per_example": s}
            for m, n, s in (("dopri5", 20, 3), ("adaptive_heun", 23, 3))]
    (agree,) = solver_agreement(rows)
    assert agree["nfe_per_batch"] == pytest.approx(0.15)
    assert agree["steps_per_batch"] == 0
    tols = [1e-3, 1e-4, 1e-5, 1e-6]
    assert growth_exponent(tols, [14 * (1e-3 / t) ** 0.2 for t in tols]) == pytest.approx(0.2)


def test_encode_sentences_pads_right_and_masks(tiny_with_tokenizer):
    tok = tiny_with_tokenizer.tokenizer
    idx, mask = encode_sentences(tok, ["a movie", "the plot was very very good"], block_size=32)
    assert idx.shape == mask.shape and mask[1].all()
    n0 = len(tok.encode("a movie"))
    assert mask[0].sum() == n0 and (idx[0, n0:] == tok.eos_id).all()
    idx, mask = encode_sentences(tok, ["the plot was very very good"], block_size=3)
    assert idx.shape == (1, 3)


def test_depth_features_do_not_depend_on_padding(tiny_with_tokenizer, single_thread):
    """Causal attention + right padding: a sentence's pooled states are the same alone or padded
    in a batch (a fixed-step solver, so the steps match; float32 round-off only)."""
    model = tiny_with_tokenizer
    tok = model.tokenizer
    sents = ["a movie", "the plot was very quite good and the film was bad"]
    spec = SolverSpec(method="rk4", steps=6)
    taus = (0.0, 1 / 3, 0.5, 1.0)
    idx, mask = encode_sentences(tok, sents, 32)
    both = depth_features(model, idx, mask, taus, spec)
    alone = depth_features(model, *encode_sentences(tok, sents[:1], 32), taus, spec)
    assert both.shape == (4, 2, 32)
    np.testing.assert_allclose(both[:, :1], alone, rtol=1e-5, atol=1e-6)
    assert not np.allclose(both[0], both[-1])  # the live field moves the states


def test_probe_accuracy_finds_a_signal_and_not_noise():
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 2
    signal = rng.normal(size=(200, 8)) + 3.0 * labels[:, None]
    assert probe_accuracy(signal, labels)[0] > 0.95
    noise = rng.normal(size=(200, 8))
    assert probe_accuracy(noise, labels)[0] < 0.7
    with pytest.raises(InputError, match="each class"):
        probe_accuracy(noise[:6], np.array([0, 0, 0, 0, 0, 1]))


def test_run_probe_on_tiny_writes_everything(tiny_with_tokenizer, single_thread, tmp_path):
    model = tiny_with_tokenizer
    batches = [(torch.randint(0, 300, (2, 16)), None) for _ in range(2)]
    settings = ProbeSettings(us=(-1.0, 0.0, 1.0), tolerances=(1e-3, 1e-6), max_examples=3,
                             taus=(0.0, 0.5, 0.67, 1.0), folds=3)
    result = run_probe(model, batches, _sentences(30), settings)
    assert {(r["method"], r["u"]) for r in result.nfe_vs_u} == {
        (m, u) for m in ("dopri5", "adaptive_heun") for u in (-1.0, 0.0, 1.0)}
    for r in result.nfe_vs_u:
        assert r["examples"] == 3 and r["batches"] == 2
        assert r["nfe_per_example_min"] <= r["nfe_per_example"] <= r["nfe_per_example_max"]
    assert len(result.agreement) == 3
    (summary,) = [s for s in result.tolerance_summary if s["u"] == 0.0]
    assert summary["nfe_1000x_tighter"] >= summary["nfe_loose"]
    probes = result.probes
    assert [r["tau"] for r in probes["by_tau"]] == [0.0, 0.5, 0.67, 1.0]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in probes["by_tau"])
    assert probes["majority_baseline"] == 0.5
    names = write_figures(result, tmp_path)
    assert names == ["fig3.png", "fig4.png", "probe_accuracy.png"]
    for name in names:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = format_report(result)
    assert "per example" in text and "14 → 26" in text
    assert result.as_dict()["paper"]["dopri5_nfe_positive_u"] == 14


def test_probe_settings_reject_bad_values():
    with pytest.raises(InputError, match="adaptive"):
        ProbeSettings(methods=("euler",))
    with pytest.raises(InputError, match="taus"):
        ProbeSettings(taus=(0.5, 1.0))
    with pytest.raises(InputError, match="folds"):
        ProbeSettings(folds=1)
