"""Everything that measures the dynamics of a trained model: the solver studies of paper 1 and the
flow analysis of paper 2.

Submodules (imported on use, so ``import steerflow.analysis`` stays light):

* :mod:`~steerflow.analysis.settings` — the studies' settings (no torch: the CLI reads its
  defaults from them);
* :mod:`~steerflow.analysis.inputs` — checked checkpoints, validation text, control vectors;
* :mod:`~steerflow.analysis.divergence` — how far a solve is from a reference solve;
* :mod:`~steerflow.analysis.invariance` — the solver invariance test (paper 1, Exp. 3);
* :mod:`~steerflow.analysis.solver_probing` — NFE against u and tolerance, linear probes over
  depth (paper 1, §5.3);
* :mod:`~steerflow.analysis.convergence` — error vs number of steps, fitted convergence order
  (the one log-log slope fitter);
* :mod:`~steerflow.analysis.lognorm` — one-sided Lipschitz constants μ = λ_max((J + Jᵀ)/2) by
  Lanczos on Jacobian-vector products;
* :mod:`~steerflow.analysis.perturbation` — perturbation growth against exp(∫ μ dτ);
* :mod:`~steerflow.analysis.discrete` — how ODE-like the residual stream of a discrete model is;
* :mod:`~steerflow.analysis.hf_stack`, :mod:`~steerflow.analysis.hf_flow` — a Hugging Face
  causal LM read as a residual stack, and ``steerflow analyze flow --hf`` on it;
* :mod:`~steerflow.analysis.refinement` — depth refinement of continuous transformers with smooth
  vs piecewise-constant weights in depth;
* :mod:`~steerflow.analysis.flow` — the whole ``steerflow analyze flow`` run;
* :mod:`~steerflow.analysis.figures`, :mod:`~steerflow.analysis.report` — the PNG figures and
  the flow analysis's Markdown report.
"""
