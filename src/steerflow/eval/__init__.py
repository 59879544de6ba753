"""Evaluation of steered generation: sentiment judges and text-diversity metrics.

Modules (imported on demand so that ``import steerflow.eval`` stays light):

- :mod:`steerflow.eval.judges` — sentiment judges (VADER lexicon, a TF-IDF classifier trained on
  SST-2, a Hugging Face pipeline wrapper, a MiniLM-embedding classifier), ``make_judge`` and
  inter-judge agreement (raw agreement, Cohen's kappa).
- :mod:`steerflow.eval.text_metrics` — distinct-n diversity of generated continuations.
"""
