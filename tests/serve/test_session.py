"""The functions behind the playground page, without a server: determinism, the effect of u,
the NFE per token, the side-by-side view, the dynamics data and every bad input's message."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from steerflow.errors import CheckpointError, InputError, SolverError
from steerflow.serve.dynamics import dynamics
from steerflow.serve.session import Limits, Playground, axis_names
from steerflow.serve.views import (Form, api_dynamics, api_generate, api_side_by_side,
                                   dynamics_view, generate_view, side_by_side_view)

PROMPT = "The movie was"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def text(pg, u, seed=0, tokens=12, **kwargs) -> str:
    return pg.generate(PROMPT, u, pg.sampling(tokens, seed=seed, **kwargs)).text


def test_same_seed_same_text_and_another_seed_differs(playground):
    first, again = text(playground, 0.5, seed=3), text(playground, 0.5, seed=3)
    assert first == again and first
    # at temperature 2 the tiny model spreads its mass: two 12-token draws never coincide
    assert text(playground, 0.5, seed=3, temperature=2.0) != \
        text(playground, 0.5, seed=4, temperature=2.0)


def test_u_steers_the_text_the_way_the_model_was_trained(playground):
    positive, negative = text(playground, 1.0), text(playground, -1.0)
    assert positive != negative
    # the model learnt one sentence set per sign of u (tests/serve/harness.py)
    assert positive.startswith(" great") and negative.startswith(" awful")


def test_without_a_control_path_u_changes_nothing(steered_dir):
    """The difference above comes from u alone: zero the field's u-columns and ±1 coincide."""
    pg = Playground.load(steered_dir)
    fc_in = pg.model.ode.field.fc_in
    with torch.no_grad():
        fc_in.linear.weight[:, fc_in.d_in + int(fc_in.time):] = 0
    assert text(pg, 1.0) == text(pg, -1.0)


def test_stream_grows_token_by_token_and_ends_at_generate(playground):
    sampling = playground.sampling(8, seed=1)
    steps = list(playground.stream(PROMPT, 1.0, sampling))
    assert [len(s.tokens) for s in steps] == list(range(1, 9))
    assert all(a.tokens == b.tokens[:-1] for a, b in zip(steps, steps[1:]))
    final = playground.generate(PROMPT, 1.0, sampling)
    assert steps[-1].tokens == final.tokens
    assert final.text == playground.tokenizer.decode(final.tokens)


def test_nfe_per_token_is_the_solvers_cost(playground):
    sampling = playground.sampling(6)
    train = playground.generate(PROMPT, 1.0, sampling)
    spec = playground.model.config.train_solver
    assert train.nfe == [spec.steps * spec.evals_per_step] * 6
    loose = playground.generate(PROMPT, 1.0, sampling, playground.solver("dopri5", 1e-2))
    tight = playground.generate(PROMPT, 1.0, sampling, playground.solver("dopri5", 1e-7))
    # dopri5: 6 stages a step plus the first-step estimate; a tighter tolerance takes more
    assert min(loose.nfe) >= 7 and sum(tight.nfe) > sum(loose.nfe)


def test_guidance_changes_the_text_and_zero_means_off(playground):
    plain = text(playground, 1.0, temperature=1.5)
    assert text(playground, 1.0, temperature=1.5, guidance=0.0) == plain
    assert text(playground, -1.0, temperature=1.5, guidance=3.0) != plain


def test_side_by_side_equals_three_generations_with_the_same_seed(playground):
    sampling = playground.sampling(10, seed=2)
    controls = playground.triple([-1, 0, 1], 0.0)
    *_, last = playground.side_by_side(PROMPT, controls, sampling)
    assert [s.text for s in last] == [text(playground, u, seed=2, tokens=10) for u in (-1, 0, 1)]
    assert len({s.text for s in last}) == 3
    assert api_side_by_side(playground, PROMPT, [-1, 0, 1], 10, 1.0, 0.9, 2) == \
        [s.text for s in last]


def test_views_stream_and_end_with_a_summary(playground):
    views = list(generate_view(playground, Form(PROMPT, [1.0], max_new_tokens=5, seed=4)))
    assert len(views) == 6  # five tokens, then the summary
    out, rows, status = views[-1]
    assert out == text(playground, 1.0, seed=4, tokens=5)
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5] and all(r[2] == 4 for r in rows)
    assert status.startswith("**done:** 5 tokens at u = [+1]")
    *_, (low, mid, high, side_status) = side_by_side_view(
        playground, Form(PROMPT, [0.0], max_new_tokens=5, seed=4), [-1, 0, 1])
    assert high == out and "done" in side_status


