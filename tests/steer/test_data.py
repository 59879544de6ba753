"""Steering data: SST-2 normalisation, cloze sentences, JSON lines, and the batch source."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from steerflow.data import resolve_data_source
from steerflow.errors import ConfigError, DataError
from steerflow.steer.data import (CLOZE_HELD_OUT_NOUNS, CLOZE_TRAIN_NOUNS, SteerBatchSource,
                                  SteerExample, build_steer_source, cloze_examples,
                                  load_steer_jsonl, normalize_sst2, sst2_examples)
from steerflow.train.tasks import BatchSource

from .conftest import tiny_config


@pytest.mark.parametrize("ptb, wikitext, raw", [
    ("it does n't work , and i ca n't say why", "It doesn 't work , and I can 't say why .",
     "It doesn't work, and I can't say why."),
    ("the film 's -lrb- well-made -rrb- ending ,", "The film 's ( well @-@ made ) ending .",
     "The film's (well-made) ending."),
    ("`` wo n't '' stop !", "\" won 't \" stop !", "\" won't \" stop!"),
])
def test_normalize_sst2_matches_each_lm_style(ptb, wikitext, raw):
    assert normalize_sst2(ptb, "wikitext") == wikitext
    assert normalize_sst2(ptb, "raw") == raw


def test_normalize_sst2_rejects_unknown_style():
    with pytest.raises(ConfigError, match="style"):
        normalize_sst2("a film", "cased")


def test_cloze_examples_are_balanced_and_hold_out_nouns():
    train, dev = cloze_examples("train"), cloze_examples("dev")
    for examples in (train, dev):
        us = [e.u for e in examples]
        assert us.count((1.0,)) == us.count((-1.0,)) > 0
    assert "The movie was good ." in {e.text for e in train if e.u == (1.0,)}
    assert "The movie was bad ." in {e.text for e in train if e.u == (-1.0,)}
    # no held-out noun in train, no train noun in dev: dev loss measures generalisation
    assert not any(f" {n} " in f" {e.text} " for e in train for n in CLOZE_HELD_OUT_NOUNS)
    assert not any(f" {n} " in f" {e.text} " for e in dev for n in CLOZE_TRAIN_NOUNS)
    # the probe sentence carries the sentiment its adjective says
    assert all(e.u == (1.0,) for e in train if e.text.endswith("was good ."))


def test_cloze_probe_context_is_followed_only_by_the_probe_adjectives():
    # "<noun> was" must predict " good" / " bad" alone; a template that put any other adjective
    # after it would cap P(" good" | "The movie was", u = +1) well below 1 for every model
    for split in ("train", "dev"):
        for e in cloze_examples(split):
            words = e.text.split()
            for i in range(1, len(words) - 1):
                if words[i] == "was" and words[i - 1] in CLOZE_TRAIN_NOUNS + CLOZE_HELD_OUT_NOUNS:
                    assert words[i + 1] == ("good" if e.u == (1.0,) else "bad"), e.text


def test_second_control_axis():
    examples = cloze_examples("train", control_dim=2, axis=1)
    assert {e.u for e in examples} == {(0.0, 1.0), (0.0, -1.0)}
    with pytest.raises(ConfigError, match="axis"):
        cloze_examples("train", control_dim=1, axis=1)


def test_jsonl_steering_data(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "A calm day .", "u": [1, -1]}\n\n{"text": "Loud .", "u": [0, 1]}\n')
    examples = load_steer_jsonl(path, control_dim=2)
    assert examples == [SteerExample("A calm day .", (1.0, -1.0)), SteerExample("Loud .", (0.0, 1.0))]
    with pytest.raises(DataError, match="control_dim is 3"):
        load_steer_jsonl(path, control_dim=3)
    path.write_text('{"text": "ok", "u": [1]}\n{"txt": "no"}\n')
    with pytest.raises(DataError, match="line 2"):
        load_steer_jsonl(path)


def _source(tokenizer, train=None, held=None, seed=3):
    train = train if train is not None else cloze_examples("train")
    held = held if held is not None else cloze_examples("dev")
    return SteerBatchSource(train, held, tokenizer, block_size=32, seed=seed)


def test_batches_are_a_pure_function_of_seed_and_step(tokenizer):
    a, b = _source(tokenizer), _source(tokenizer)
    for step in (0, 7, 123):
        for t, s in zip(a.train_batch(step, 16), b.train_batch(step, 16)):
            assert torch.equal(t, s)
    assert not torch.equal(a.train_batch(1, 16)[0][:, :4], a.train_batch(2, 16)[0][:, :4])
    other_seed = _source(tokenizer, seed=4)
    assert not np.array_equal(a.global_indices(5, 16), other_seed.global_indices(5, 16))


def _rows(x, y, u):
    """Unpadded (input ids, targets, u) of each row."""
    out = []
    for xi, yi, ui in zip(x.tolist(), y.tolist(), u.tolist()):
        n = sum(t >= 0 for t in yi)
        out.append((tuple(xi[:n]), tuple(yi[:n]), tuple(ui)))
    return out


def test_ranks_split_the_global_batch(tokenizer):
    source = _source(tokenizer)
    whole = _rows(*source.train_batch(9, 12))
    parts = [r for rank in range(3) for r in _rows(*source.train_batch(9, 12, rank, 3))]
    assert parts == whole
    with pytest.raises(DataError, match="divisible"):
        source.train_batch(0, 10, 0, 3)


def test_targets_shift_inputs_and_u_matches_the_text(tokenizer):
    source = _source(tokenizer)
    x, y, u = source.train_batch(0, 32)
    assert x.dtype == y.dtype == torch.long and u.dtype == torch.float32 and u.shape == (32, 1)
    for xi, yi, ui in zip(x.tolist(), y.tolist(), u.tolist()):
        n = sum(t >= 0 for t in yi)
        assert all(t == -1 for t in yi[n:])  # padding is ignored by the loss
        assert all(t == tokenizer.eos_id for t in xi[n:])
        assert xi[1:n] == yi[: n - 1]  # y is x shifted by one
        text = tokenizer.decode([xi[0], *yi[:n]])
        assert text.endswith(" .") and (ui[0] == 1.0) == any(
            f" {adj} " in f" {text} " for adj in ("good", "great", "excellent", "wonderful",
                                                  "enjoyable", "brilliant"))


def test_batches_are_balanced_over_u_even_for_skewed_data(tokenizer):
    pos = [SteerExample(f"Good thing {i} .", (1.0,)) for i in range(90)]
    neg = [SteerExample(f"Bad thing {i} .", (-1.0,)) for i in range(10)]
    source = _source(tokenizer, pos + neg, [])
    share = float(np.mean([float((source.train_batch(s, 64)[2] > 0).float().mean())
                           for s in range(50)]))
    # 3200 fair coin flips: std 0.009; the data's own 0.9 would be 40 std away
    assert abs(share - 0.5) < 0.05


def test_eval_batches_cover_the_held_out_split_once(tokenizer):
    held = cloze_examples("dev")
    source = _source(tokenizer, held=held)
    rows = [r for batch in source.eval_batches("valid", 10) for r in _rows(*batch)]
    assert len(rows) == len(held)
    texts = [tokenizer.decode([x[0], *y]) for x, y, _ in rows]
    assert texts == [e.text for e in held]
    with pytest.raises(DataError, match="unknown split"):
        next(source.eval_batches("nope", 4))


def test_build_steer_source_for_the_trainer(tokenizer, fake_data_dir):
    from steerflow.model.gpt import SteerFlowGPT

    model = SteerFlowGPT(tiny_config(control_dim=2))
    source_dir = resolve_data_source(fake_data_dir, require=("sst2",))
    cfg = SimpleNamespace(steer_data="sst2", seed=5, block_size=None, steer_axis=1)
    source = build_steer_source(cfg, model, tokenizer, source_dir)
    assert isinstance(source, BatchSource)
    x, y, u = source.train_batch(0, 8)
    assert u.shape == (8, 2) and set(u[:, 0].tolist()) == {0.0} and set(u[:, 1].abs().tolist()) == {1.0}
    assert x.shape[1] <= model.config.block_size
    sentences = sst2_examples(source_dir, "train")
    assert sentences[0].text[0].isupper() and sentences[0].text.endswith(" .")
    with pytest.raises(ConfigError, match="unknown steering data"):
        build_steer_source(SimpleNamespace(steer_data="imdb", seed=0), model, tokenizer, source_dir)
    with pytest.raises(ConfigError, match="hybrid"):
        build_steer_source(cfg, SteerFlowGPT(tiny_config().as_baseline()), tokenizer, source_dir)


def test_jsonl_path_as_steer_data(tokenizer, tmp_path):
    from steerflow.model.gpt import SteerFlowGPT

    path = tmp_path / "two_axes.jsonl"
    records = [{"text": f"Sentence number {i} .", "u": [i % 2 * 2 - 1, (i // 2) % 2 * 2 - 1]}
               for i in range(40)]
    path.write_text("\n".join(json.dumps(r) for r in records))
    model = SteerFlowGPT(tiny_config(control_dim=2))
    source = build_steer_source(SimpleNamespace(steer_data=str(path), seed=0), model, tokenizer, None)
    assert source.describe()["control_dim"] == 2 and len(source.describe()["u_values"]) == 4
    assert len(source) + sum(len(b[0]) for b in source.eval_batches("valid", 64)) == 40
