"""The papers' studies and the numbers they are measured against.

* :mod:`~steerflow.experiments.paper` — every number the two papers report and every target
  steerflow measures itself against, in one place.
* :mod:`~steerflow.experiments.gradient_stability` — paper 1's Exp. 1 (Table 1, Fig. 1): the
  discrete baseline and the hybrid trained on the same data and seed.
* :mod:`~steerflow.experiments.adaptive_depth` — adaptive depth at inference (paper 1's open
  question): the per-token solver against the fixed grid; its settings in
  :mod:`~steerflow.experiments.adaptive_settings`, its files in
  :mod:`~steerflow.experiments.adaptive_report`.
"""
