"""The papers' studies and the numbers they are measured against.

* :mod:`~steerflow.experiments.paper` — every number the two papers report and every target
  steerflow measures itself against, in one place.
"""
