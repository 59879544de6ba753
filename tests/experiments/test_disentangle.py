"""``steerflow experiment disentangle``: the grid's arithmetic on synthetic models with known
answers, and the whole study on ``tiny`` end to end (files, keys, resume, bad input), with the
two-axis model it trains moving each judge's verdict along its own axis."""

from __future__ import annotations

import dataclasses
import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from steerflow.cli.main import main
from steerflow.experiments.disentangle_grid import (axis_cells, cell_key, check_targets, effects,
                                                    grid_cells, measure, model_sampler, summarise)
from steerflow.experiments.paper import DISENTANGLE_TARGETS
from steerflow.steer.judges.base import Judge
from steerflow.steer.open_ended import SamplingSpec

AXES = ("sentiment", "register")


# ----------------------------------------------------------------------------- synthetic models
class WordTokenizer:
    """Whitespace words ↔ ids over a fixed vocabulary (id 0 is the end of text)."""

    def __init__(self, words):
        self.words = ["<eos>", *words]
        self.ids = {w: i for i, w in enumerate(self.words)}
        self.eos_id = 0

    def encode(self, text):
        return [self.ids[w] for w in text.split()]

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]

    def decode(self, ids):
        return " ".join(self.words[i] for i in ids)


class Keyword(Judge):
    """Positive when ``word`` is one of the text's words."""

    def __init__(self, name, word):
        self.name, self.word = name, word

    def positive_proba(self, texts):
        return np.array([float(self.word in t.split()) for t in texts])


class Synthetic:
    """A "model" whose continuation is a sentiment word and a register word: each follows the
    sign of its score (a seeded coin at 0). Independent: score_s = u_0, score_r = u_1; tied:
    both are u_0 + u_1, so either axis moves both attributes."""

    def __init__(self, tokenizer, tied):
        self.tokenizer, self.tied = tokenizer, tied
        self.config = SimpleNamespace(is_hybrid=True, block_size=64, control_dim=2)

    def generate(self, idx, u, max_new_tokens, *, seed, eos_id=None, **_):
        u = torch.as_tensor(u, dtype=torch.float32).reshape(-1)
        scores = [u[0] + u[1]] * 2 if self.tied else [u[0], u[1]]
        gen = torch.Generator().manual_seed(seed)
        rows = []
        for _row in range(idx.shape[0]):
            coins = torch.rand(2, generator=gen)
            words = [pos if s > 0 or (s == 0 and c < 0.5) else neg
                     for s, c, (pos, neg) in zip(scores, coins, (("good", "bad"),
                                                                  ("film", "river")))]
            rows.append(self.tokenizer.encode(" ".join(words)))
        return torch.cat([idx, torch.tensor(rows)], dim=1)  # (B, T + 2)


def _synthetic_grid(tied):
    tok = WordTokenizer(["the", "ship", "sailed", "moved", "good", "bad", "film", "river"])
    model = Synthetic(tok, tied)
    prompts = ["the ship sailed", "the ship moved", "the river moved", "the ship"]
    judges = {"sentiment": Keyword("s", "good"), "register": Keyword("r", "film")}
    spec = SamplingSpec(samples=5, max_new_tokens=2, seed=3)
    return measure(model_sampler(model, prompts, spec), grid_cells(2), judges)


def test_independent_axes_have_no_cross_talk():
    cells = _synthetic_grid(tied=False)
    assert list(cells) == [cell_key(u) for u in grid_cells(2)] and len(cells) == 9
    assert cell_key((-0.0, 1)) == "+0,+1"
    found = effects(cells, AXES)
    assert found["own_effect"] == {"sentiment": 1.0, "register": 1.0}
    # the other axis is 0 in both cells: its coin flips are the same draws, so exactly 0
    assert found["cross_talk"] == {"sentiment->register": 0.0, "register->sentiment": 0.0}
    assert found["cross_talk_ci"]["sentiment->register"] == (0.0, 0.0)
    centre = cells["+0,+0"]
    assert 0 < centre.rate("sentiment") < 1  # coins, not a constant
    table = summarise(cells)
    assert table["+1,-1"]["rates"] == {"sentiment": 1.0, "register": 0.0}
    targets = check_targets(found, table, DISENTANGLE_TARGETS)
    assert targets["own_effect"]["met"] and targets["cross_talk"]["met"]


