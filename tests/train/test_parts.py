"""The loop's parts: config validation, LR schedule, AdamW groups, batch sources, tokenizer cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from steerflow.config import ModelConfig
from steerflow.data import prepare_lm_data, resolve_data_source
from steerflow.errors import ConfigError
from steerflow.model.gpt import SteerFlowGPT
from steerflow.train import BatchSource, LMBatchSource, TrainConfig
from steerflow.train.optim import WarmupCosine, param_groups
from steerflow.train.tasks import load_tokenizer


def test_config_fills_preset_defaults_and_roundtrips(tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "r"), config="small")
    assert (cfg.steps, cfg.batch_size, cfg.tokenizer) == (300, 32, "bpe:4096")
    assert TrainConfig(out="x", config="paper").tokenizer == "gpt2"
    path = tmp_path / "c.json"
    path.write_text(cfg.to_json())
    assert TrainConfig.from_json(path) == cfg
    with pytest.raises(ConfigError, match="unknown TrainConfig key"):
        TrainConfig.from_dict({**cfg.to_dict(), "learning_rate": 1.0})
    with pytest.raises(ConfigError, match="steps must be"):
        TrainConfig(out="x", steps=True)  # a bool is not a step count
    for bad in ("half", 0.0, -0.1, float("nan"), True):
        with pytest.raises(ConfigError, match="steer_alpha_value"):
            TrainConfig(out="x", steer_alpha_value=bad)
    assert TrainConfig(out="x", steer_alpha_value=0.25).steer_alpha_value == 0.25


def test_warmup_cosine_schedule():
    m = WarmupCosine(warmup=10, total=110, min_ratio=0.1)
    assert m(0) == pytest.approx(0.1) and m(9) == pytest.approx(1.0)
    assert m(60) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the cosine
    assert m(110) == pytest.approx(0.1) and m(500) == pytest.approx(0.1)
    after = [m(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(after, after[1:]))


def test_param_groups_decay_only_weight_matrices():
    model = SteerFlowGPT(ModelConfig.from_name("tiny"))
    decay, no_decay = param_groups(model, 0.1)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    no_decay_ids = ids(no_decay["params"])
    assert id(model.ode.alpha) in no_decay_ids and id(model.wte.weight) in no_decay_ids
    assert id(model.wpe.weight) in no_decay_ids and id(model.ln_f.weight) in no_decay_ids
    assert all(p.ndim >= 2 for p in decay["params"]) and id(model.lm_head.weight) in ids(decay["params"])
    for m in model.modules():
        if isinstance(m, nn.LayerNorm) or isinstance(m, nn.Linear) and m.bias is not None:
            assert id(m.bias if isinstance(m, nn.Linear) else m.weight) in no_decay_ids
    total = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert total == model.num_params()


@pytest.fixture
def lm_source(data_dir, cache_dir):
    source = resolve_data_source(str(data_dir), require=("wikitext-2",))
    tokenizer = load_tokenizer("bpe:300", source, cache_dir)
    prepared = prepare_lm_data(source, tokenizer, cache_dir, progress=False)
    return lambda lm_u: LMBatchSource(prepared, 16, seed=3, lm_u=lm_u, control_dim=2)


def test_lm_source_ranks_partition_the_global_batch(lm_source):
    src = lm_source("random")
    assert isinstance(src, BatchSource)
    x, y, u = src.train_batch(5, 8, 0, 1)
    parts = [src.train_batch(5, 8, r, 4) for r in range(4)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert torch.equal(torch.cat([p[2] for p in parts]), u)
    assert torch.equal(y[:, :-1], x[:, 1:])  # next-token targets
    assert u.shape == (8, 2) and float(u.abs().max()) <= 1.0
    assert torch.equal(src.train_batch(5, 8, 0, 1)[2], u)  # a pure function of (seed, step)
    assert not torch.equal(src.train_batch(6, 8, 0, 1)[2], u)
    assert lm_source("zero").train_batch(5, 8, 0, 1)[2] is None
    x_eval, _, u_eval = next(iter(src.eval_batches("valid", 4)))
    assert x_eval.shape == (4, 16) and u_eval is None


def test_trained_tokenizer_is_cached_and_a_damaged_cache_rebuilt(data_dir, tmp_path):
    source = resolve_data_source(str(data_dir), require=("wikitext-2",))
    first = load_tokenizer("bpe:280", source, tmp_path)
    (folder,) = (tmp_path / "tokenizers").iterdir()
    stamp = (folder / "tokenizer.json").stat().st_mtime_ns
    assert load_tokenizer("bpe:280", source, tmp_path).content_hash() == first.content_hash()
    assert (folder / "tokenizer.json").stat().st_mtime_ns == stamp  # reused, not retrained
    (folder / "tokenizer.json").write_text("{ not json")
    assert load_tokenizer("bpe:280", source, tmp_path).content_hash() == first.content_hash()
