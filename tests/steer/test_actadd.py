"""ActAdd: the steering vector, the hook, and coefficient 0 equal to no control bit for bit."""

from __future__ import annotations

import pytest
import torch

from steerflow.errors import InputError
from steerflow.model.gpt import SteerFlowGPT
from steerflow.steer.actadd import (actadd, capture_input, injection_layer, residual_at,
                                    steering_vector, target_module)

from .conftest import tiny_config


def _models():
    torch.manual_seed(4)
    hybrid = SteerFlowGPT(tiny_config()).eval()
    discrete = SteerFlowGPT(tiny_config(ode_span=None)).eval()
    return hybrid, discrete


@pytest.mark.parametrize("kind", ["hybrid", "discrete"])
@torch.no_grad()
def test_coefficient_zero_equals_no_control_exactly(tokenizer, kind):
    model = dict(zip(("hybrid", "discrete"), _models()))[kind]
    vector = steering_vector(model, tokenizer)
    assert float(vector.norm()) > 0
    idx = torch.tensor([tokenizer.encode("The team moved to the north")] * 3)
    logits, _ = model(idx)
    tokens = model.generate(idx, None, 12, top_p=0.9, seed=7)
    with actadd(model, vector, 0.0):
        logits0, _ = model(idx)
        tokens0 = model.generate(idx, None, 12, top_p=0.9, seed=7)
    assert torch.equal(logits, logits0)  # exact: h + 0·v == h in IEEE arithmetic
    assert torch.equal(tokens, tokens0)


@torch.no_grad()
def test_hook_adds_coef_times_vector_at_the_ode_input_and_is_removed(tokenizer):
    model, _ = _models()
    assert target_module(model) is model.ode and injection_layer(model) == model.config.ode_span[0]
    vector = steering_vector(model, tokenizer)
    idx = torch.tensor([tokenizer.encode("The movie was")])
    with capture_input(model.ode) as clean:
        before, _ = model(idx)
    with actadd(model, vector, 3.0):
        with capture_input(model.ode) as steered:  # registered after ActAdd's hook: sees its output
            during, _ = model(idx)
    after, _ = model(idx)
    assert torch.equal(steered[0], clean[0] + 3.0 * vector)
    assert not torch.allclose(before, during)
    assert torch.equal(before, after)  # the hook is gone


@torch.no_grad()
def test_steering_vector_is_the_mean_activation_difference(tokenizer):
    _, model = _models()  # discrete: acts at the block of layer n_layer // 3
    layer = injection_layer(model)
    assert target_module(model) is model.blocks[model.block_layers.index(layer)]
    pairs = [(" good", " bad"), ("Love", "Hate")]
    expected = torch.stack([residual_at(model, tokenizer, p)[-1] - residual_at(model, tokenizer, n)[-1]
                            for p, n in pairs]).mean(0)
    vector = steering_vector(model, tokenizer, pairs)
    assert torch.allclose(vector, expected)
    swapped = steering_vector(model, tokenizer, [(n, p) for p, n in pairs])
    assert torch.allclose(swapped, -vector)


def test_bad_requests(tokenizer):
    model, _ = _models()
    with pytest.raises(InputError, match="inside the ODE span"):
        target_module(model, layer=2)  # tiny: ode_span (1, 3)
    with pytest.raises(InputError, match="shape"):
        with actadd(model, torch.zeros(3), 1.0):
            pass
    with pytest.raises(InputError, match="contrast"):
        steering_vector(model, tokenizer, [])


def test_contrastive_vector_of_identical_sets_is_zero_and_antisymmetric(make_tiny_model):
    """CAA's direction: the same texts on both sides cancel exactly; swapping the sides negates."""
    from steerflow.data import train_bpe
    from steerflow.steer.actadd import contrastive_vector, residual_at

    texts_pos = ["a good film , very good", "great acting", "i loved the story"]
    texts_neg = ["a bad film", "awful plot and boring acting"]
    tok = train_bpe(texts_pos + texts_neg, 280)
    model = make_tiny_model(vocab_size=tok.vocab_size)
    assert torch.equal(contrastive_vector(model, tok, texts_pos, list(texts_pos)),
                       torch.zeros(model.config.n_embd))
    v = contrastive_vector(model, tok, texts_pos, texts_neg)
    torch.testing.assert_close(contrastive_vector(model, tok, texts_neg, texts_pos), -v)
    by_hand = (torch.stack([residual_at(model, tok, t).mean(0) for t in texts_pos]).mean(0)
               - torch.stack([residual_at(model, tok, t).mean(0) for t in texts_neg]).mean(0))
    torch.testing.assert_close(v, by_hand, rtol=1e-5, atol=1e-6)  # float64 vs float32 means
