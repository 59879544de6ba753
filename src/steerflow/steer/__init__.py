"""Steering with the control u: steering data, the paper's probe and sweep, open-ended evaluation
with judges, and the baselines it is compared with (no control, ActAdd, additive injection).

Modules (imported on demand so that ``import steerflow.steer`` stays light):

- :mod:`steerflow.steer.data` — :class:`SteerExample`, SST-2 / cloze / JSON-lines steering data and
  :func:`build_steer_source`, the batch source of ``steerflow train --task steer``.
- :mod:`steerflow.steer.sentiment_probe` — the paper's next-token probe ("The movie was" →
  " good" / " bad") and its u sweep.
- :mod:`steerflow.steer.prompts` — neutral prompts from WikiText sentence openings; prompt files.
- :mod:`steerflow.steer.actadd` — activation addition (Turner et al. 2023) as a forward pre-hook.
- :mod:`steerflow.steer.open_ended` — sampling continuations, judging them, fluency and diversity.
- :mod:`steerflow.steer.judges` — sentiment judges (VADER, an SST-2 classifier, MiniLM, Hugging
  Face pipelines) and the agreement between them.
- :mod:`steerflow.steer.text_metrics` — distinct-n diversity of generated continuations.
- :mod:`steerflow.steer.report` — ``steerflow eval steering``: results.json, tables and figures.
"""