def test_dynamics_data_is_the_models_distribution_and_flow(playground):
    d = dynamics(playground, PROMPT, 0.5)
    assert len(d.us) == d.probs.shape[0] and d.us[0] == -3.0 and d.us[-1] == 3.0
    ids = torch.tensor([playground.encode(PROMPT)])
    for u in (-3.0, 3.0):
        logits, _ = playground.model(ids, u, solver=playground.solver("train"))
        p = logits[0, -1].softmax(-1)
        row = d.probs[d.us.index(u)]
        # the same forward pass batched or alone: float32 round-off only
        top = [playground.tokenizer.decode([t]) for t in p.topk(1).indices.tolist()]
        assert repr(top[0]) in d.candidates
        np.testing.assert_allclose(row.max(), p.max().item(), rtol=1e-5)
    # the candidates' shares move with u on this model
    assert np.abs(d.probs[0] - d.probs[-1]).max() > 0.1
    assert d.taus == [0.0, 0.25, 0.5, 0.75, 1.0] and d.norms[0] == 0.0 and d.nfe == 4
    assert all(n > 0 for n in d.norms[1:])
    adaptive = dynamics(playground, PROMPT, 0.5, solver=playground.solver("dopri5", 1e-5))
    assert len(adaptive.taus) == 21 and adaptive.nfe >= 7
    # the two solvers agree on H(1) up to the Euler error, far below the displacement
    assert abs(adaptive.norms[-1] - d.norms[-1]) < 0.2 * d.norms[-1]
    assert json.loads(json.dumps(api_dynamics(playground, PROMPT, 0.5)))["nfe"] == 4


def test_dynamics_view_draws_two_figures(playground):
    candidates, trajectory, caption = dynamics_view(playground, Form(PROMPT, [1.0]))
    assert candidates.axes[0].get_xlabel() == playground.names[0]
    assert trajectory.axes[0].get_xlabel() == "τ"
    assert "NFE 4" in caption


BAD = [  # (what, form overrides, message fragment)
    ("empty prompt", dict(prompt=""), "the prompt is empty"),
    ("blank prompt", dict(prompt="  \n "), "the prompt is empty"),
    ("prompt not text", dict(prompt=None), "the prompt must be text"),
    ("over-long prompt", dict(prompt="word " * 500), "at most 2000 are accepted"),
    ("prompt too long for the context", dict(prompt="The movie was good . " * 10),
     "fit in the model's context of 32"),
    ("NaN u", dict(u=[math.nan]), "u must be a finite number, got nan"),
    ("infinite u", dict(u=[math.inf]), "u must be a finite number"),
    ("u above the range", dict(u=[3.5]), "u = 3.5 is outside [-3, 3]"),
    ("u below the range", dict(u=[-7]), "u = -7 is outside [-3, 3]"),
    ("u not a number", dict(u=["left"]), "u must be a number, got 'left'"),
    ("missing u", dict(u=[None]), "u must be a number, got None"),
    ("tolerance zero", dict(solver="dopri5", tolerance=0), "tolerance = 0 is outside (0, 1]"),
    ("tolerance negative", dict(solver="dopri5", tolerance=-1e-3), "tolerance = -0.001"),
    ("tolerance NaN", dict(solver="dopri5", tolerance=math.nan), "tolerance must be a finite"),
    ("unknown solver", dict(solver="rk9"), "solver 'rk9': choose one of train, dopri5"),
    ("temperature zero", dict(temperature=0), "temperature = 0 is outside (0, 5]"),
    ("top-p zero", dict(top_p=0), "top-p = 0 is outside (0, 1]"),
    ("top-p NaN", dict(top_p=math.nan), "top-p must be a finite number"),
    ("no new tokens", dict(max_new_tokens=0), "max new tokens = 0 is outside [1, 31]"),
    ("too many tokens", dict(max_new_tokens=500), "max new tokens = 500 is outside [1, 31]"),
    ("fractional tokens", dict(max_new_tokens=2.5), "max new tokens must be a whole number"),
    ("negative seed", dict(seed=-1), "seed = -1 is outside"),
    ("negative guidance", dict(guidance=-1), "guidance γ = -1 is outside [0, 10]"),
]


