"""``steerflow eval steering`` end to end on tiny checkpoints and a generated data folder."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch

from steerflow.cli.main import main
from steerflow.config import ModelConfig
from steerflow.data.tokenizer import train_bpe
from steerflow.model.gpt import SteerFlowGPT

from .conftest import tiny_config, wiki_lines

FAST = ["--prompts", "6", "--samples", "2", "--max-new-tokens", "6", "--sweep-points", "5",
        "--open-us=-1,0,1", "--actadd-coefs=-2,0,2", "--guidance-gammas", "2",
        "--dexperts-alphas", "2", "--quiet", "--threads", "1"]


def bag_of_words_encoder(texts):
    """A deterministic stand-in for MiniLM (hashed bag of words, 64 dims)."""
    out = np.zeros((len(texts), 64))
    for i, text in enumerate(texts):
        for word in text.lower().split():
            out[i, sum(map(ord, word)) % 64] += 1.0
    return out


@pytest.fixture(scope="module")
def checkpoints(pretrained_dir, tmp_path_factory, tokenizer):
    """The pretrained model as base, a 'steered' copy with a changed field, an additive ablation."""
    root = tmp_path_factory.mktemp("eval-ckpts")
    base = SteerFlowGPT.from_pretrained(pretrained_dir)
    torch.manual_seed(6)
    with torch.no_grad():
        base.ode.field.fc_out.weight.normal_(std=0.3)  # u now moves the output
    base.save_pretrained(root / "steered")
    # as `train --task steer` leaves it: what the model was steered on picks the probe targets
    (root / "steered" / "train_config.json").write_text(json.dumps({"task": "steer",
                                                                     "steer_data": "cloze"}))
    additive = SteerFlowGPT(tiny_config(injection="add"))
    additive.tokenizer = tokenizer
    additive.save_pretrained(root / "additive")
    discrete = SteerFlowGPT(tiny_config(ode_span=None))
    discrete.tokenizer = tokenizer
    discrete.save_pretrained(root / "discrete")
    for name, seed in (("expert-pos", 7), ("expert-neg", 8)):  # DExperts' expert pair
        torch.manual_seed(seed)
        expert = SteerFlowGPT(tiny_config(ode_span=None))
        expert.tokenizer = tokenizer
        expert.save_pretrained(root / name)
    # the independent scorer: a discrete LM with a tokenizer of its own (text is re-tokenized)
    other_tok = train_bpe(wiki_lines(60, 11).splitlines(keepends=True) * 2, 300)
    scorer = SteerFlowGPT(ModelConfig.from_name("tiny", vocab_size=other_tok.vocab_size,
                                                ode_span=None))
    scorer.save_pretrained(root / "scorer", tokenizer=other_tok)
    return root


def run_eval(argv, minilm_missing: str | None = None) -> tuple[int, str]:
    """``main(argv)`` with MiniLM installed as far as the panel can tell (its encoder replaced by
    :func:`bag_of_words_encoder`; the real one is tested in tests/steer/judges), or missing for
    the reason ``minilm_missing``."""
    from steerflow.steer.judges import embedding

    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stdout):
        mp.setattr(embedding, "load_minilm_encoder", lambda: bag_of_words_encoder)
        mp.setattr(embedding, "minilm_unavailable", lambda: minilm_missing)
        code = main(argv)
    return code, stdout.getvalue()


@pytest.fixture(scope="module")
def evaluated(checkpoints, pretrained_dir, fake_data_dir, tmp_path_factory):
    """Run the command once with every method; return its exit code, stdout and output folder."""
    out = tmp_path_factory.mktemp("eval-out")
    argv = ["eval", "steering", str(checkpoints / "steered"), "--base", str(pretrained_dir),
            "--ablation", str(checkpoints / "additive"), "--baseline", str(checkpoints / "discrete"),
            "--dexperts", f"{checkpoints / 'expert-pos'},{checkpoints / 'expert-neg'}",
            "--scorer", str(checkpoints / "scorer"),
            "--data-dir", str(fake_data_dir), "--out", str(out), "--json",
            "--judge-cache", str(out / "judge"), *FAST]
    code, stdout = run_eval(argv)
    return code, stdout, out


def test_results_json_has_every_required_key(evaluated):
    code, stdout, out = evaluated
    assert code == 0
    printed = json.loads(stdout)  # --json: exactly one JSON object on stdout, nothing else
    saved = json.loads((out / "results.json").read_text())
    assert printed == saved
    for u in ("+1", "0", "-1"):
        assert {"p_good", "p_bad", "share"} <= set(saved["probe"][u])
        setting = saved["open_ended"][u]
        assert set(setting["positive_rate"]) == {"vader", "sst2-tfidf", "minilm"}
        assert setting["perplexity"] > 1 and 0 <= setting["distinct_2"] <= 1
        assert set(setting["perplexities"]) == {"unsteered", "baseline", "scorer"}
        assert setting["n"] == 6 * 2
    assert 0 <= saved["judge_dev_accuracy"] <= 1
    assert saved["judges"]["gates"] == ["sst2-tfidf", "minilm"] and not saved["judges"]["skipped"]
    assert len(saved["sweep"]["u"]) == 5 and isinstance(saved["sweep"]["monotone"], bool)
    baselines = saved["baselines"]
    assert set(baselines) == {"no_control", "actadd", "additive", "guidance", "dexperts"}
    assert set(baselines["actadd"]["open_ended"]) == {"-2", "0", "+2"}
    assert set(baselines["additive"]["open_ended"]) == {"-1", "0", "+1"}
    assert set(baselines["guidance"]["open_ended"]) == {"-2", "0", "+2"}
    assert set(baselines["dexperts"]["open_ended"]) == {"-2", "0", "+2"}
    assert {"p_good", "p_bad"} <= set(baselines["additive"]["probe"]["+1"])
    for name in ("results.md", "fig2.png", "tradeoff.png"):
        assert (out / name).stat().st_size > 0
    assert "ode_beats_actadd_at_matched_perplexity" in saved["targets"]
    assert "ode_beats_dexperts_at_matched_perplexity" in saved["targets"]
    assert set(saved["tradeoff"]["best"]) == {"ode", "guidance", "dexperts", "actadd", "additive"}
    assert set(saved["comparisons"]) == {"guidance", "dexperts", "actadd", "additive"}
    assert saved["tradeoff_scorer"]["scorer"] == "scorer"
    assert saved["steer_data"] == "cloze" and "cloze_p_good_at_+1>=0.98" in saved["targets"]
    assert not any(name.startswith("sst2_share") for name in saved["targets"])
    assert "Steering data: cloze" in (out / "results.md").read_text()


def test_actadd_at_zero_is_the_no_control_baseline(evaluated):
    _, _, out = evaluated
    saved = json.loads((out / "results.json").read_text())
    zero = saved["baselines"]["actadd"]["open_ended"]["0"]
    none = saved["baselines"]["no_control"]["open_ended"]["0"]
    # same base model, prompts and random numbers: identical continuations, identical scores
    assert zero["examples"] == none["examples"]
    assert zero["positive_rate"] == none["positive_rate"]
    assert zero["perplexity"] == none["perplexity"] and zero["distinct_2"] == none["distinct_2"]
    assert saved["baselines"]["actadd"]["probe"]["0"] == saved["baselines"]["no_control"]["probe"]


def test_every_method_decodes_the_same_prompts_with_the_same_random_numbers(evaluated):
    """At weight 0 each method is plain sampling from its model, so with shared prompts and seeds
    its continuations must be exactly those of the plain method: guidance γ = 0 is the steered
    model at u = 0, DExperts α = 0 the base model."""
    _, _, out = evaluated
    saved = json.loads((out / "results.json").read_text())
    base = saved["baselines"]
    pairs = ((base["guidance"]["open_ended"]["0"], saved["open_ended"]["0"]),
             (base["dexperts"]["open_ended"]["0"], base["no_control"]["open_ended"]["0"]))
    for zero, plain in pairs:
        assert zero["examples"] == plain["examples"]
        assert zero["positive_rate"] == plain["positive_rate"]
        assert zero["perplexities"] == plain["perplexities"]
    # a weight > 0 changes some draws (the contrast moves the logits): the perplexity, pooled over
    # every continuation, moves with any one of them
    assert (base["guidance"]["open_ended"]["+2"]["perplexity"]
            != saved["open_ended"]["0"]["perplexity"])
    assert (base["dexperts"]["open_ended"]["+2"]["perplexity"]
            != base["dexperts"]["open_ended"]["-2"]["perplexity"])


def test_every_rate_has_an_interval_that_holds_it(evaluated):
    _, _, out = evaluated
    saved = json.loads((out / "results.json").read_text())
    from steerflow.steer.comparison import method_settings

    count = 0
    for method, settings in method_settings(saved).items():
        for s in settings.values():
            assert set(s["positive_rate_ci"]) == set(s["positive_rate"])
            for judge, (lo, hi) in s["positive_rate_ci"].items():
                assert 0 <= lo <= s["positive_rate"][judge] <= hi <= 1, (method, judge)
            # the comparison's rate: the classifier judges only (VADER is no gate)
            assert s["classifier_judges"] == ["sst2-tfidf", "minilm"]
            assert s["classifier_positive_rate"] == pytest.approx(
                (s["positive_rate"]["sst2-tfidf"] + s["positive_rate"]["minilm"]) / 2)
            lo, hi = s["classifier_positive_rate_ci"]
            assert lo <= s["classifier_positive_rate"] <= hi
            count += 1
    assert count == 3 + 1 + 3 + 3 + 3 + 3  # ode, no_control, guidance, dexperts, actadd, additive


def test_speed_of_every_setting_and_method(evaluated):
    _, _, out = evaluated
    saved = json.loads((out / "results.json").read_text())
    from steerflow.steer.comparison import method_settings

    methods = method_settings(saved)
    for settings in methods.values():
        for s in settings.values():
            # every row decodes 6 tokens (fewer only if all rows of a batch ended at EOS)
            assert 0 < s["generated_tokens"] <= s["n"] * 6 and s["sampling_s"] > 0
            assert s["tokens_per_s"] == pytest.approx(s["generated_tokens"] / s["sampling_s"])
    speed = saved["speed"]
    assert set(speed["methods"]) == set(methods)
    for name, summary in speed["methods"].items():
        steering = [s for s in methods[name].values() if s["value"] != 0] or \
            list(methods[name].values())
        assert summary["tokens"] == sum(s["generated_tokens"] for s in steering)
        assert summary["tokens_per_s"] == pytest.approx(summary["tokens"] / summary["seconds"])
    assert speed["ode_over_dexperts"] == pytest.approx(
        speed["methods"]["ode"]["tokens_per_s"] / speed["methods"]["dexperts"]["tokens_per_s"])


def test_independent_scorer_and_caa_direction(evaluated):
    _, _, out = evaluated
    saved = json.loads((out / "results.json").read_text())
    for s in saved["open_ended"].values():
        ppl = s["perplexities"]
        assert math.isfinite(ppl["scorer"]) and ppl["scorer"] > 1
        assert ppl["scorer"] != ppl["unsteered"]  # another model, another tokenizer
    act = saved["baselines"]["actadd"]
    # the fake SST-2 has 36 sentences per class, fewer than the 500 asked for: all are used
    assert act["vector"] == "caa" and act["sentences"] == {"positive": 36, "negative": 36}


def test_results_md_shows_the_methods_table(evaluated):
    _, _, out = evaluated
    text = (out / "results.md").read_text()
    for needle in ("positive (sst2-tfidf) [95% CI]", "positive (minilm) [95% CI]",
                   "ppl (scorer)", "dist-3", "tokens/s", "## Generation speed",
                   "| dexperts | +2 |", "| guidance | -2 |", "VADER, a lexicon"):
        assert needle in text, needle


def test_prompts_file_and_a_missing_minilm(checkpoints, pretrained_dir, fake_data_dir, tmp_path):
    """--prompts-file gives the prompts (the first --prompts of them); without MiniLM's packages
    the run goes on and says why MiniLM is missing, in results.json and results.md."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "The river reached the"}\n{"text": "She crossed the"}\n'
                       '{"prompt": "The ship returned to"}\n')
    out = tmp_path / "out"
    argv = ["eval", "steering", str(checkpoints / "steered"), "--base", str(pretrained_dir),
            "--data-dir", str(fake_data_dir), "--out", str(out), "--judge-cache",
            str(tmp_path / "judge"), "--prompts-file", str(prompts), "--prompts", "2",
            "--samples", "1", "--max-new-tokens", "4", "--sweep-points", "3", "--open-us=-1,1",
            "--actadd-coefs=2", "--guidance-gammas", "0", "--actadd-vector", "pairs",
            "--caa-sentences", "3", "--quiet", "--threads", "1", "--json"]
    code, stdout = run_eval(argv, minilm_missing="ImportError: no sentence_transformers")
    assert code == 0
    saved = json.loads(stdout)
    assert saved["prompts"] == ["The river reached the", "She crossed the"]
    assert saved["prompt_source"] == {"kind": "file", "path": str(prompts), "in_file": 3,
                                      "used": 2}
    assert saved["judges"]["names"] == ["vader", "sst2-tfidf"]
    assert "no sentence_transformers" in saved["judges"]["skipped"]["minilm"]
    assert "**Judge minilm skipped**" in (out / "results.md").read_text()
    assert saved["baselines"]["actadd"]["vector"] == "pairs"
    assert set(saved["baselines"]["guidance"]["open_ended"]) == {"0"}  # γ = 0 only: the reference
    assert "dexperts" not in saved["baselines"] and "ode_over_dexperts" not in saved["speed"]


