"""What each part of the playground page shows, computed from the raw widget values.

The page hands its shared widgets over in one fixed order (:meth:`Form.from_widgets`); each view
checks them through the :class:`~steerflow.serve.session.Playground`, runs the model and returns
what the widgets display. A bad input or a failed solve never raises out of a view: it becomes
the status line, so the page shows it and the server carries on. The ``api_*`` functions are the
scriptable endpoints: they raise :class:`~steerflow.errors.SteerflowError` instead, which the app
turns into the client's error message.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Optional, Sequence

from steerflow.errors import InputError, SteerflowError
from steerflow.serve.dynamics import dynamics, token_label
from steerflow.serve.figures import candidates_figure, displacement_figure
from steerflow.serve.session import DEFAULT_TRIPLE, Playground, Sampling, Step

logger = logging.getLogger(__name__)

#: the NFE table's columns
NFE_HEADERS = ["#", "token", "NFE"]


class Form:
    """The page's shared inputs as the widgets give them (unchecked): the prompt, one value per
    control axis and the :data:`SETTINGS` (any not given take their defaults)."""

    #: the widgets after the prompt and the u sliders, in the page's order, with their defaults
    SETTINGS = {"guidance": 0.0, "temperature": 1.0, "top_p": 0.9, "max_new_tokens": 20,
                "seed": 0, "solver": "train", "tolerance": 1e-3}

    def __init__(self, prompt: Any, u: Sequence[Any] = (0.0,), **settings: Any) -> None:
        unknown = sorted(set(settings) - set(self.SETTINGS))
        if unknown:
            raise TypeError(f"unknown form settings {unknown}; the page has {list(self.SETTINGS)}")
        self.prompt, self.u = prompt, list(u)
        self.settings = {**self.SETTINGS, **settings}

    @classmethod
    def from_widgets(cls, control_dim: int, values: Sequence[Any]) -> "Form":
        """``values`` = prompt, one value per control axis, then :data:`SETTINGS` in order."""
        prompt, rest = values[0], list(values[1:])
        u, settings = rest[:control_dim], rest[control_dim:]
        return cls(prompt, u, **dict(zip(cls.SETTINGS, settings)))

    def checked(self, pg: Playground):
        """``(Sampling, SolverSpec)`` of this form (raises on a bad value)."""
        s = self.settings
        return (pg.sampling(s["max_new_tokens"], s["temperature"], s["top_p"], s["seed"],
                            s["guidance"]),
                self.solver(pg))

    def solver(self, pg: Playground):
        """The form's checked :class:`~steerflow.config.SolverSpec`."""
        return pg.solver(self.settings["solver"], self.settings["tolerance"])


def error_message(exc: BaseException) -> str:
    """The status line for a failed request."""
    if isinstance(exc, SteerflowError):
        return f"**error:** {exc}"
    logger.exception("playground request failed")
    return f"**error:** internal error: {type(exc).__name__}: {exc}"


def nfe_rows(pg: Playground, step: Step) -> list[list[Any]]:
    """One row per generated token: its position, text and the NFE of its solve."""
    return [[i + 1, token_label(pg.tokenizer, t), n]
            for i, (t, n) in enumerate(zip(step.tokens, step.nfe))]


def format_u(u: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:+.2g}" for v in u) + "]"


def summary(step: Step, sampling: Sampling, solver) -> str:
    """The status line of a finished continuation."""
    mean = sum(step.nfe) / len(step.nfe) if step.nfe else 0.0
    how = (f"guidance γ = {sampling.guidance:g} at" if sampling.guidance else "at")
    end = " (end of text)" if step.ended else ""
    return (f"**done:** {len(step.tokens)} tokens{end} {how} u = {format_u(step.u)}, seed "
            f"{sampling.seed} · {solver.describe()} · NFE per token: mean {mean:.1f}, "
            f"max {max(step.nfe, default=0)}")


