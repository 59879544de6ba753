"""The playground page: the Gradio layout of :mod:`steerflow.serve.views`, and its launch.

Gradio is the optional ``app`` extra and is imported only here, inside the functions. Nothing
leaves the machine: analytics, share links, the run history and the monitoring page are off,
and the theme uses the system's fonts. Requests go through Gradio's queue with a bounded
concurrency and a bounded length; the page has no file inputs (the checkpoint is fixed at start).

API endpoints (``gradio_client.Client(url).predict(..., api_name="/generate")``):

* ``/generate`` — ``(prompt, u, max_new_tokens, temperature, top_p, seed) -> text``;
* ``/side_by_side`` — ``(prompt, us, max_new_tokens, temperature, top_p, seed) -> [text] * 3``;
* ``/dynamics`` — ``(prompt, u, solver, tolerance) -> dict`` (the plots' data, sweeping the
  first axis).

u is one number there, put on every control axis. (No ``from __future__ import annotations``
in this module: Gradio reads the endpoints' type hints as objects.)
"""

import functools
import os
from typing import Any, Callable, Optional

from steerflow.errors import InputError, SteerflowError
from steerflow.serve.session import DEFAULT_TRIPLE, Playground
from steerflow.serve.views import (NFE_HEADERS, Form, api_dynamics, api_generate, api_side_by_side,
                                   dynamics_view, generate_view, side_by_side_view)

#: the page's sampling defaults
DEFAULT_PROMPT = "The movie was"
DEFAULT_TOKENS = 20
#: Gradio's queue: requests run at once, and requests waiting at most
DEFAULT_CONCURRENCY = 2
MAX_QUEUE = 64
CSS = "#status {min-height: 2.5em} footer {opacity: 0.6}"


def gradio():
    """The ``gradio`` module with analytics switched off, or a clear error without it."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is first imported
    try:
        import gradio as gr
    except ImportError:
        raise InputError('steerflow serve needs Gradio: pip install "steerflow[app]"') from None
    return gr


def _raising(gr, fn: Callable) -> Callable:
    """``fn`` with a bad input turned into ``gr.Error`` (the client's error message)."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SteerflowError as exc:
            raise gr.Error(str(exc)) from None
    return call


def _header(pg: Playground) -> str:
    cfg = pg.model.config
    params = sum(p.numel() for p in pg.model.parameters())
    return (f"## steerflow playground · `{pg.title}`\n"
            f"{cfg.n_layer} layers, d = {cfg.n_embd}, context {cfg.block_size}, "
            f"{params:,} parameters; the ODE block (field `{cfg.field}`) replaces layers "
            f"{cfg.ode_span[0]}–{cfg.ode_span[1] - 1} and is steered by a control u of "
            f"{cfg.control_dim} {'axis' if cfg.control_dim == 1 else 'axes'}. "
            f"Move u, generate, and compare.")


def _controls(gr, pg: Playground) -> dict[str, Any]:
    """The shared inputs (left column): prompt, one slider per axis, sampling and solver."""
    r, w = pg.limits.u_range, {}
    w["prompt"] = gr.Textbox(DEFAULT_PROMPT, label="prompt", lines=2, elem_id="prompt")
    w["u"] = [gr.Slider(-r, r, value=0.0, step=0.1, label=name, elem_id=f"u{i}")
              for i, name in enumerate(pg.names)]
    with gr.Accordion("sampling", open=True):
        w["guidance"] = gr.Slider(0.0, pg.limits.max_guidance, value=0.0, step=0.1,
                                  label="guidance γ (0: off; γ > 0 samples z(0) + γ·(z(u) − z(−u)))",
                                  elem_id="guidance")
        with gr.Row():
            w["temperature"] = gr.Slider(0.1, pg.limits.max_temperature, value=1.0, step=0.05,
                                         label="temperature", elem_id="temperature")
            w["top_p"] = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="top-p",
                                   elem_id="top_p")
        with gr.Row():
            w["max_new_tokens"] = gr.Slider(1, pg.max_new_tokens, step=1, label="max new tokens",
                                            value=min(DEFAULT_TOKENS, pg.max_new_tokens),
                                            elem_id="max_new_tokens")
            w["seed"] = gr.Number(0, label="seed", precision=0, elem_id="seed")
    with gr.Accordion("solver", open=True):
        w["solver"] = gr.Radio([(pg.solver_label(), "train"),
                                ("dopri5 (adaptive, at the tolerance)", "dopri5")],
                               value="train", label="ODE solver", elem_id="solver")
        w["tolerance"] = gr.Number(1e-3, label="dopri5 tolerance (rtol; atol = rtol / 10)",
                                   elem_id="tolerance")
    return w


def _form_inputs(w: dict[str, Any]) -> list:
    """The shared widgets in :meth:`Form.from_widgets`' order."""
    return [w["prompt"], *w["u"], *(w[name] for name in Form.SETTINGS)]


def _axis_picker(gr, pg: Playground, elem_id: str):
    return gr.Dropdown([(name, i) for i, name in enumerate(pg.names)], value=0,
                       label="axis to vary", visible=pg.control_dim > 1, elem_id=elem_id)


