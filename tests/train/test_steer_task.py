"""``--task steer``: only the ODE block trains (embeddings, head and discrete blocks stay frozen)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from steerflow.train import train
from steerflow.train.metrics import read_metrics


def test_steering_trains_only_the_ode_block(make_cfg):
    lm = make_cfg("lm", steps=6)
    train(lm)
    steer = make_cfg("steer", task="steer", init_from=lm.out, steer_data="cloze", tokenizer=None,
                     steps=12, lr=3e-3, warmup_steps=0, batch_size=8)
    result = train(steer)
    before = load_file(str(Path(lm.out) / "model.safetensors"))
    after = load_file(str(Path(steer.out) / "model.safetensors"))
    # the ODE block trains; α stays at its pretrained value unless --steer-alpha trained
    ode = {k for k in before if k.startswith("ode.") and k != "ode.alpha"}
    assert ode and result.trainable_params == sum(before[k].numel() for k in ode)
    for name in before:
        if name in ode:
            continue
        assert torch.equal(before[name], after[name]), f"frozen {name} changed"
    assert any(not torch.equal(before[k], after[k]) for k in ode)
    assert result.alpha_end == result.alpha_start
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
