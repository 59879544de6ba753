"""Steering with the control u: steering data, the paper's probe and sweep, open-ended evaluation
with judges, and the methods it is compared with (no control, guidance over u, DExperts, ActAdd,
additive injection).

Modules (imported on demand so that ``import steerflow.steer`` stays light):

- :mod:`steerflow.steer.data` — :class:`SteerExample`, SST-2 / cloze / JSON-lines steering data and
  :func:`build_steer_source`, the batch source of ``steerflow train --task steer``.
- :mod:`steerflow.steer.sentiment_probe` — the paper's next-token probe ("The movie was" →
  " good" / " bad") and its u sweep.
- :mod:`steerflow.steer.prompts` — neutral prompts from WikiText sentence openings; prompt files.
- :mod:`steerflow.steer.actadd` — activation addition (Turner et al. 2023) as a forward pre-hook.
- :mod:`steerflow.steer.dexperts` — DExperts (Liu et al. 2021): base + expert − anti-expert.
- :mod:`steerflow.steer.open_ended` — sampling continuations (timed), judging them with 95 %
  intervals, fluency and diversity.
- :mod:`steerflow.steer.intervals` — cluster-bootstrap intervals of positive rates.
- :mod:`steerflow.steer.methods` — the decoding methods ``eval steering`` compares, their sweeps
  and generation speed.
- :mod:`steerflow.steer.comparison` — best rate at matched perplexity, "the ODE beats X", targets.
- :mod:`steerflow.steer.evaluate` — ``evaluate_steering``: the whole evaluation as one dict.
- :mod:`steerflow.steer.judges` — sentiment judges (VADER, an SST-2 classifier, MiniLM, Hugging
  Face pipelines) and the agreement between them.
- :mod:`steerflow.steer.text_metrics` — distinct-n diversity of generated continuations.
- :mod:`steerflow.steer.report` — ``steerflow eval steering``: results.json, tables and figures.
"""
