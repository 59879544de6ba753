"""One-sided Lipschitz constants: the logarithmic norm of a Jacobian from Jacobian-vector products.

For a vector field ``f`` the (Euclidean) log-norm of its Jacobian ``J = ∂f/∂x`` at ``x`` is

    μ(J) = λ_max((J + Jᵀ) / 2)

and ``μ ≤ c`` everywhere is the one-sided Lipschitz condition ``⟨f(x) − f(y), x − y⟩ ≤ c‖x − y‖²``
of paper 2: perturbations of the flow then grow at most like ``exp(∫ μ dτ)``.

We never build ``J``. The symmetric part acts on a vector as ``S v = (J v + Jᵀ v) / 2`` from two
Jacobian-vector products (``torch.func.jvp``/``vjp``, or the equivalent, faster autograd form), and
its largest eigenvalue comes from a Lanczos (Krylov) iteration with full re-orthogonalisation and a
Rayleigh–Ritz step. Many independent problems run as one batch: one per token for a
position-wise field (block-diagonal ``J``), one per sequence for an attention field, whose
Jacobian couples all ``T·d`` coordinates of a sequence.

The Ritz value never exceeds the true ``λ_max`` (Courant–Fischer) and equals it once the Krylov
space holds the top eigenvector — at the latest after ``n`` iterations for an ``n``-dim problem.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Optional

import torch

from steerflow.errors import InputError

Grouping = Literal["token", "sequence"]
Backend = Literal["autograd", "func"]
MatVec = Callable[[torch.Tensor], torch.Tensor]

#: a new Krylov direction shorter than this (relative to ‖S q‖) means the space is invariant
_BREAKDOWN = 1e-10


@dataclass
class LogNormEstimate:
    """Top eigenpair estimates of ``S = (J + Jᵀ)/2``, one per problem.

    Attributes:
        mu: ``(P,)`` the largest Ritz value, an estimate (from below) of ``λ_max(S)``.
        residual: ``(P,)`` ``‖S y − μ y‖`` for the unit Ritz vector ``y``: some eigenvalue of S
            lies within this distance of ``mu`` (a posteriori quality measure).
        change: ``(P,)`` how much ``mu`` moved between half and all of the Krylov dimension (0
            once the Krylov space stopped improving it).
        iters: the Krylov dimension used.
    """

    mu: torch.Tensor
    residual: torch.Tensor
    change: torch.Tensor
    iters: int


@contextlib.contextmanager
def forward_ad_attention() -> Iterator[None]:
    """Route ``scaled_dot_product_attention`` to its math kernel, which supports forward-mode AD.

    PyTorch's fused CPU/GPU attention kernels have no ``jvp`` rule; the math kernel computes the
    same function from differentiable primitives.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def symmetric_part_matvec(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                          backend: Backend = "autograd") -> MatVec:
    """``v ↦ (J v + Jᵀ v) / 2`` with ``J = ∂f/∂x`` at ``x`` (``v`` has the shape of ``x``).

    ``backend="func"``: ``J v`` by forward mode (``torch.func.jvp``, which re-runs ``f`` at each
    call) and ``Jᵀ v`` by ``torch.func.vjp``. ``backend="autograd"`` (default, 2-4× faster on CPU):
    one graph of ``f`` is built once; ``Jᵀ v`` is a backward pass through it and ``J v`` the
    "double-vjp" ``∂/∂w ⟨Jᵀ w, v⟩`` through the graph of ``w ↦ Jᵀ w`` (linear in ``w``).
    Both give the same products up to roundoff (tested).
    """
    if backend == "func":
        return _func_matvec(f, x)
    if backend != "autograd":
        raise InputError(f"backend must be 'autograd' or 'func', got {backend!r}")
    with torch.enable_grad(), forward_ad_attention():  # math attention: twice differentiable
        x = x.detach().requires_grad_(True)
        out = f(x)
        w = torch.zeros_like(out, requires_grad=True)
        (jtw,) = torch.autograd.grad(out, x, w, create_graph=True)  # Jᵀw, a graph linear in w

    def matvec(v: torch.Tensor) -> torch.Tensor:
        (jtv,) = torch.autograd.grad(out, x, v, retain_graph=True)  # Jᵀ v
        (jv,) = torch.autograd.grad(jtw, w, v, retain_graph=True)  # J v = ∂/∂w ⟨Jᵀ w, v⟩
        return 0.5 * (jv + jtv)  # S v = (J + Jᵀ) v / 2

    return matvec