@pytest.mark.parametrize("flags, message", [
    (["--prompts", "0"], "prompts"),
    (["--top-p", "1.5"], "top-p"),
    (["--temperature", "0"], "temperature"),
    (["--open-us", "a,b"], "comma-separated"),
    (["--threads", "0"], "threads"),
    (["--guidance-gammas=-1"], "--guidance-gammas must be finite numbers >= 0"),
    (["--dexperts-alphas=nan"], "--dexperts-alphas"),
    (["--dexperts", "only-one"], "two expert checkpoints"),
    (["--caa-sentences", "0"], "--caa-sentences"),
])
def test_bad_flags_exit_2_with_one_line(checkpoints, fake_data_dir, capsys, flags, message):
    code = _exit_code(["eval", "steering", str(checkpoints / "steered"), "--data-dir",
                       str(fake_data_dir), *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_or_discrete_checkpoint_exit_2(checkpoints, fake_data_dir, tmp_path, capsys):
    assert _exit_code(["eval", "steering", str(tmp_path / "nope"), "--data-dir",
                       str(fake_data_dir)]) == 2
    assert _exit_code(["eval", "steering", str(checkpoints / "discrete"), "--data-dir",
                       str(fake_data_dir), *FAST]) == 2
    err = capsys.readouterr().err
    assert "no such checkpoint" in err and "hybrid" in err and "Traceback" not in err


def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse usage errors
        return int(exc.code)
