"""Equivalence of the performance changes (issue 8, and the decoding paths of the peers issue)
with the code they replaced."""

import math

import pytest
import torch

from steerflow.errors import InputError
from steerflow.model.gpt import SteerFlowGPT
from steerflow.model.ode_block import _all_finite

BIG = torch.finfo(torch.float32).max


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, BIG, -BIG, 0.0, 1e-45])
@pytest.mark.parametrize("where", [0, 17, -1])
def test_one_pass_finite_check_equals_isfinite_all(value, where):
    x = torch.randn(3, 5, 7)
    x.view(-1)[where] = value
    assert _all_finite(x) == bool(torch.isfinite(x).all())
    x.view(-1)[3] = BIG        # extremes that would overflow hi - lo stay "finite"
    x.view(-1)[4] = -BIG
    assert _all_finite(x) == bool(torch.isfinite(x).all())


def test_one_pass_finite_check_on_empty_and_float64():
    assert _all_finite(torch.empty(0, 4)) is True
    assert _all_finite(torch.tensor([1.0, math.nan], dtype=torch.float64)) is False


def test_token_range_check_reports_min_and_max(tiny_config):
    model = SteerFlowGPT(tiny_config)
    for bad, text in ((torch.tensor([[3, -2, 7]]), "got min -2, max 7"),
                      (torch.tensor([[3, 512, 7]], dtype=torch.int32), "got min 3, max 512")):
        with pytest.raises(InputError, match=text):
            model(bad)
    logits, _ = model(torch.tensor([[0, 511]]))
    assert logits.shape == (1, 2, 512)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_fused_backprop_gradients_equal_torchdiffeq(tiny_config, method):
    """Direct backprop through the fused loop (u's term computed once per solve, its gradient
    accumulated over the evaluations) equals backprop through torchdiffeq's odeint."""
    from steerflow.config import SolverSpec
    from steerflow.model.ode_block import ODEBlock

    torch.manual_seed(0)
    block = ODEBlock(tiny_config).double()
    with torch.no_grad():
        block.field.fc_out.weight.normal_(std=0.3)
        block.alpha.fill_(0.7)
    h = torch.randn(2, 6, 32, dtype=torch.float64)
    u = torch.tensor([[0.5], [-1.5]], dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 6, 32, dtype=torch.float64)

    def grads(fused):
        block.zero_grad(set_to_none=True)
        u.grad = None
        spec = SolverSpec(method=method, steps=3, adjoint=False, fused=fused)
        (block(h, u, spec) * g).sum().backward()
        return [p.grad.clone() for p in block.parameters()] + [u.grad.clone()]

    # same arithmetic in float64; torchdiffeq's grid times differ by rounding (~1e-16)
    for a, b in zip(grads(True), grads(False)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- decoding (the peers issue)
@pytest.mark.parametrize("capacity", [None, 4, 32])
def test_preallocated_kv_cache_equals_concatenation(capacity):
    """Appends of 3, 1, 1 and 5 positions: the cache holds exactly what torch.cat would, also
    past its capacity (4) and without one."""
    from steerflow.model.layers import KVCache

    cache, ks, vs = KVCache(capacity), [], []
    for t in (3, 1, 1, 5):
        k, v = torch.randn(2, 2, t, 4), torch.randn(2, 2, t, 4)
        ks.append(k)
        vs.append(v)
        got_k, got_v = cache.append(k, v)
        assert torch.equal(got_k, torch.cat(ks, dim=2)) and torch.equal(got_v, torch.cat(vs, dim=2))
        assert cache.length == sum(x.shape[2] for x in ks)
    assert torch.equal(cache.k, torch.cat(ks, dim=2))


def test_vocab_head_equals_linear_for_every_row_count():
    """(W hᵀ)ᵀ for several rows, F.linear and then the transposed copy for one row: the same
    products up to float32 summation order, the copy made after COPY_AFTER single rows only."""
    from steerflow.model.decoding import VocabHead

    weight = torch.randn(300, 16)
    head = VocabHead(weight)
    for rows in (2, 3, 8):
        h = torch.randn(rows, 16)
        torch.testing.assert_close(head(h), torch.nn.functional.linear(h, weight))
    for call in range(VocabHead.COPY_AFTER + 2):
        h = torch.randn(1, 16)
        torch.testing.assert_close(head(h), torch.nn.functional.linear(h, weight))
        assert (head._transposed is not None) == (call + 1 > VocabHead.COPY_AFTER)


@pytest.mark.parametrize("field", [None, "mlp", "block"])
def test_last_state_through_the_head_equals_forward_last_logits(make_tiny_model, field):
    """What decoding computes (ln_f of the last position, then the head) is forward's last row."""
    from steerflow.config import SolverSpec
    from steerflow.model.decoding import VocabHead

    model = make_tiny_model(**({"ode_span": None} if field is None else {"field": field}))
    spec = SolverSpec(method="euler", steps=3)
    idx = torch.randint(0, 512, (3, 9))
    with torch.no_grad():
        full, _ = model(idx, u=0.7, solver=spec)
        last = VocabHead(model.lm_head.weight)(model.last_state(idx, u=0.7, solver=spec))
    # float32: the head multiplies 3 rows where forward multiplies 27, another summation order
    torch.testing.assert_close(last, full[:, -1], rtol=1e-5, atol=1e-6)


def test_last_state_checks_ids_unless_told_they_are_checked(tiny_config):
    model = SteerFlowGPT(tiny_config)
    with pytest.raises(InputError, match="token ids must lie"):
        model.last_state(torch.tensor([[3, 600]]))
    model.last_state(torch.tensor([[3, 6]]), check_ids=False)
    with pytest.raises(InputError, match="exceeds the context length"):
        model.last_state(torch.zeros(1, 33, dtype=torch.long), check_ids=False)


def _nucleus_by_sorting(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """The nucleus as it was computed before: sort with indices, mask, scatter back."""
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(dim=-1)
    drop = (probs.cumsum(dim=-1) - probs) >= top_p
    drop[..., 0] = False
    return torch.full_like(logits, float("-inf")).scatter(
        -1, order, sorted_logits.masked_fill(drop, float("-inf")))


@pytest.mark.parametrize("top_p", [1e-9, 0.3, 0.9, 0.999])
@pytest.mark.parametrize("scale", [0.1, 3.0])
def test_nucleus_from_sorted_values_equals_sort_and_scatter(top_p, scale):
    """The nucleus from the sorted values alone (a cutoff) keeps exactly the tokens the
    sort-mask-scatter rule kept, bit for bit, also after top-k has set some logits to -inf."""
    from steerflow.model.decoding import filter_logits

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5000, generator=gen) * scale
    for top_k in (None, 40):
        ours = filter_logits(logits, 1.0, top_k, top_p)
        before = filter_logits(logits, 1.0, top_k, None)
        assert torch.equal(ours, _nucleus_by_sorting(before, top_p))