def test_tied_axes_cross_talk_equals_own_effect():
    cells = _synthetic_grid(tied=True)
    found = effects(cells, AXES)
    for a, b in (AXES, AXES[::-1]):
        assert found["cross_talk"][f"{a}->{b}"] == found["own_effect"][a] == 1.0
    table = summarise(cells)
    assert not check_targets(found, table, DISENTANGLE_TARGETS)["cross_talk"]["met"]
    # u = (+1, -1): the scores cancel, both attributes are coins, drawn alike in both cells
    assert cells["+1,-1"].rate("sentiment") == cells["+0,+0"].rate("sentiment")


def test_effects_are_rate_differences_over_shared_prompts():
    cells = _synthetic_grid(tied=False)
    lo, hi = (cells[cell_key(u)] for u in axis_cells(2, 1))
    found = effects({cell_key(lo.u): lo, cell_key(hi.u): hi}, AXES)
    assert set(found["own_effect"]) == {"register"}  # only axis 1's cells were given
    expected = hi.rate("sentiment") - lo.rate("sentiment")
    assert found["cross_talk"]["register->sentiment"] == pytest.approx(expected, abs=1e-12)


def test_judge_offsets_count_what_the_judge_reads_into_human_text():
    """A sentiment judge that also fires on the word "film" reads the register into sentiment:
    on review text with 10 of 40 windows naming a film, against encyclopedic text naming none,
    its offset is exactly 0.25; a judge blind to the other attribute has offset 0."""
    from steerflow.experiments.disentangle_grid import beyond_judge, judge_offsets

    class Either(Judge):
        def positive_proba(self, texts):
            return np.array([float({"good", "film"} & set(t.split()) != set()) for t in texts])

    reviews = ["a film it was"] * 10 + ["it was fine"] * 30  # register +1, no sentiment word
    wiki = ["the river moved"] * 40  # register −1
    poles = {"register": (reviews, wiki),
             "sentiment": (["good one"] * 20, ["bad one"] * 20)}  # no "film": register 0 both
    found = judge_offsets(poles, {"sentiment": Either(), "register": Keyword("r", "film")})
    assert found["judge_offset"] == {"register->sentiment": 0.25, "sentiment->register": 0.0}
    lo, hi = found["judge_offset_ci"]["register->sentiment"]
    assert lo < 0.25 < hi and hi - lo < 0.5
    assert found["judge_offset_ci"]["sentiment->register"] == (0.0, 0.0)

    cross = {"cross_talk": {"register->sentiment": 0.30, "sentiment->register": 0.01},
             "cross_talk_ci": {"register->sentiment": (0.27, 0.34),
                               "sentiment->register": (0.0, 0.02)}}
    beyond = beyond_judge(cross, found)
    assert beyond["cross_talk_beyond_judge"]["register->sentiment"] == pytest.approx(0.05)
    low, high = beyond["cross_talk_beyond_judge_ci"]["register->sentiment"]
    assert low == pytest.approx(0.05 - np.hypot(0.03, hi - 0.25))
    assert high == pytest.approx(0.05 + np.hypot(0.04, 0.25 - lo))
    assert beyond["cross_talk_beyond_judge_ci"]["sentiment->register"] == pytest.approx((0.0, 0.02))


# ----------------------------------------------------------------------------- the study on tiny
SUBJECTS = ("The team", "The station", "The river", "The council", "The ship", "He", "She")
VERBS = ("moved to", "stood near", "was named after", "returned to", "passed through")
OBJECTS = ("the north of the old city", "a small town near the coast",
           "the eastern side of the valley")
NOUNS = ("film", "movie", "story", "script", "cast")
GOOD = ("wonderful", "moving", "charming", "brilliant", "delightful")
BAD = ("dull", "tedious", "boring", "awful", "pointless")


def _wiki(n: int, seed: int) -> str:
    """WikiText-like lines of neutral sentences; every tenth a reception sentence that names the
    reviews' words both ways, so the tokenizer (trained on this split) knows them."""
    rng = random.Random(seed)
    lines = [" " + " ".join(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} ."
                            for _ in range(2)) + " \n" for _ in range(n)]
    for i in range(0, n, 10):
        lines[i] = (f" The {rng.choice(NOUNS)} was called {rng.choice(GOOD)} by some critics and "
                    f"{rng.choice(BAD)} by others . \n")
    return "".join(lines)


