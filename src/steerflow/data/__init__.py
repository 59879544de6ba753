"""Data layer: sources, tokenizers, WikiText-2 token caches, LM batches and SST-2.

``import steerflow.data`` is light: the optional ``datasets`` package is imported only when a
Hub source is actually used.
"""

from steerflow.data.batches import eval_batches, lm_batch, num_eval_windows
from steerflow.data.source import LAYOUT, DataSource, resolve_data_source
from steerflow.data.sst2 import load_sst2
from steerflow.data.texts import load_lm_texts
from steerflow.data.tokenizer import Tokenizer, build_tokenizer, train_bpe
from steerflow.data.wikitext import PreparedLM, prepare_lm_data

__all__ = [
    "LAYOUT",
    "DataSource",
    "PreparedLM",
    "Tokenizer",
    "build_tokenizer",
    "eval_batches",
    "lm_batch",
    "load_lm_texts",
    "load_sst2",
    "num_eval_windows",
    "prepare_lm_data",
    "resolve_data_source",
    "train_bpe",
]
