"""Peak memory of one training step: a tensor-allocation tracker on CPU, the allocator on CUDA.

On CPU there is no caching allocator to ask, and a process's resident set mixes tensors with
malloc's retained pool and lazily mapped library code. :class:`TensorMemoryTracker` instead
watches every ATen operator call (a ``TorchDispatchMode``, the same hook as
``torch.utils.flop_counter.FlopCounterMode``, so autograd's backward ops are seen too): each
freshly allocated output storage adds its bytes, and a weak-reference finaliser subtracts them
when the storage is freed. Outputs that alias an input (views, in-place and ``out=`` ops, as
declared by the operator's schema) allocate nothing and are skipped. The peak of the running sum
is the step's peak tensor memory above what was alive before it; scratch buffers that a kernel
allocates and frees internally are not tensors and are not counted.

On CUDA :func:`peak_step_memory` uses ``torch.cuda.max_memory_allocated`` instead.

Two scopes: ``ode`` is the ODE block alone (forward + backward of ``⟨H(1), g⟩`` for a fixed random
``g``), the part of a training step whose memory depends on the solver; ``model`` is a whole
training step of the hybrid (forward, cross-entropy, backward, AdamW step).
"""

from __future__ import annotations

import gc
import weakref
from dataclasses import asdict, dataclass
from typing import Callable

from steerflow.config import ModelConfig, SolverSpec
from steerflow.errors import ConfigError

SCOPES = ("ode", "model")


def _tracker_class():
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class TensorMemoryTracker(TorchDispatchMode):
        """Running and peak bytes of tensor storages allocated inside the ``with`` block."""

        def __init__(self) -> None:
            super().__init__()
            self.current = 0
            self.peak = 0
            self._live: dict[int, weakref.finalize] = {}

        def _release(self, key: int, nbytes: int) -> None:
            self.current -= nbytes
            self._live.pop(key, None)

        def _track(self, t) -> None:
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or key in self._live:
                return
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            self._live[key] = weakref.finalize(storage, self._release, key, nbytes)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            returns = func._schema.returns
            outputs = out if isinstance(out, (tuple, list)) else (out,)
            for i, value in enumerate(outputs):
                aliased = i < len(returns) and returns[i].alias_info is not None
                if aliased:
                    continue
                for t in tree_flatten(value)[0]:
                    if isinstance(t, torch.Tensor) and t.device.type != "meta":
                        self._track(t)
            return out

        def __exit__(self, *exc):
            result = super().__exit__(*exc)
            for fin in list(self._live.values()):  # stop counting: storages may outlive us
                fin.detach()
            self._live.clear()
            return result

    return TensorMemoryTracker


def TensorMemoryTracker():  # noqa: N802 - a factory that looks like the class it builds
    """A fresh tracker (the class is built on first use so that ``import`` stays light)."""
    return _tracker_class()()


@dataclass(frozen=True)
class MemoryMeasurement:
    """Peak extra memory (bytes) of one training step, and how it was measured."""

    scope: str
    solver: str
    peak_bytes: int
    method: str

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20

    def as_dict(self) -> dict:
        return {**asdict(self), "peak_mb": self.peak_mb}


def peak_step_memory(step: Callable[[], None], device: str = "cpu") -> tuple[int, str]:
    """Peak bytes that ``step()`` allocated above what was alive before it, and the method used.

    Call it after a warm-up step, so that lazily created state (optimizer moments) already exists.
    """
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, "cuda max_memory_allocated"
    with TensorMemoryTracker() as tracker:
        step()
    return tracker.peak, "tensor allocation tracker (TorchDispatchMode)"


def _ode_step(config: ModelConfig, solver: SolverSpec, batch_size: int, seq_len: int,
              device: str, seed: int) -> Callable[[], None]:
    """Forward + backward through the ODE block alone, with a random cotangent ``g``."""
    import torch

    from steerflow.model.ode_block import ODEBlock

    gen = torch.Generator().manual_seed(seed)
    block = ODEBlock(config).to(device).train()
    shape = (batch_size, seq_len, config.n_embd)
    h0 = torch.randn(shape, generator=gen).to(device).requires_grad_()  # (B, T, d)
    g = torch.randn(shape, generator=gen).to(device)                    # (B, T, d)
    u = torch.zeros(batch_size, config.control_dim, device=device)      # (B, c)

    def step() -> None:
        (block(h0, u, solver) * g).sum().backward()
        block.zero_grad(set_to_none=True)
        h0.grad = None

    return step


def _model_step(config: ModelConfig, solver: SolverSpec, batch_size: int, seq_len: int,
                device: str, seed: int) -> Callable[[], None]:
    """One whole training step of the model: forward, loss, backward, AdamW, zero_grad."""
    import torch

    from steerflow.model.gpt import SteerFlowGPT

    gen = torch.Generator().manual_seed(seed)
    model = SteerFlowGPT(config.replace(train_solver=solver)).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, config.vocab_size, (batch_size, seq_len), generator=gen).to(device)
    y = torch.randint(0, config.vocab_size, (batch_size, seq_len), generator=gen).to(device)

    def step() -> None:
        _, loss = model(x, targets=y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def measure_step_memory(config: ModelConfig, solver: SolverSpec, scope: str = "ode", *,
                        batch_size: int = 8, seq_len: int | None = None, device: str = "cpu",
                        seed: int = 0) -> MemoryMeasurement:
    """Peak extra memory of one training step (after one warm-up step) under ``solver``."""
    if scope not in SCOPES:
        raise ConfigError(f"unknown memory scope {scope!r}; choose one of {', '.join(SCOPES)}")
    if scope == "ode" and not config.is_hybrid:
        raise ConfigError("the 'ode' memory scope needs a hybrid config (ode_span set)")
    build = _ode_step if scope == "ode" else _model_step
    step = build(config, solver, batch_size, seq_len or config.block_size, device, seed)
    step()  # warm-up: optimizer moments and gradient buffers exist from here on
    peak, method = peak_step_memory(step, device)
    return MemoryMeasurement(scope=scope, solver=solver.describe(), peak_bytes=int(peak),
                             method=method)
