"""Open-ended evaluation: sampling, continuation perplexity, judges, and the method comparison."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from steerflow.data import load_sst2, resolve_data_source
from steerflow.errors import InputError
from steerflow.model.gpt import SteerFlowGPT
from steerflow.steer.evaluate import ode_beats, rate_difference_z, target_checks, tradeoff, u_key
from steerflow.steer.open_ended import (SamplingSpec, Scorer, continuation_nll, judge_summary,
                                        sample_continuations)
from steerflow.steer.prompts import neutral_prompts, read_prompts_file, sentence_openings

from .conftest import tiny_config

PROMPTS = ["The team moved to", "She crossed the", "The river reached the north of"]


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(5)
    m = SteerFlowGPT(tiny_config()).eval()
    m.tokenizer = tokenizer
    return m


def test_continuations_are_seeded_and_exclude_the_prompt(model, tokenizer):
    spec = SamplingSpec(samples=3, max_new_tokens=6, top_p=0.9, seed=11)
    a = sample_continuations(model, tokenizer, PROMPTS, 1.0, spec)
    b = sample_continuations(model, tokenizer, PROMPTS, 1.0, spec)
    assert [c.tokens for c in a] == [c.tokens for c in b]
    assert [(c.prompt_index, c.sample) for c in a] == [(i, k) for i in range(3) for k in range(3)]
    for c in a:
        assert c.prompt == PROMPTS[c.prompt_index] and c.text == tokenizer.decode(c.tokens)
        assert len(c.tokens) <= 6 and tokenizer.eos_id not in c.tokens
    other = sample_continuations(model, tokenizer, PROMPTS, 1.0, SamplingSpec(3, 6, seed=12))
    assert [c.tokens for c in a] != [c.tokens for c in other]


@torch.no_grad()
def test_continuation_nll_equals_a_direct_computation(model, tokenizer):
    prompts = [tokenizer.encode(p) for p in PROMPTS]
    conts = [tokenizer.encode(" the old harbour ."), tokenizer.encode(" a town"), []]
    total, n = continuation_nll(model, prompts, conts, pad_id=tokenizer.eos_id)
    expected = 0.0
    for p, c in zip(prompts[:2], conts[:2]):
        logits, _ = model(torch.tensor([p + c]))
        logp = logits[0].double().log_softmax(-1)
        expected -= sum(float(logp[len(p) - 1 + i, t]) for i, t in enumerate(c))
    assert n == len(conts[0]) + len(conts[1])  # the empty continuation adds nothing
    # float32 logits; right padding must not change any log-probability
    assert total == pytest.approx(expected, rel=1e-5)


def test_scorer_reencodes_text_for_another_tokenizer(model, tokenizer):
    from steerflow.data.tokenizer import train_bpe

    spec = SamplingSpec(samples=2, max_new_tokens=5, seed=1)
    conts = sample_continuations(model, tokenizer, PROMPTS, 0.0, spec)
    same = Scorer("same", model, tokenizer).perplexity(conts, tokenizer)
    other_tok = train_bpe(["the north of the city . the river ."] * 10, 300)
    other = SteerFlowGPT(tiny_config()).eval()
    other_ppl = Scorer("other", other, other_tok).perplexity(conts, tokenizer)
    assert math.isfinite(same) and math.isfinite(other_ppl) and same > 1 and other_ppl > 1


class _Fixed:
    """A judge with fixed labels (to test the bookkeeping, not sentiment)."""

    def __init__(self, name, labels):
        self.name, self.labels = name, np.asarray(labels, dtype=bool)

    def is_positive(self, texts):
        return self.labels[: len(texts)]


def test_judge_summary_rates_and_agreement():
    summary = judge_summary(["a", "b", "c", "d"], [_Fixed("x", [1, 1, 0, 0]), _Fixed("y", [1, 0, 0, 0])])
    assert summary["positive_rate"] == {"x": 0.5, "y": 0.25}
    assert summary["agreement"] == {"x|y": 0.75}
    # kappa = (0.75 − 0.5) / (1 − 0.5) with chance agreement 0.5·0.25 + 0.5·0.75 = 0.5
    assert summary["kappa"]["x|y"] == pytest.approx(0.5)


def test_judges_agree_on_clear_cases():
    """VADER and the SST-2 classifier (trained on 8,000 real SST-2 sentences) agree on clear text."""
    from steerflow.steer.judges.pretrained import VaderJudge
    from steerflow.steer.judges.sst2 import SST2ClassifierJudge, TfidfConfig

    try:
        source = resolve_data_source(require=("sst2",), allow_hub=False)
    except Exception:
        pytest.skip("real SST-2 data not available ($STEERFLOW_DATA)")
    train = load_sst2(source, "train")
    rng = np.random.default_rng(0)
    subset = [train[i] for i in rng.choice(len(train), 8000, replace=False)]
    judge = SST2ClassifierJudge.train(subset, load_sst2(source, "dev"),
                                      config=TfidfConfig(char_ngrams=None))
    # word 1-2-gram logistic regression on 8k SST-2 sentences reaches ~0.78 dev accuracy;
    # 0.70 leaves room for the subset and still fails a broken feature pipeline (chance: 0.51)
    assert judge.dev_accuracy > 0.70
    positive = ["A wonderful , moving and beautiful film .", "Great acting and a brilliant story .",
                "The best concert I have ever seen ."]
    negative = ["A dull , boring and awful mess .", "I hated this tedious movie .",
                "The worst meal I have ever eaten ."]
    vader = VaderJudge()
    for j in (vader, judge):
        assert j.is_positive(positive).all() and not j.is_positive(negative).any()
    summary = judge_summary(positive + negative, [vader, judge])
    assert summary["agreement"] == {"vader|sst2-tfidf": 1.0}


def _setting(value, rate, ppl):
    return {"value": value, "mean_positive_rate": rate, "perplexity": ppl}


def test_tradeoff_picks_the_best_rate_within_the_perplexity_budget():
    ode = {u_key(v): _setting(v, r, p) for v, r, p in
           [(-1, 0.1, 11.0), (0, 0.5, 10.0), (1, 0.8, 12.0), (2, 0.99, 20.0)]}
    act = {u_key(v): _setting(v, r, p) for v, r, p in
           [(-4, 0.05, 30.0), (0, 0.5, 10.0), (4, 0.9, 30.0)]}
    trade = tradeoff({"ode": ode, "actadd": act}, reference_ppl=10.0, budget=1.25)
    assert trade["perplexity_limit"] == 12.5
    assert trade["best"]["ode"]["positive"] == {"rate": 0.8, "value": 1.0, "perplexity": 12.0,
                                                "n": None}
    assert trade["best"]["ode"]["negative"]["rate"] == pytest.approx(0.9)
    assert trade["best"]["actadd"]["positive"]["value"] == 0.0  # coef 4 is too disfluent
    assert ode_beats(trade, "actadd") is True
    act["+4"]["perplexity"] = 12.0  # now ActAdd reaches 0.9 within budget: ODE's 0.8 loses
    assert ode_beats(tradeoff({"ode": ode, "actadd": act}, 10.0), "actadd") is False


def test_beating_actadd_needs_a_margin_beyond_sampling_noise():
    def methods(n, ode_pos, act_pos):
        ode = {u_key(v): dict(_setting(v, r, 10.0), n=n) for v, r in [(-1, 0.3), (1, ode_pos)]}
        act = {u_key(v): dict(_setting(v, r, 10.0), n=n) for v, r in [(-1, 0.5), (1, act_pos)]}
        return tradeoff({"ode": ode, "actadd": act}, reference_ppl=10.0)

    # 0.375 vs 0.33 on 200 samples each: z = 0.045 / 0.0477 ≈ 0.94 — within noise, not a win
    trade = methods(200, 0.375, 0.33)
    assert rate_difference_z(trade["best"]["ode"]["positive"], trade["best"]["actadd"]["positive"]) \
        == pytest.approx(0.045 / math.sqrt(0.375 * 0.625 / 200 + 0.33 * 0.67 / 200))
    assert ode_beats(trade, "actadd") is False
    # the same rates on 2000 samples each: z ≈ 2.98 positive; negative 0.7 vs 0.5 — a win
    assert ode_beats(methods(2000, 0.375, 0.33), "actadd") is True
    # results without sample counts compare the rates as exact
    assert ode_beats(methods(None, 0.375, 0.33), "actadd") is True


def test_target_checks_read_the_issue_targets():
    probe = {"+1": {"p_good": 0.99, "p_bad": 0.001, "share": 0.999},
             "0": {"p_good": 0.5, "p_bad": 0.4, "share": 0.55},
             "-1": {"p_good": 0.01, "p_bad": 0.9, "share": 0.011}}
    oe = {"+1": {"positive_rate": {"a": 0.95, "b": 0.85}, "perplexity": 11.0},
          "0": {"positive_rate": {"a": 0.5, "b": 0.5}, "perplexity": 10.0},
          "-1": {"positive_rate": {"a": 0.05, "b": 0.02}, "perplexity": 12.0}}
    checks = target_checks({"probe": probe, "open_ended": oe,
                            "sweep": {"monotone": True, "max_violation": {"share": 0.0}}})
    assert checks["cloze_p_good_at_+1>=0.98"]["met"] and not checks["cloze_p_bad_at_-1>=0.95"]["met"]
    assert checks["sst2_share_at_+1>=0.95"]["met"] and checks["sst2_share_at_-1<=0.05"]["met"]
    assert not checks["open_ended_positive_at_+1>=0.90_all_judges"]["met"]  # judge b: 0.85
    assert checks["open_ended_positive_at_-1<=0.10_all_judges"]["met"]
    assert checks["perplexity_at_+-1<=1.25x_u0"]["value"] == pytest.approx(1.2)
    # a model steered on cloze text is held to the raw-probability targets only, one steered on
    # SST-2 to the share targets only (the share of a cloze model is not an SST-2 result)
    for data, kept, dropped in (("cloze", "cloze_p", "sst2_share"), ("sst2", "sst2_share", "cloze_p")):
        names = set(target_checks({"probe": probe, "steer_data": data, "open_ended": oe,
                                   "sweep": {"monotone": True, "max_violation": {"share": 0.0}}}))
        assert any(n.startswith(kept) for n in names)
        assert not any(n.startswith(dropped) for n in names)


def test_sentence_openings_and_neutral_prompts(fake_data_dir):
    text = (" = Heading = \n The team moved to the north of the city . It 's 1990 and the "
            "<unk> rose . The happy crowd cheered loudly for the team . \n")
    assert sentence_openings(text, 4, 6) == ["The team moved to", "The happy crowd cheered"]
    prompts = neutral_prompts(resolve_data_source(fake_data_dir, require=("wikitext-2",)), n=8)
    assert len(prompts) == 8 == len(set(prompts))
    assert all(len(p.split()) == 5 and p[0].isupper() for p in prompts)
    with pytest.raises(Exception, match="neutral"):
        neutral_prompts(resolve_data_source(fake_data_dir, require=("wikitext-2",)), n=10_000)


def test_read_prompts_file(tmp_path: Path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "Hello there"}\n\n{"prompt": {"text": "RTP style"}}\n')
    assert read_prompts_file(jsonl) == ["Hello there", "RTP style"]
    plain = tmp_path / "p.txt"
    plain.write_text("First prompt\n\nSecond one \n")
    assert read_prompts_file(plain) == ["First prompt", "Second one "]
    jsonl.write_text('{"prompt": "ok"}\n{"text": "a text field"}\n')
    assert read_prompts_file(jsonl) == ["ok", "a text field"]  # "text" stands for "prompt"
    for bad in ('{"id": 3}', '{"prompt": 5}', '["a list"]'):
        jsonl.write_text('{"prompt": "ok"}\n' + bad + "\n")
        with pytest.raises(InputError, match=r"line 2.*\"prompt\" or \"text\""):
            read_prompts_file(jsonl)
    with pytest.raises(InputError, match="does not exist"):
        read_prompts_file(tmp_path / "missing.txt")
