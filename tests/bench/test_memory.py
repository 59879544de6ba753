"""Peak-memory measurement: the tracker counts allocations exactly, and the adjoint's memory does
not grow with the number of Euler steps while direct backprop's does."""

import pytest
import torch

from steerflow.bench.memory import TensorMemoryTracker, measure_step_memory
from steerflow.config import SolverSpec
from steerflow.errors import ConfigError

MB = 2**20


def test_tracker_counts_live_storages_and_their_release():
    a0 = torch.ones(10)
    with TensorMemoryTracker() as tracker:
        a = torch.zeros(1024, 256)           # 1 MiB
        b = torch.zeros(512, 256)            # 0.5 MiB, peak 1.5 MiB
        del a
        c = torch.zeros(256, 256)            # 0.25 MiB, live 0.75 MiB
        view = b[:10].t()                    # a view allocates nothing
        b.add_(1.0)                          # in place: nothing
        d = a0 * 2                           # 40 bytes
        del view
    assert tracker.peak == MB + MB // 2
    assert tracker.current == MB // 2 + MB // 4 + 40
    assert c.shape == (256, 256) and d.sum() == 20


def test_tracker_sees_autograd_backward():
    w = torch.randn(256, 256, requires_grad=True)  # exists before: its storage is not counted
    x = torch.randn(64, 256)
    with TensorMemoryTracker() as tracker:
        (x @ w).relu().sum().backward()
    # at least the (64, 256) activation and the (256, 256) weight gradient were alive together
    assert tracker.peak >= (64 * 256 + 256 * 256) * 4
    assert tracker.current == 256 * 256 * 4     # only w.grad outlives the step


@pytest.mark.parametrize("scope", ["ode", "model"])
def test_adjoint_memory_is_flat_and_backprop_grows_with_steps(tiny_config, scope):
    """4 → 32 Euler steps: the adjoint stores no per-step activations, direct backprop stores
    about 8× as many; the bounds leave room for the step-independent part of the step."""
    def peak(steps, adjoint):
        spec = SolverSpec(method="euler", steps=steps, adjoint=adjoint)
        return measure_step_memory(tiny_config, spec, scope, batch_size=4).peak_bytes

    adjoint = peak(32, True) / peak(4, True)
    direct = peak(32, False) / peak(4, False)
    assert adjoint < 1.05  # the only step-dependent storage is the time grid
    assert direct > (4.0 if scope == "ode" else 1.5)


def test_ode_scope_needs_a_hybrid(tiny_config):
    with pytest.raises(ConfigError, match="hybrid"):
        measure_step_memory(tiny_config.as_baseline(), SolverSpec(), "ode")
    with pytest.raises(ConfigError, match="scope"):
        measure_step_memory(tiny_config, SolverSpec(), "everything")