def _reviews(words, label: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [(f"the {rng.choice(NOUNS)} is {rng.choice(words)} and {rng.choice(words)} from start "
             f"to finish", label) for _ in range(60)]


@pytest.fixture(scope="module")
def data(tmp_path_factory, make_fake_data):
    texts = {split: _wiki(n, seed) for split, n, seed in
             (("train", 160, 0), ("valid", 40, 1), ("test", 20, 2))}
    return make_fake_data(tmp_path_factory.mktemp("disentangle-data"), texts=texts,
                          sst2=_reviews(GOOD, 1, 0) + _reviews(BAD, 0, 1),
                          sst2_dev=_reviews(GOOD, 1, 2)[:10] + _reviews(BAD, 0, 3)[:10])


def _argv(out, data, cache, *extra):
    return ["experiment", "disentangle", "--scale", "tiny", "--out", str(out), "--data-dir",
            str(data), "--cache-dir", str(cache), "--threads", "1", "--quiet", *extra]


@pytest.fixture(scope="module")
def study(tmp_path_factory, data):
    """The study at ``--scale tiny`` run twice into one folder: (results, printed, second run's
    results, run folder, cache folder)."""
    root = tmp_path_factory.mktemp("disentangle")
    out, cache = root / "run", root / "cache"
    runs = []
    for _ in range(2):
        import io
        from contextlib import redirect_stdout

        buffer = io.StringIO()
        with redirect_stdout(buffer):
            assert main(_argv(out, data, cache, "--json")) == 0
        runs.append(json.loads(buffer.getvalue()))
    return runs[0], json.loads((out / "results.json").read_text()), runs[1], out, cache


def test_the_study_writes_its_files_and_keys(study):
    first, _, _, out, _ = study
    assert {"own_effect", "cross_talk", "cross_talk_ci", "axis_judge_accuracy", "perplexity",
            "targets", "comparison", "cells"} <= set(first)
    assert set(first["own_effect"]) == set(AXES)
    assert set(first["cross_talk"]) == {"sentiment->register", "register->sentiment"}
    assert all(len(ci) == 2 and ci[0] <= v <= ci[1] or ci[0] == ci[1] == v
               for k, v in first["cross_talk"].items() for ci in [first["cross_talk_ci"][k]])
    assert len(first["cells"]) == 9 and all(c["n"] == 4 * 2 for c in first["cells"].values())
    assert all(p > 1 for p in first["perplexity"].values())
    assert all(isinstance(t["met"], bool) for t in first["targets"].values())
    assert set(first["targets"]) == {"own_effect", "cross_talk", "cross_talk_beyond_judge",
                                     "corner_ppl"}
    for key, cross in first["cross_talk"].items():  # what the model adds to the judge's offset
        off = first["judge_offset"][key]
        assert first["cross_talk_beyond_judge"][key] == pytest.approx(cross - off, abs=1e-12)
        lo, hi = first["judge_offset_ci"][key]
        assert lo <= off <= hi
        lo, hi = first["cross_talk_beyond_judge_ci"][key]
        assert lo <= cross - off <= hi
    assert first["control_axes"] == list(AXES)
    assert set(first["comparison"]) >= {"joint", "single_axis", "actadd_sum"}
    assert set(first["comparison"]["single_axis"]["own_effect"]) == set(AXES)
    assert first["axis_judge_accuracy"]["register"] >= 0.9  # reviews vs WikiText-like lines
    assert "| u = (sentiment, register) |" in (out / "results.md").read_text()
    assert (out / "disentangle.png").stat().st_size > 0


def test_a_second_run_reuses_every_stage(study):
    first, written, second, _, _ = study
    assert first["reused"] == []
    assert second["reused"] == ["judges", "lm", "experts", "joint", "single", "grid",
                                "single_grid", "actadd", "judge_offsets"]
    assert second["own_effect"] == first["own_effect"] and second["cells"] == first["cells"]
    assert written == second


def test_the_two_axis_model_moves_each_judge_along_its_own_axis(study):
    """u_a from −1 to +1 raises the expected judge-a score of the next token, Σ_v Δp_v · s_a(v)
    (s_a(v): the log-odds judge a gives token v's text on its own), beyond what u does to the LM
    the model was distilled from (its u path was never trained)."""
    from steerflow.model.hub import load_model
    from steerflow.steer.judges.register import RegisterJudge
    from steerflow.steer.judges.sst2 import SST2ClassifierJudge

    _, _, _, out, cache = study
    joint, lm = (load_model(out / name, "cpu").eval() for name in ("joint", "lm"))
    assert joint.config.control_axes == AXES and joint.config.control_dim == 2
    tok = joint.tokenizer
    judges = {"sentiment": SST2ClassifierJudge.load(cache / "judges" / "sst2-tfidf"),
              "register": RegisterJudge.load(cache / "judges" / "register-tfidf")}
    words = [tok.decode([v]) for v in range(joint.config.vocab_size)]
    prompts = [" The team moved to the north of the old city . The", " He stood near the",
               " The ship"]

    def shift(model, axis: int, score: torch.Tensor) -> float:
        u = torch.zeros(2, 2)
        u[:, axis] = torch.tensor([1.0, -1.0])
        total = 0.0
        for prompt in prompts:
            x = torch.tensor([tok.encode(prompt)]).repeat(2, 1)  # (2, T)
            with torch.no_grad():
                probs = model(x, u)[0][:, -1].softmax(-1)  # (2, V)
            total += float((probs[0] - probs[1]) @ score)
        return total / len(prompts)

    for a, name in enumerate(AXES):
        p = judges[name].positive_proba(words).clip(1e-6, 1 - 1e-6)
        score = torch.tensor(np.log(p / (1 - p)), dtype=torch.float32)  # (V,)
        moved, before = shift(joint, a, score), shift(lm, a, score)
        assert moved > 0 and moved > 2 * abs(before), (name, moved, before)


@pytest.mark.parametrize("extra, needle", [
    (["--axes", "sentiment,colour"], "unknown attribute"),
    (["--axes", "sentiment,sentiment"], "two distinct attributes"),
    (["--scale", "huge"], "invalid choice"),
    (["--alpha", "0"], "--alpha"),
    (["--alpha", "nan"], "--alpha"),
])
def test_bad_input_is_one_line_with_exit_code_2(tmp_path, data, capsys, extra, needle):
    with pytest.raises(SystemExit) as exc:
        main(_argv(tmp_path / "run", data, tmp_path / "cache", *extra))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_missing_data_is_one_line_with_exit_code_2(tmp_path, capsys):
    code = main(_argv(tmp_path / "run", tmp_path / "nowhere", tmp_path / "cache"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "does not exist" in err and len(err.splitlines()) == 1


def test_the_orthogonal_teacher_reruns_the_joint_stage_on_and_only_from_it(tmp_path, monkeypatch):
    """``--orthogonal`` reaches the joint model's TrainConfig (and only the joint model's), and
    changes the fingerprints of the joint stage and those after it, not the ones before."""
    import steerflow.pipeline.disentangle as dis
    from steerflow.experiments.disentangle_settings import SCALES
    from steerflow.pipeline.environment import Environment
    from steerflow.pipeline.stages import StageRunner

    plain, orth = SCALES["tiny"], SCALES["tiny"].replace(orthogonal=True)
    env = Environment(quiet=True)
    prints = [StageRunner(tmp_path, dis.build_stages(s, env), dataclasses.asdict(s)).fingerprints
              for s in (plain, orth)]
    names = list(prints[0])
    first = names.index("joint")
    assert [prints[0][n] == prints[1][n] for n in names] == [i < first for i in range(len(names))]

    seen = []
    monkeypatch.setattr(dis, "train_to_completion", lambda cfg: seen.append(cfg) or {"step": 0, "final_loss": 0.0})
    ctx = SimpleNamespace(out_dir=tmp_path)
    (tmp_path / dis.LM).mkdir()  # the checkpoint folder the distillations start from
    dis.stage_joint(orth, env)(ctx)
    dis.stage_single(orth, env)(ctx)
    assert seen[0].distill_orthogonal and ";" in seen[0].distill_teacher
    assert not any(cfg.distill_orthogonal for cfg in seen[1:]) and len(seen) == 3


def test_the_flags_reach_the_settings_and_the_recorded_command(tmp_path):
    from steerflow.cli.exp_disentangle import command_line, settings_from
    from steerflow.cli.main import build_parser

    args = build_parser().parse_args(["experiment", "disentangle", "--scale", "tiny", "--out",
                                      str(tmp_path), "--alpha", "0.75", "--orthogonal"])
    settings = settings_from(args)
    assert settings.distill_alpha == 0.75 and settings.orthogonal
    assert settings.replace(distill_alpha=1.5, orthogonal=False) == \
        settings_from(build_parser().parse_args(["experiment", "disentangle", "--scale", "tiny",
                                                 "--out", str(tmp_path)]))
    assert "--orthogonal" in command_line(args) and "--alpha 0.75" in command_line(args)