def generate_view(pg: Playground, form: Form) -> Iterator[tuple[str, list[list[Any]], str]]:
    """Stream ``(continuation, NFE rows, status)`` token by token; on an error the text so far
    stays and the status says what went wrong."""
    step: Optional[Step] = None
    try:
        sampling, solver = form.checked(pg)
        for step in pg.stream(form.prompt, form.u, sampling, solver):
            yield (step.text, nfe_rows(pg, step),
                   f"generating… {len(step.tokens)}/{sampling.max_new_tokens} tokens")
        if step is not None:
            yield step.text, nfe_rows(pg, step), summary(step, sampling, solver)
    except Exception as exc:  # noqa: BLE001 — the page shows it; the server carries on
        yield ("" if step is None else step.text, [] if step is None else nfe_rows(pg, step),
               error_message(exc))


def side_by_side_view(pg: Playground, form: Form, triple: Sequence[Any], axis: Any = 0
                      ) -> Iterator[tuple[str, str, str, str]]:
    """Stream the three continuations at ``triple`` (values of u on ``axis``, the other axes
    at the form's u) and a status line."""
    texts = ["", "", ""]
    try:
        sampling, solver = form.checked(pg)
        controls = pg.triple(triple, form.u, axis)
        for steps in pg.side_by_side(form.prompt, controls, sampling, solver):
            texts = [s.text for s in steps]
            yield (*texts, f"generating… {len(steps[0].tokens)}/{sampling.max_new_tokens} tokens")
        yield (*texts, f"**done:** seed {sampling.seed}, {solver.describe()}: u = "
                       + " | ".join(format_u(u) for u in controls))
    except Exception as exc:  # noqa: BLE001
        yield (*texts, error_message(exc))


def dynamics_view(pg: Playground, form: Form, axis: Any = 0) -> tuple[Any, Any, str]:
    """``(candidates figure, displacement figure, status)`` for the form's prompt and u."""
    try:
        d = dynamics(pg, form.prompt, form.u, axis, form.solver(pg))
    except Exception as exc:  # noqa: BLE001
        return None, None, error_message(exc)
    return (candidates_figure(d), displacement_figure(d),
            f"next token after the prompt at u = {format_u(d.u)}, sweeping {d.axis_name}; "
            f"trajectory of the last prompt token ({d.solver}, NFE {d.nfe})")


# --------------------------------------------------------------------------- the API
def api_generate(pg: Playground, prompt: Any, u: Any, max_new_tokens: Any, temperature: Any,
                 top_p: Any, seed: Any) -> str:
    """The continuation of ``prompt`` under control ``u`` (one number: every axis) with the
    training solver; raises on bad input."""
    sampling = pg.sampling(max_new_tokens, temperature, top_p, seed)
    return pg.generate(prompt, u, sampling).text


def api_side_by_side(pg: Playground, prompt: Any, us: Sequence[Any] = DEFAULT_TRIPLE,
                     max_new_tokens: Any = 20, temperature: Any = 1.0, top_p: Any = 0.9,
                     seed: Any = 0) -> list[str]:
    """The continuations at three values of u (on every axis), same prompt and seed."""
    sampling = pg.sampling(max_new_tokens, temperature, top_p, seed)
    if not isinstance(us, (list, tuple)) or len(us) != 3:
        raise InputError(f"us must be three values of u, got {us!r}")
    controls = [pg.control(v) for v in us]
    last: list[Step] = []
    for last in pg.side_by_side(prompt, controls, sampling):
        pass
    return [s.text for s in last]


def api_dynamics(pg: Playground, prompt: Any, u: Any, solver: Any = "train",
                 tolerance: Any = 1e-3) -> dict[str, Any]:
    """The dynamics data as JSON (:meth:`~steerflow.serve.dynamics.Dynamics.as_dict`)."""
    return dynamics(pg, prompt, u, 0, pg.solver(solver, tolerance)).as_dict()
