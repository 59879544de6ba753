"""The playground's two plots, from :class:`~steerflow.serve.dynamics.Dynamics`.

Figures are built as ``matplotlib.figure.Figure`` objects, not through ``pyplot``: requests run
on several threads and pyplot's figure registry is global state; a bare figure is freed with the
request that made it.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from steerflow.serve.dynamics import Dynamics

SIZE = (6.0, 3.4)


def candidates_figure(d: Dynamics) -> Figure:
    """P(next token) of the likeliest candidates against u on one axis (paper 1, Fig. 2), with
    the current u marked."""
    fig = Figure(figsize=SIZE, layout="constrained")
    ax = fig.add_subplot()
    for j, label in enumerate(d.candidates):
        ax.plot(d.us, d.probs[:, j], label=label, lw=1.8)
    ax.axvline(d.u[d.axis], color="k", ls=":", lw=1, label="current u")
    ax.set_xlabel(d.axis_name)
    ax.set_ylabel("P(next token)")
    ax.set_ylim(bottom=0)
    ax.set_title("next-token candidates against u", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.grid(alpha=0.3)
    return fig


def displacement_figure(d: Dynamics) -> Figure:
    """‖H(τ) − H(0)‖ along τ for the last prompt token, the solve's NFE in the title."""
    fig = Figure(figsize=SIZE, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(d.taus, d.norms, marker="o", ms=3, lw=1.8)
    ax.set_xlabel("τ")
    ax.set_ylabel("‖H(τ) − H(0)‖")
    ax.set_xlim(0, 1)
    ax.set_title(f"last token, {d.solver}: NFE {d.nfe}, ‖H(0)‖ = {d.h0_norm:.3g}", fontsize=10)
    ax.grid(alpha=0.3)
    return fig
