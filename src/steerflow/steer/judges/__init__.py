"""Sentiment judges for steered continuations, and agreement between judges.

A judge maps texts to P(positive). steerflow judges every steered continuation with at least two
independent judges:

- :class:`~steerflow.steer.judges.pretrained.VaderJudge` — the VADER lexicon and rules (Hutto &
  Gilbert, 2014); no training.
- :class:`~steerflow.steer.judges.sst2.SST2ClassifierJudge` — TF-IDF word 1-2-grams + character
  3-5-grams and a logistic regression that steerflow trains on SST-2 train and validates on SST-2
  dev. Its parameters are saved as JSON + ``.npy`` (no pickle) and its inference is plain
  NumPy/SciPy.
- :class:`~steerflow.steer.judges.embedding.EmbeddingJudge` — logistic regression on
  all-MiniLM-L6-v2 sentence embeddings (optional extra ``pip install steerflow[eval]``).
- :class:`~steerflow.steer.judges.pretrained.HFPipelineJudge` — any Hugging Face
  ``sentiment-analysis`` pipeline (needs ``transformers`` and the model on disk or a network).

Modules, one job each (imported on demand):

- :mod:`.base` — the :class:`Judge` interface and the ``(text, label)`` training pairs.
- :mod:`.text` — WikiText clean-up of generated text and the PTB-style tokenizer of SST-2.
- :mod:`.tfidf` — TF-IDF feature blocks in NumPy/SciPy.
- :mod:`.store` — saving and loading judges as JSON + ``.npy`` with a checksummed manifest.
- :mod:`.pretrained`, :mod:`.sst2`, :mod:`.embedding` — the judges.
- :mod:`.factory` — :func:`make_judge` from a spec string (``vader``, ``sst2-tfidf``, ...).
- :mod:`.agreement` — raw agreement and Cohen's kappa between two judges.
- :mod:`.panel` — the judges of one steering evaluation (MiniLM whenever it imports, cached).

A new judge subclasses :class:`~steerflow.steer.judges.base.Judge` in a module of its own (copy
:mod:`.pretrained` for one that needs no training, :mod:`.embedding` for a trained one) and gets a
spec in :mod:`.factory`.
"""
