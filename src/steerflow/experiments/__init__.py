"""The papers' studies and the numbers they are measured against.

* :mod:`~steerflow.experiments.paper` — every number the two papers report and every target
  steerflow measures itself against, in one place.
* :mod:`~steerflow.experiments.gradient_stability` — paper 1's Exp. 1 (Table 1, Fig. 1): the
  discrete baseline and the hybrid trained on the same data and seed.
"""
