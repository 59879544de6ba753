"""Flow analysis of transformers as dynamical systems (paper 2).

Submodules (imported on use, so ``import steerflow.analysis`` stays light):

* :mod:`~steerflow.analysis.convergence` — error vs number of steps, fitted convergence order;
* :mod:`~steerflow.analysis.lognorm` — one-sided Lipschitz constants μ = λ_max((J + Jᵀ)/2) by
  Lanczos on Jacobian-vector products;
* :mod:`~steerflow.analysis.perturbation` — perturbation growth against exp(∫ μ dτ);
* :mod:`~steerflow.analysis.discrete` — how ODE-like the residual stream of a discrete model is;
* :mod:`~steerflow.analysis.refinement` — depth refinement of continuous transformers with smooth
  vs piecewise-constant weights in depth;
* :mod:`~steerflow.analysis.flow` — the whole ``steerflow analyze flow`` run.
"""
