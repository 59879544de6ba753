"""One check shared by the generation tests: KV-cache decoding equals full recompute."""

from __future__ import annotations

import torch

from steerflow.config import SolverSpec

CACHE_TOL = dict(rtol=1e-4, atol=1e-5)  # float32: one row vs a block's sums


def assert_cached_decoding_equals_recompute(model, solver: str, steps: int) -> None:
    """Greedy decoding with a KV cache gives the last-position logits of a full forward pass at
    every one of ``steps`` steps (two rows, u = 0.8 and -1.2); and the cache holds every token."""
    spec = SolverSpec.parse(solver)
    assert model.can_cache(spec)
    seq = torch.randint(0, 512, (2, 5))
    u = torch.tensor([0.8, -1.2])
    cache = model.new_cache(spec)
    with torch.no_grad():
        cached, _ = model(seq, u, solver=spec, cache=cache)
        for _ in range(steps):
            full, _ = model(seq, u, solver=spec)
            torch.testing.assert_close(cached[:, -1], full[:, -1], **CACHE_TOL)
            token = full[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, token], dim=1)
            cached, _ = model(token, u, solver=spec, cache=cache)
        assert cache.length == seq.shape[1]