def _results(gr, pg: Playground) -> dict[str, Any]:
    """The status line and the two tabs (right column): the streamed continuation with its NFE
    per token, and the side-by-side view."""
    w: dict[str, Any] = {"status": gr.Markdown("", elem_id="status")}
    with gr.Tab("generate"):
        w["output"] = gr.Textbox(label="continuation (streamed)", lines=6, interactive=False,
                                 elem_id="output")
        w["nfe"] = gr.Dataframe(headers=NFE_HEADERS, label="NFE of the solve per token",
                                interactive=False, max_height=240, elem_id="nfe")
    with gr.Tab("side by side"):
        w["triple"], w["side"] = [], []
        with gr.Row():
            for i, v in enumerate(DEFAULT_TRIPLE):
                with gr.Column(min_width=160):
                    w["triple"].append(gr.Number(v, label="u", elem_id=f"triple{i}"))
                    w["side"].append(gr.Textbox(label="continuation", lines=6,
                                                interactive=False, elem_id=f"side{i}"))
        w["side_axis"] = _axis_picker(gr, pg, "side_axis")
        w["compare"] = gr.Button("compare (same prompt and seed)", elem_id="compare")
    return w


def _dynamics(gr, pg: Playground) -> dict[str, Any]:
    """The dynamics section (full width): axis, button, caption and the two plots."""
    w: dict[str, Any] = {}
    gr.Markdown("### dynamics: the next token against u, and the flow of the last prompt token")
    with gr.Row(equal_height=True):
        w["axis"] = _axis_picker(gr, pg, "dyn_axis")
        w["button"] = gr.Button("plot for the prompt", elem_id="plot", scale=0)
        w["status"] = gr.Markdown("", elem_id="dyn_status")
    with gr.Row():
        w["candidates"] = gr.Plot(show_label=False, elem_id="candidates")
        w["trajectory"] = gr.Plot(show_label=False, elem_id="trajectory")
    return w


def build_app(pg: Playground):
    """The page (a ``gr.Blocks``) over ``pg``, with its API endpoints; not launched."""
    gr = gradio()
    with gr.Blocks(title=f"steerflow · {pg.title}", analytics_enabled=False) as app:
        gr.Markdown(_header(pg))
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                w = _controls(gr, pg)
                w["generate"] = gr.Button("generate", variant="primary", elem_id="generate")
            with gr.Column(scale=3):
                r = _results(gr, pg)
        _wire(pg, w, r, _dynamics(gr, pg))
        _api_endpoints(gr, pg)
    return app


def _wire(pg: Playground, w: dict, r: dict, dyn: dict) -> None:
    """Connect the buttons to the views (UI events only: the API has its own endpoints)."""
    c, inputs = pg.control_dim, _form_inputs(w)

    def on_generate(*values):
        yield from generate_view(pg, Form.from_widgets(c, values))

    def on_compare(*values):
        *form, a, b, third, axis = values
        yield from side_by_side_view(pg, Form.from_widgets(c, form), [a, b, third], axis)

    def on_plot(*values):
        *form, axis = values
        return dynamics_view(pg, Form.from_widgets(c, form), axis)

    private = dict(api_visibility="private")
    plot = dict(fn=on_plot, inputs=inputs + [dyn["axis"]], show_progress_on=[dyn["candidates"]],
                outputs=[dyn["candidates"], dyn["trajectory"], dyn["status"]], **private)
    for event in (w["generate"].click, w["prompt"].submit):
        event(on_generate, inputs, [r["output"], r["nfe"], r["status"]],
              show_progress_on=[r["output"]], **private).then(**plot)
    r["compare"].click(on_compare, inputs + r["triple"] + [r["side_axis"]],
                       r["side"] + [r["status"]], show_progress_on=r["side"], **private)
    dyn["button"].click(**plot)


def _api_endpoints(gr, pg: Playground) -> None:
    """``/generate``, ``/side_by_side`` and ``/dynamics`` (stable names, typed signatures)."""
    def generate(prompt: str, u: float, max_new_tokens: int, temperature: float, top_p: float,
                 seed: int) -> str:
        """The continuation of prompt under control u (every axis), training solver."""
        return api_generate(pg, prompt, u, max_new_tokens, temperature, top_p, seed)

    def side_by_side(prompt: str, us: list[float], max_new_tokens: int, temperature: float,
                     top_p: float, seed: int) -> list[str]:
        """The continuations at three values of u, same prompt and seed."""
        return api_side_by_side(pg, prompt, us, max_new_tokens, temperature, top_p, seed)

    def dynamics(prompt: str, u: float, solver: str, tolerance: float) -> dict:
        """Next-token candidates against u and ‖H(τ) − H(0)‖ of the last prompt token."""
        return api_dynamics(pg, prompt, u, solver, tolerance)

    for fn in (generate, side_by_side, dynamics):
        gr.api(_raising(gr, fn), api_name=fn.__name__)


def launch(app, host: str = "127.0.0.1", port: int = 7860,
           concurrency: int = DEFAULT_CONCURRENCY, on_ready: Optional[Callable] = None) -> None:
    """Serve ``app`` on ``host:port`` until interrupted; ``on_ready(url)`` once it listens."""
    gr = gradio()
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    app.queue(default_concurrency_limit=concurrency, max_size=MAX_QUEUE, api_open=False)
    _, url, _ = app.launch(server_name=host, server_port=port, share=False, inbrowser=False,
                           prevent_thread_lock=True, show_error=True, quiet=True,
                           footer_links=["api"], run_history=False, enable_monitoring=False,
                           ssr_mode=False, pwa=False, mcp_server=False, max_file_size="1mb",
                           theme=theme, css=CSS)
    if on_ready is not None:
        on_ready(url)
    app.block_thread()
