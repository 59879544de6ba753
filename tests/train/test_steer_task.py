"""``--task steer``: only the ODE block trains (embeddings, head and discrete blocks stay frozen)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from steerflow.errors import ConfigError
from steerflow.train import train
from steerflow.train.metrics import read_metrics


def test_steering_trains_only_the_ode_block(make_cfg):
    lm = make_cfg("lm", steps=6)
    train(lm)
    # the paper's objective (LM loss alone): the consistency penalty on by default for steering
    # (λ = 100) outweighs the LM loss over 12 tiny steps, which then does not fall yet
    steer = make_cfg("steer", task="steer", init_from=lm.out, steer_data="cloze", tokenizer=None,
                     steps=12, lr=3e-3, warmup_steps=0, batch_size=8, ode_consistency=0.0)
    result = train(steer)
    before = load_file(str(Path(lm.out) / "model.safetensors"))
    after = load_file(str(Path(steer.out) / "model.safetensors"))
    # the ODE block trains; α is first reset to 1 (--steer-alpha-value auto, the F output layer
    # takes the old α), then stays there unless --steer-alpha trained
    ode = {k for k in before if k.startswith("ode.") and k != "ode.alpha"}
    assert ode and result.trainable_params == sum(before[k].numel() for k in ode)
    for name in before:
        if name in ode or name == "ode.alpha":
            continue
        assert torch.equal(before[name], after[name]), f"frozen {name} changed"
    assert any(not torch.equal(before[k], after[k]) for k in ode)
    assert float(before["ode.alpha"]) != 1.0
    assert float(after["ode.alpha"]) == result.alpha_start == result.alpha_end == 1.0
    train_records = read_metrics(Path(steer.out) / "metrics.jsonl", "train")
    # the steering loss falls: the field learns to use u on the cloze sentences
    assert train_records[-1]["loss"] < train_records[0]["loss"]
    assert set(result.evals) == {"valid"}  # the steering source's held-out split
    assert result.model.tokenizer.name == "bpe:300"  # the pretrained model's tokenizer is kept


def test_steering_with_discrete_blocks(make_cfg):
    lm = make_cfg("lm2", steps=2)
    train(lm)
    steer = make_cfg("steer2", task="steer", init_from=lm.out, steer_data="cloze", tokenizer=None,
                     steps=2, train_discrete=True)
    result = train(steer)
    counts = result.model.param_counts()
    assert result.trainable_params == counts.ode - 1 + counts.discrete_blocks  # α (a scalar) frozen


def test_train_final_norm_trains_ln_f_and_keeps_embeddings_and_head(make_cfg):
    lm = make_cfg("lm-norm", steps=2)
    train(lm)
    steer = make_cfg("steer-norm", task="steer", init_from=lm.out, steer_data="cloze",
                     tokenizer=None, steps=3, lr=1e-2, warmup_steps=0, train_final_norm=True,
                     steer_anchor=0.5)  # the anchor's lm source is built from this config
    result = train(steer)
    before = load_file(str(Path(lm.out) / "model.safetensors"))
    after = load_file(str(Path(steer.out) / "model.safetensors"))
    norm = {k for k in before if k.startswith("ln_f.")}
    assert norm and all(not torch.equal(before[k], after[k]) for k in norm)
    counts = result.model.param_counts()
    assert result.trainable_params == counts.ode - 1 + sum(before[k].numel() for k in norm)
    for name in before:
        if not name.startswith(("ode.", "ln_f.")):
            assert torch.equal(before[name], after[name]), f"frozen {name} changed"


def test_train_final_norm_is_for_steering_only(make_cfg):
    with pytest.raises(ConfigError, match="train_final_norm applies to task='steer' or 'distill' only"):
        make_cfg("lm-bad", train_final_norm=True)


def test_steer_alpha_value_keep_and_number(make_cfg):
    lm = make_cfg("lm3", steps=4)
    train(lm)
    pretrained = float(load_file(str(Path(lm.out) / "model.safetensors"))["ode.alpha"])
    kept = train(make_cfg("keep", task="steer", init_from=lm.out, steer_data="cloze",
                          tokenizer=None, steps=1, steer_alpha_value="keep"))
    assert kept.alpha_start == pretrained
    set_to = train(make_cfg("set", task="steer", init_from=lm.out, steer_data="cloze",
                            tokenizer=None, steps=1, steer_alpha_value=0.5))
    assert set_to.alpha_start == set_to.alpha_end == 0.5
    init = train(make_cfg("init", task="steer", init_from=lm.out, steer_data="cloze",
                          tokenizer=None, steps=1, steer_alpha_value="init"))
    assert init.alpha_start == torch.tensor(0.1).item()  # the tiny preset's alpha_init


def test_steer_alpha_value_auto_keeps_alpha_of_a_field_it_cannot_rescale(make_cfg):
    lm = make_cfg("lm4", steps=2, model_overrides={"field": "block"})
    train(lm)
    pretrained = float(load_file(str(Path(lm.out) / "model.safetensors"))["ode.alpha"])
    auto = train(make_cfg("auto", task="steer", init_from=lm.out, steer_data="cloze",
                          tokenizer=None, steps=1))
    assert auto.alpha_start == pretrained
    with pytest.raises(ConfigError, match="linear in its output layer"):
        train(make_cfg("number", task="steer", init_from=lm.out, steer_data="cloze",
                       tokenizer=None, steps=1, steer_alpha_value=1.0))


def test_discriminative_steering_logs_the_lm_loss_and_changes_the_update(make_cfg):
    lm = make_cfg("lm5", steps=2)
    train(lm)
    common = dict(task="steer", init_from=lm.out, steer_data="cloze", tokenizer=None, steps=2,
                  batch_size=8, lr=3e-3, warmup_steps=0)
    plain = train(make_cfg("plain", **common))
    gedi = train(make_cfg("gedi", steer_discriminative=0.5, **common))
    plain_loss = [r["loss"] for r in read_metrics(Path(plain.out) / "metrics.jsonl", "train")]
    gedi_loss = [r["loss"] for r in read_metrics(Path(gedi.out) / "metrics.jsonl", "train")]
    # step 1 is scored before any update: the logged loss is the LM loss at the true u in both runs
    assert gedi_loss[0] == plain_loss[0]
    # and the discriminative term changed the first update, so step 2 differs
    assert gedi_loss[1] != plain_loss[1]
    with pytest.raises(ConfigError, match="steer_discriminative"):
        make_cfg("bad", steer_discriminative=1.0)


def test_anchor_adds_lambda_times_the_u0_lm_loss_of_a_wikitext_batch(make_cfg):
    """One padded forward over steering rows and anchor windows gives the gradient of
    ``LM(steer batch at u) + λ · LM(WikiText batch at u = 0)`` computed by separate passes."""
    import torch.nn.functional as F

    from steerflow.train.distributed import init_distributed
    from steerflow.train.loop import Trainer
    from steerflow.train.setup import build_run

    lm = make_cfg("lm6", steps=2)
    train(lm)
    cfg = make_cfg("anchor", task="steer", init_from=lm.out, steer_data="cloze", tokenizer=None,
                   steps=2, batch_size=4, grad_accum=2, steer_anchor=0.5, block_size=16,
                   ode_consistency=0.0)  # the two terms compared here, no third one
    trainer = Trainer(build_run(cfg, init_distributed("cpu")))
    trainer.raw.eval()  # no dropout: the two computations must see the same function
    trainer._backward_batch(0)
    params = [p for p in trainer.raw.parameters() if p.requires_grad]
    fused = [p.grad.clone() for p in params]

    x, y, u = trainer.source.train_batch(0, 4, 0, 1)
    xa, ya, _ = trainer.anchor.train_batch(0, 4, 0, 1)
    assert xa.shape[1] == trainer.raw.config.block_size and x.shape[1] < xa.shape[1]  # padding used
    trainer.optimizer.zero_grad(set_to_none=True)
    logits, _ = trainer.raw(x, u)
    steer = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1,
                            reduction="sum") / int((y != -1).sum())
    logits_a, _ = trainer.raw(xa, torch.zeros(4, u.shape[1]))
    anchor = F.cross_entropy(logits_a.flatten(0, 1), ya.flatten())
    (steer + 0.5 * anchor).backward()
    for got, want in zip(fused, (p.grad for p in params)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert trainer._anchor_loss == pytest.approx(float(anchor.detach()), rel=1e-5)


def test_anchor_is_logged_and_validated(make_cfg):
    lm = make_cfg("lm7", steps=2)
    train(lm)
    run = train(make_cfg("anchored", task="steer", init_from=lm.out, steer_data="cloze",
                         tokenizer=None, steps=2, steer_anchor=1.0))
    records = read_metrics(Path(run.out) / "metrics.jsonl", "train")
    assert all(r["anchor_loss"] > 0 for r in records)
    with pytest.raises(ConfigError, match="steer_anchor must be"):
        make_cfg("neg", task="steer", steer_anchor=-1.0)
    with pytest.raises(ConfigError, match="task='steer' or 'distill' only"):
        make_cfg("lm-anchor", steer_anchor=1.0)


def _pretrain_then_steer(make_cfg, name: str, **steer):
    """A 2-step tiny LM and a cloze steering run from it: ``(lm cfg, steer cfg, TrainResult)``."""
    lm = make_cfg(f"lm-{name}", steps=2)
    train(lm)
    cfg = make_cfg(f"steer-{name}", task="steer", init_from=lm.out, steer_data="cloze",
                   tokenizer=None, warmup_steps=0, **steer)
    return lm, cfg, train(cfg)


def test_control_gain_rewrites_the_field_and_the_checkpoint_keeps_it(make_cfg):
    from steerflow.model.hub import load_model

    lm, steer, _ = _pretrain_then_steer(make_cfg, "gain", steps=1, lr=1e-12, control_gain=25.0)
    base, steered = load_model(lm.out).eval(), load_model(steer.out).eval()
    assert base.config.control_gain == 1.0 and steered.config.control_gain == 25.0
    before = load_file(str(Path(lm.out) / "model.safetensors"))["ode.field.fc_in.linear.weight"]
    after = load_file(str(Path(steer.out) / "model.safetensors"))["ode.field.fc_in.linear.weight"]
    d = base.config.n_embd + 1  # columns [x | τ | u]
    # lr 1e-12: one step leaves the weights where the rewrite put them (W_u / 25)
    torch.testing.assert_close(after[:, d:], before[:, d:] / 25.0, rtol=1e-6, atol=1e-9)
    x = torch.randint(0, base.config.vocab_size, (2, 6))
    torch.testing.assert_close(steered(x, u=1.0)[0], base(x, u=1.0)[0], rtol=1e-4, atol=1e-4)
    for bad in (0.0, -2.0, float("nan")):
        with pytest.raises(ConfigError, match="control_gain"):
            make_cfg("bad-gain", task="steer", init_from=lm.out, steer_data="cloze",
                     tokenizer=None, control_gain=bad)
    with pytest.raises(ConfigError, match="control_gain applies"):
        make_cfg("lm-gain-bad", control_gain=2.0)


def test_control_out_adds_a_zero_path_that_then_learns_u(make_cfg):
    from steerflow.model.hub import load_model

    _, steer, result = _pretrain_then_steer(make_cfg, "out", steps=6, lr=1e-2, control_out=True,
                                            control_gain=10.0)
    weights = load_file(str(Path(steer.out) / "model.safetensors"))
    assert "ode.field.u_out.linear.weight" in weights  # trained with the ODE block
    assert float(weights["ode.field.u_out.linear.weight"].abs().max()) > 0
    steered = load_model(steer.out).eval()
    assert steered.config.control_out and steered.config.control_gain == 10.0
    x = torch.randint(0, steered.config.vocab_size, (2, 6))
    # the loaded model is the trained one, and its u now moves the logits
    torch.testing.assert_close(steered(x, u=1.0)[0], result.model.eval()(x, u=1.0)[0])
    assert not torch.allclose(steered(x, u=1.0)[0], steered(x, u=-1.0)[0])
    with pytest.raises(ConfigError, match="control_out applies"):
        make_cfg("lm-out-bad", control_out=True)
