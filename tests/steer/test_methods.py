"""The compared decoding methods, their timing, intervals on every rate, classifier-only gates,
the comparison with DExperts, the settings and the prompt file of ``steerflow eval steering``."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from steerflow.errors import InputError
from steerflow.model.gpt import SteerFlowGPT
from steerflow.steer.comparison import target_checks, tradeoff, u_key
from steerflow.steer.dexperts import DExperts
from steerflow.steer.intervals import rate_interval
from steerflow.steer.methods import (caa_texts, dexperts_decoder, guidance_decoder, speed_summary)
from steerflow.steer.open_ended import (Continuation, SamplingSpec, Timing, evaluate_setting,
                                        group_seed, sample_timed)
from steerflow.steer.settings import SteeringEvalConfig, signed_values

from .conftest import tiny_config

SPEC = SamplingSpec(samples=2, max_new_tokens=5, top_p=0.9, seed=3)


def _model(seed: int, **overrides) -> SteerFlowGPT:
    torch.manual_seed(seed)
    return SteerFlowGPT(tiny_config(**overrides)).eval()


@pytest.fixture(scope="module")
def idx():
    return torch.randint(0, 400, (4, 5), generator=torch.Generator().manual_seed(0))  # (B, T)


def test_guidance_decoder_steers_by_the_sign_of_the_setting(idx):
    model = _model(1)
    with torch.no_grad():
        model.ode.field.fc_out.weight.normal_(std=0.5)  # u moves the logits
    decoder = guidance_decoder(model, SPEC, axis=0)
    kw = dict(temperature=1.0, top_p=SPEC.top_p, seed=11)
    for v in (-2.0, 2.0):
        expected = model.generate(idx, math.copysign(1.0, v), SPEC.max_new_tokens,
                                  guidance=abs(v), **kw)
        assert torch.equal(decoder(v)(idx, 11, None), expected)
    assert not torch.equal(decoder(2.0)(idx, 11, None), decoder(-2.0)(idx, 11, None))
    # γ = 0: plain sampling at u = 0
    assert torch.equal(decoder(0.0)(idx, 11, None),
                       model.generate(idx, 0.0, SPEC.max_new_tokens, **kw))


def test_dexperts_decoder_swaps_expert_and_anti_expert_for_the_negative_direction(idx):
    base, pos, neg = _model(0), _model(1, ode_span=None), _model(2, ode_span=None)
    for m in (base, pos, neg):
        m.tokenizer = None  # same (absent) tokenizer: DExperts accepts the trio
    decoder = dexperts_decoder(DExperts(base, pos, neg), SPEC)
    kw = dict(alpha=2.0, top_p=SPEC.top_p, seed=5)
    positive = DExperts(base, pos, neg).generate(idx, 1, SPEC.max_new_tokens, **kw)
    swapped = DExperts(base, neg, pos).generate(idx, 1, SPEC.max_new_tokens, **kw)
    assert torch.equal(decoder(2.0)(idx, 5, None), positive)
    assert torch.equal(decoder(-2.0)(idx, 5, None), swapped)
    assert not torch.equal(positive, swapped)
    assert torch.equal(decoder(0.0)(idx, 5, None),
                       base.generate(idx, None, SPEC.max_new_tokens, top_p=SPEC.top_p, seed=5))


class _Tok:
    eos_id = 9

    def decode(self, ids):
        return " ".join(map(str, ids))


def test_sample_timed_counts_decoded_tokens_and_seeds_by_prompt_length():
    """Prompts of two lengths: two decode calls, each with its group's seed; EOS positions are
    decoded work (counted) but not part of a continuation."""
    calls = []

    def decode(idx, seed, eos_id):
        calls.append((tuple(idx.shape), seed, eos_id))
        new = torch.tensor([[1, 2, eos_id]]).repeat(idx.shape[0], 1)  # (B, 3)
        return torch.cat([idx, new], dim=1)

    prompt_ids = [[5, 6], [7, 8, 9], [1, 2]]
    conts, timing = sample_timed(decode, _Tok(), ["a", "b", "c"], prompt_ids, SPEC)
    assert calls == [((4, 2), group_seed(SPEC, 2), 9), ((2, 3), group_seed(SPEC, 3), 9)]
    assert timing.tokens == 6 * 3 and timing.seconds > 0
    assert timing.tokens_per_s == timing.tokens / timing.seconds
    assert [(c.prompt_index, c.sample) for c in conts] == [(i, k) for i in range(3) for k in range(2)]
    assert all(c.tokens == [1, 2] and c.text == "1 2" for c in conts)


class _Fixed:
    """A judge with fixed verdicts; ``classifier=False`` plays a lexicon such as VADER."""

    def __init__(self, name, labels, classifier=True):
        self.name, self.labels, self.classifier = name, np.asarray(labels, dtype=bool), classifier

    def is_positive(self, texts):
        return self.labels[: len(texts)]


def test_every_rate_gets_its_cluster_bootstrap_interval_and_lexicons_do_not_gate():
    prompt_index = [0, 0, 1, 1, 2, 2, 3, 3]
    conts = [Continuation(i, k % 2, f"p{i}", f"t{k}", [k]) for k, i in enumerate(prompt_index)]
    judges = [_Fixed("lex", [1, 1, 1, 1, 1, 1, 1, 0], classifier=False),
              _Fixed("a", [1, 1, 1, 0, 0, 0, 1, 1]), _Fixed("b", [1, 0, 1, 0, 0, 0, 0, 1])]
    result = evaluate_setting("ode", 1.0, conts, judges, [], None, timing=Timing(40, 0.5), seed=4)
    for j in judges:
        per_prompt = [list(j.labels[2 * i: 2 * i + 2].astype(float)) for i in range(4)]
        assert result.positive_rate_ci[j.name] == rate_interval(per_prompt, seed=4)
    assert result.classifier_judges == ["a", "b"]
    assert result.classifier_positive_rate == pytest.approx((5 / 8 + 3 / 8) / 2)
    mean = (judges[1].labels.astype(float) + judges[2].labels) / 2
    assert result.classifier_positive_rate_ci == rate_interval(
        [list(mean[2 * i: 2 * i + 2]) for i in range(4)], seed=4)
    lo, hi = result.classifier_positive_rate_ci
    assert lo <= result.classifier_positive_rate <= hi and lo < hi
    assert (result.generated_tokens, result.sampling_s, result.tokens_per_s) == (40, 0.5, 80.0)


def _setting(value, rate, ppl, n=400, tokens=100, seconds=1.0, classifier=None):
    return {"value": value, "mean_positive_rate": rate, "perplexity": ppl, "n": n,
            "perplexities": {"unsteered": ppl, "scorer": 2 * ppl},
            "classifier_positive_rate": rate if classifier is None else classifier,
            "generated_tokens": tokens, "sampling_s": seconds}


def test_speed_summary_pools_steering_settings_and_divides_by_each_method():
    methods = {"ode": {"-1": _setting(-1, .2, 10, tokens=100, seconds=1.0),
                       "0": _setting(0, .5, 10, tokens=100, seconds=9.0),  # not a steering one
                       "+1": _setting(1, .8, 10, tokens=300, seconds=1.0)},
               "no_control": {"0": _setting(0, .5, 10, tokens=100, seconds=0.5)},
               "dexperts": {"+2": _setting(2, .8, 10, tokens=100, seconds=2.0)}}
    speed = speed_summary(methods)
    assert speed["methods"]["ode"] == {"tokens_per_s": 200.0, "tokens": 400, "seconds": 2.0,
                                       "settings": 2}
    assert speed["methods"]["no_control"]["tokens_per_s"] == 200.0  # its u = 0 is all it has
    assert speed["ode_over_dexperts"] == pytest.approx(200.0 / 50.0)
    assert speed["ode_over_no_control"] == pytest.approx(1.0)


def test_tradeoff_reads_the_classifier_rate_and_a_named_scorer():
    # the all-judge mean says 0.9 at +1, the classifiers only 0.6: the comparison uses 0.6
    ode = {u_key(v): _setting(v, r, p, classifier=c) for v, r, p, c in
           [(-1, .1, 11, .3), (0, .5, 10, .5), (1, .9, 12, .6)]}
    trade = tradeoff({"ode": ode}, 10.0)
    assert trade["best"]["ode"]["positive"]["rate"] == 0.6
    assert trade["best"]["ode"]["negative"]["rate"] == pytest.approx(0.7)
    # under the scorer (perplexity 2×) with reference 20 the limit is 25: +1 (24) is in
    assert tradeoff({"ode": ode}, 20.0, scorer="scorer")["best"]["ode"]["positive"]["perplexity"] == 24
    assert tradeoff({"ode": ode}, 19.0, scorer="scorer")["best"]["ode"]["positive"]["value"] == 0


def _results(dexperts_pos: float) -> dict:
    probe = {k: {"p_good": .5, "p_bad": .5, "share": .5} for k in ("+1", "0", "-1")}
    oe = {"+1": {"positive_rate": {"vader": 0.5, "sst2-tfidf": 0.95, "minilm": 0.92},
                 "perplexity": 11.0},
          "0": {"positive_rate": {"vader": 0.5, "sst2-tfidf": 0.5, "minilm": 0.5}, "perplexity": 10.0},
          "-1": {"positive_rate": {"vader": 0.6, "sst2-tfidf": 0.05, "minilm": 0.08},
                 "perplexity": 11.0}}
    methods = {"ode": {u_key(v): _setting(v, r, 11.0) for v, r in ((-1, .06), (1, .94))},
               "dexperts": {u_key(v): _setting(v, r, 11.0) for v, r in
                            ((-2, 1 - dexperts_pos), (2, dexperts_pos))}}
    return {"probe": probe, "open_ended": oe, "sweep": {"monotone": True,
                                                        "max_violation": {"share": 0.0}},
            "judges": {"names": ["vader", "sst2-tfidf", "minilm"],
                       "gates": ["sst2-tfidf", "minilm"]},
            "tradeoff": tradeoff(methods, 10.0)}


def test_targets_gate_on_classifier_judges_and_ask_to_beat_dexperts():
    checks = target_checks(_results(dexperts_pos=0.8))
    # VADER says 0.5 at u = +1 and 0.6 at u = −1; it is reported, not a gate
    assert checks["open_ended_positive_at_+1>=0.90_all_judges"] == {
        "value": {"sst2-tfidf": 0.95, "minilm": 0.92}, "met": True}
    assert checks["open_ended_positive_at_-1<=0.10_all_judges"]["met"] is True
    beats = checks["ode_beats_dexperts_at_matched_perplexity"]
    assert beats["met"] is True and beats["value"]["dexperts"]["positive"] == 0.8
    assert "ode_beats_actadd_at_matched_perplexity" not in checks  # ActAdd did not run here
    # DExperts as good as the ODE: not beaten
    assert target_checks(_results(0.94))["ode_beats_dexperts_at_matched_perplexity"]["met"] is False


def test_caa_texts_are_seeded_per_class_and_fit_the_context(tokenizer):
    pairs = [(f"a good film number {i}", 1) for i in range(30)] + \
        [(f"a bad film number {i}", 0) for i in range(30)] + [(" ".join(["long"] * 60), 1)]
    pos, neg = caa_texts(pairs, tokenizer, 10, seed=1, max_tokens=20)
    assert len(pos) == len(neg) == 10 and len(set(pos)) == 10
    assert all("good" in t for t in pos) and all("bad" in t for t in neg)
    assert (pos, neg) == caa_texts(pairs, tokenizer, 10, seed=1, max_tokens=20)
    assert pos != caa_texts(pairs, tokenizer, 10, seed=2, max_tokens=20)[0]
    everything = caa_texts(pairs, tokenizer, 500, seed=1, max_tokens=20)
    assert len(everything[0]) == 30  # the 60-word sentence does not fit in 20 tokens
    with pytest.raises(InputError, match="label 0"):
        caa_texts(pairs[:30], tokenizer, 5, seed=0, max_tokens=20)


@pytest.mark.parametrize("field, bad", [("guidance_gammas", (1.0, -1.0)),
                                        ("guidance_gammas", (float("nan"),)),
                                        ("dexperts_alphas", (float("inf"),)),
                                        ("dexperts_alphas", (-0.5,))])
def test_settings_refuse_bad_weights(field, bad):
    flag = "--" + field.replace("_", "-")
    with pytest.raises(InputError, match=f"{flag} must be finite numbers >= 0"):
        SteeringEvalConfig(**{field: bad})


def test_settings_defaults_and_sweeps():
    cfg = SteeringEvalConfig(guidance_gammas=(4, 0, 1, 1), dexperts_alphas=())
    assert SteeringEvalConfig().prompts == 200 and SteeringEvalConfig().samples == 4
    assert cfg.guidance_gammas == (1.0, 4.0) and cfg.dexperts_alphas == ()
    assert signed_values(cfg.guidance_gammas) == (-4.0, -1.0, 0.0, 1.0, 4.0)
    assert signed_values(()) == (0.0,)
    with pytest.raises(InputError, match="--actadd-vector"):
        SteeringEvalConfig(actadd_vector="words")
    # the CLI reads its defaults from the settings when it builds its parser: no torch there
    code = ("import sys; import steerflow.steer.settings; "
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_prompts_file_gives_the_first_prompts_and_bad_ones_fail_early(tmp_path, tokenizer):
    from steerflow.steer.evaluate import prompts_from_file

    model = _model(0)
    model.tokenizer = tokenizer
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "The team moved to"}\n{"text": "She crossed the"}\n'
                    '{"prompt": "The river"}\n')
    prompts, info = prompts_from_file(SteeringEvalConfig(prompts=2, prompts_file=str(path)), model)
    assert prompts == ["The team moved to", "She crossed the"]
    assert info == {"kind": "file", "path": str(path), "in_file": 3, "used": 2}
    assert prompts_from_file(SteeringEvalConfig(), model) is None
    path.write_text('{"prompt": "The team"}\n{"prompt": ""}\n')
    with pytest.raises(InputError, match=f"--prompts-file {path}: prompt '' is empty"):
        prompts_from_file(SteeringEvalConfig(prompts_file=str(path)), model)
    path.write_text('{"prompt": "' + " the north of the city" * 10 + '"}\n')
    with pytest.raises(InputError, match="tokens"):
        prompts_from_file(SteeringEvalConfig(prompts_file=str(path), max_new_tokens=20), model)


def test_the_scorer_is_a_discrete_lm_apart_from_the_generators(tokenizer):
    from steerflow.steer.evaluate import Models, check_scorer

    steered, discrete = _model(0), _model(1, ode_span=None)
    for m in (steered, discrete):
        m.tokenizer = tokenizer
    check_scorer(Models(steered, steered, scorer=discrete, names={"scorer": "lm"}))
    with pytest.raises(InputError, match="is the steered model"):
        check_scorer(Models(steered, steered, scorer=steered, names={"scorer": "s"}))
    with pytest.raises(InputError, match="is the base model"):
        check_scorer(Models(steered, discrete, scorer=discrete, names={"scorer": "b"}))
    with pytest.raises(InputError, match="is the steered model"):  # the same folder, loaded twice
        check_scorer(Models(steered, steered, scorer=discrete,
                            names={"steered": "runs/x", "scorer": "runs/x/"}))
    with pytest.raises(InputError, match="hybrid"):
        check_scorer(Models(steered, steered, scorer=_model(2), names={"scorer": "h"}))
    discrete.tokenizer = None
    with pytest.raises(InputError, match="no tokenizer.json"):
        check_scorer(Models(steered, steered, scorer=discrete, names={"scorer": "n"}))