@pytest.mark.parametrize("what, overrides, needle", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gives_the_message_in_every_view(playground, what, overrides, needle):
    rest = dict(overrides)
    form = Form(rest.pop("prompt", PROMPT), rest.pop("u", [0.0]), **rest)
    out, rows, status = list(generate_view(playground, form))[-1]
    assert status.startswith("**error:**") and needle in status, status
    assert out == "" and rows == []
    assert needle in list(side_by_side_view(playground, form, [-1, 0, 1]))[-1][-1]
    if what not in ("prompt too long for the context",) and not any(
            k in overrides for k in ("temperature", "top_p", "max_new_tokens", "seed",
                                     "guidance")):
        assert needle in dynamics_view(playground, form)[-1]  # dynamics reads no sampling


def test_bad_input_raises_from_the_api(playground):
    with pytest.raises(InputError, match="the prompt is empty"):
        api_generate(playground, "", 0.0, 10, 1.0, 0.9, 0)
    with pytest.raises(InputError, match=r"u = 4 is outside \[-3, 3\]"):
        api_generate(playground, PROMPT, 4.0, 10, 1.0, 0.9, 0)
    with pytest.raises(InputError, match="three values of u"):
        api_side_by_side(playground, PROMPT, [1.0, -1.0])
    with pytest.raises(InputError, match="tolerance"):
        api_dynamics(playground, PROMPT, 0.0, "dopri5", 0.0)


def test_a_solve_past_max_nfe_is_a_message_and_the_playground_carries_on(steered_dir):
    pg = Playground.load(steered_dir, Limits(max_nfe=5))
    form = Form(PROMPT, [1.0], solver="dopri5", tolerance=1e-6, max_new_tokens=4)
    *_, (out, rows, status) = generate_view(pg, form)
    assert "more than max_nfe=5" in status and status.startswith("**error:**")
    with pytest.raises(SolverError, match="max_nfe=5"):
        pg.generate(PROMPT, 1.0, pg.sampling(4), pg.solver("dopri5", 1e-6))
    assert "max_nfe=5" in dynamics_view(pg, form)[-1]
    # the training solver needs 4 evaluations a token: the same playground still answers
    assert len(pg.generate(PROMPT, 1.0, pg.sampling(4)).tokens) == 4


def test_the_checkpoint_must_be_a_hybrid_with_a_tokenizer(steered_dir, tmp_path):
    from steerflow.model.hub import load_model

    model = load_model(steered_dir)
    model.tokenizer = None
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        Playground(model)
    from steerflow.model.gpt import SteerFlowGPT

    discrete = SteerFlowGPT(model.config.as_baseline())
    discrete.tokenizer = load_model(steered_dir).tokenizer
    with pytest.raises(InputError, match="discrete baseline"):
        Playground(discrete)


def test_axes_are_named_after_the_steering_run(tmp_path):
    assert axis_names(tmp_path, 1) == ["u"]
    (tmp_path / "train_config.json").write_text(json.dumps(
        {"task": "steer", "steer_data": "sst2", "steer_axis": 1}))
    assert axis_names(tmp_path, 2) == ["u[0]", "u[1]: sentiment (sst2)"]
    (tmp_path / "train_config.json").write_text(json.dumps(
        {"task": "steer", "steer_data": "/data/formality.jsonl", "steer_axis": 0}))
    assert axis_names(tmp_path, 2)[0] == "u[0]: formality (formality.jsonl)"


def test_form_reads_the_widgets_in_page_order():
    values = ["p", 0.1, -0.2, 1.5, 0.7, 0.8, 9, 11, "dopri5", 1e-4]
    form = Form.from_widgets(2, values)
    assert (form.prompt, form.u) == ("p", [0.1, -0.2])
    assert form.settings == dict(guidance=1.5, temperature=0.7, top_p=0.8, max_new_tokens=9,
                                 seed=11, solver="dopri5", tolerance=1e-4)
    assert Form("p").settings == Form.SETTINGS
    with pytest.raises(TypeError, match="unknown form settings"):
        Form("p", top_k=5)


def test_several_axes_side_by_side_varies_one_and_keeps_the_others(playground):
    from steerflow.config import ModelConfig
    from steerflow.model.gpt import SteerFlowGPT

    torch.manual_seed(0)
    model = SteerFlowGPT(ModelConfig.from_name("tiny", control_dim=2,
                                               vocab_size=playground.tokenizer.vocab_size))
    model.tokenizer = playground.tokenizer
    pg = Playground(model)
    assert pg.names == ["u[0]", "u[1]"] and pg.control(0.3) == [0.3, 0.3]
    assert pg.triple([-1, 0, 2], [0.5, -0.5], axis=1) == [[0.5, -1.0], [0.5, 0.0], [0.5, 2.0]]
    with pytest.raises(InputError, match=r"axis = 2 is outside \[0, 1\]"):
        pg.triple([-1, 0, 1], 0.0, axis=2)
    with pytest.raises(InputError, match="u has 3 values; the model's control_dim is 2"):
        pg.control([1, 2, 3])
    d = dynamics(pg, PROMPT, [0.5, -0.5], axis=1)
    assert d.axis_name == "u[1]" and d.u == [0.5, -0.5]
    assert len(pg.generate(PROMPT, [1.0, -1.0], pg.sampling(3)).tokens) == 3


def test_generation_stops_at_the_end_of_the_text(playground):
    step = playground.generate(PROMPT, -1.0, playground.sampling(20))
    eos = playground.tokenizer.eos_id
    assert step.ended and step.tokens[-1] == eos and eos not in step.tokens[:-1]
    assert len(step.tokens) < 20 and len(step.nfe) == len(step.tokens)
    assert step.text == playground.tokenizer.decode(step.tokens[:-1])
    assert "<|endoftext|>" not in step.text and step.text.rstrip().endswith(".")