def _func_matvec(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> MatVec:
    """``S v`` from ``torch.func.jvp`` and ``torch.func.vjp``."""
    from torch.func import jvp, vjp

    # no_grad keeps autograd from recording parameter graphs; torch.func ignores an outer no_grad
    with torch.no_grad(), forward_ad_attention():  # the same attention kernel for both products
        _, pullback = vjp(f, x)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), forward_ad_attention():
            _, jv = jvp(f, (x,), (v,))
            (jtv,) = pullback(v)
        return 0.5 * (jv + jtv)  # S v = (J + Jᵀ) v / 2

    return matvec


def _orthogonalise(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Remove from ``w`` ``(P, n)`` its components along the orthonormal rows of ``basis`` ``(P, k, n)``.

    Classical Gram–Schmidt applied twice ("twice is enough", Giraud et al. 2005).
    """
    for _ in range(2):
        w = w - torch.einsum("pk,pkn->pn", torch.einsum("pkn,pn->pk", basis, w), basis)
    return w


def lanczos_max_eig(matvec: MatVec, num_problems: int, dim: int, iters: int, *,
                    dtype: torch.dtype = torch.float64, device=None,
                    generator: Optional[torch.Generator] = None) -> LogNormEstimate:
    """Largest eigenvalue of ``P`` symmetric ``n × n`` operators given only as a batched matvec.

    Args:
        matvec: maps ``(P, n)`` to ``(P, n)``; row ``p`` is operator ``p`` applied to row ``p``.
        num_problems, dim: ``P`` and ``n``.
        iters: Krylov dimension ``k`` (capped at ``n``; ``k = n`` gives the exact value).
        generator: for the random start vectors.
    """
    if iters < 1:
        raise InputError(f"Lanczos needs iters >= 1, got {iters}")
    k_max = min(iters, dim)
    q = torch.randn(num_problems, dim, dtype=dtype, device=device, generator=generator)
    q = q / q.norm(dim=1, keepdim=True)
    basis = torch.empty(num_problems, k_max, dim, dtype=dtype, device=device)  # Q: (P, k, n)
    images = torch.empty_like(basis)  # S Q: (P, k, n)
    half = None  # the top Ritz value at half the Krylov dimension, for the convergence check
    for j in range(k_max):
        basis[:, j] = q
        images[:, j] = matvec(q)
        if j + 1 == max(1, k_max // 2):
            half = _top_ritz(basis[:, : j + 1], images[:, : j + 1])[0]
        if j + 1 == k_max:
            break
        w = _orthogonalise(images[:, j], basis[:, : j + 1])
        norm = w.norm(dim=1, keepdim=True)
        broken = norm.squeeze(1) <= _BREAKDOWN * images[:, j].norm(dim=1).clamp_min(1e-300)
        if bool(broken.any()):  # invariant subspace found: continue from a fresh direction
            fresh = torch.randn(num_problems, dim, dtype=dtype, device=device, generator=generator)
            fresh = _orthogonalise(fresh, basis[:, : j + 1])
            w = torch.where(broken[:, None], fresh, w)
            norm = w.norm(dim=1, keepdim=True)
        q = w / norm
    mu, residual = _top_ritz(basis, images)
    change = (mu - half).abs()
    return LogNormEstimate(mu=mu, residual=residual, change=change, iters=k_max)


def _top_ritz(basis: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rayleigh–Ritz on span(Q): top eigenvalue of ``Qᵀ S Q`` and the residual of its Ritz pair."""
    h = torch.einsum("pin,pjn->pij", basis, images)  # (P, k, k) = Qᵀ S Q
    h = 0.5 * (h + h.transpose(1, 2))  # symmetric up to roundoff
    theta, vecs = torch.linalg.eigh(h)  # ascending
    y = vecs[:, :, -1]  # (P, k)
    ritz = torch.einsum("pk,pkn->pn", y, basis)  # unit Ritz vector, (P, n)
    s_ritz = torch.einsum("pk,pkn->pn", y, images)  # S y, (P, n)
    mu = theta[:, -1]
    return mu, (s_ritz - mu[:, None] * ritz).norm(dim=1)


def _problem_shape(x: torch.Tensor, grouping: Grouping) -> tuple[int, int]:
    """``(P, n)``: independent problems and their dimension for a ``(B, T, d)`` state."""
    if x.ndim != 3:
        raise InputError(f"expected a (B, T, d) state, got shape {tuple(x.shape)}")
    B, T, d = x.shape
    if grouping == "token":
        return B * T, d
    if grouping == "sequence":
        return B, T * d
    raise InputError(f"grouping must be 'token' or 'sequence', got {grouping!r}")


def log_norm(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grouping: Grouping,
             iters: int = 32, seed: int = 0, backend: Backend = "autograd") -> LogNormEstimate:
    """μ = λ_max((J + Jᵀ)/2) of ``f`` at ``x`` ``(B, T, d)``, per token or per sequence.

    ``grouping="token"`` is exact only for position-wise ``f`` (token t's output depends on token
    t only), whose Jacobian is block-diagonal; ``"sequence"`` treats each sequence's ``T·d``
    coordinates as one problem (attention fields). ``mu`` has shape ``(B·T,)`` or ``(B,)``.
    """
    P, n = _problem_shape(x, grouping)
    x = x.detach()
    sym = symmetric_part_matvec(f, x, backend)

    def matvec(v: torch.Tensor) -> torch.Tensor:  # (P, n) -> (P, n)
        return sym(v.reshape(x.shape)).reshape(P, n).detach()

    generator = torch.Generator(device=x.device).manual_seed(seed)
    return lanczos_max_eig(matvec, P, n, iters, dtype=x.dtype, device=x.device, generator=generator)


def field_function(ode_block, tau: float, u: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``H ↦ α·F(H, τ, u)``: the right-hand side the ODE block integrates, at fixed τ and u ``(B, c)``."""
    u3 = u.unsqueeze(1)  # (B, 1, c): broadcast over tokens as in ODEBlock.solve
    tau_t = torch.tensor(float(tau), dtype=u.dtype, device=u.device)

    def f(h: torch.Tensor) -> torch.Tensor:
        return ode_block.alpha * ode_block.field(tau_t, h, u3)

    return f


def field_grouping(ode_block) -> Grouping:
    """Per token for a position-wise field (mlp, contractive), per sequence for attention fields."""
    return "token" if ode_block.field.position_wise else "sequence"


def field_log_norm(ode_block, h: torch.Tensor, tau: float, u: torch.Tensor, iters: int = 32,
                   seed: int = 0) -> LogNormEstimate:
    """μ of the ODE block's vector field α·F at state ``h`` ``(B, T, d)``, time τ and control u ``(B, c)``."""
    return log_norm(field_function(ode_block, tau, u), h, field_grouping(ode_block), iters, seed)


def dense_log_norm(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """μ from the dense Jacobian of ``f`` at a single flat point ``x`` ``(n,)`` — for tests only."""
    jac = torch.autograd.functional.jacobian(f, x)  # (n, n)
    return torch.linalg.eigvalsh(0.5 * (jac + jac.T))[-1]
