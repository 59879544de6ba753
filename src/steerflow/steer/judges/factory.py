"""``make_judge(spec, **kw)``: a judge from a spec string (``vader``, ``sst2-tfidf``, ``minilm``,
``hf:<model>``), with its keyword arguments checked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from steerflow.errors import InputError
from steerflow.steer.judges.base import Judge
from steerflow.steer.judges.embedding import EmbeddingJudge
from steerflow.steer.judges.embedding import load_or_train as load_or_train_embedding
from steerflow.steer.judges.pretrained import HFPipelineJudge, VaderJudge
from steerflow.steer.judges.sst2 import SST2ClassifierJudge, load_or_train

JUDGE_SPECS = ("vader", "sst2-tfidf", "minilm", "hf:<model path or id>")


def _check_kwargs(spec: str, kw: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(kw) - allowed
    if unknown:
        raise InputError(
            f"make_judge({spec!r}) got unknown arguments {sorted(unknown)}; "
            f"allowed: {sorted(allowed)}"
        )


def _make_trained(
    spec: str, kw: dict[str, Any], allowed_extra: set[str]
) -> tuple[str, dict[str, Any]]:
    """Decide between loading (``path=``) and training (``train_pairs=``, ``dev_pairs=``)."""
    _check_kwargs(spec, kw, {"path", "train_pairs", "dev_pairs"} | allowed_extra)
    if "path" in kw:
        return "load", kw
    if "train_pairs" in kw and "dev_pairs" in kw:
        return "train", kw
    raise InputError(
        f"make_judge({spec!r}) needs path= (a saved judge) or train_pairs= and dev_pairs="
    )


def _make_sst2(kw: dict[str, Any]) -> Judge:
    mode, kw = _make_trained("sst2-tfidf", kw, {"cache_dir", "seed", "config"})
    if mode == "load":
        _check_kwargs("sst2-tfidf", kw, {"path"})
        return SST2ClassifierJudge.load(kw["path"])
    train_pairs, dev_pairs = kw.pop("train_pairs"), kw.pop("dev_pairs")
    if "cache_dir" in kw:
        return load_or_train(kw.pop("cache_dir"), lambda: train_pairs, lambda: dev_pairs, **kw)
    return SST2ClassifierJudge.train(train_pairs, dev_pairs, **kw)


def _make_minilm(kw: dict[str, Any]) -> Judge:
    mode, kw = _make_trained("minilm", kw, {"encoder", "max_train", "seed", "C", "cache_dir"})
    if mode == "load":
        _check_kwargs("minilm", kw, {"path", "encoder"})
        return EmbeddingJudge.load(kw.pop("path"), **kw)
    train_pairs, dev_pairs = kw.pop("train_pairs"), kw.pop("dev_pairs")
    if "cache_dir" in kw:
        return load_or_train_embedding(kw.pop("cache_dir"), train_pairs, dev_pairs, **kw)
    return EmbeddingJudge.train(train_pairs, dev_pairs, **kw)


def make_judge(spec: str, **kw: Any) -> Judge:
    """Build a judge from a spec string.

    - ``"vader"``: :class:`VaderJudge` (no arguments).
    - ``"sst2-tfidf"``: ``path=`` to load, or ``train_pairs=``, ``dev_pairs=`` [``cache_dir=``,
      ``seed=``, ``config=``] to train (cached in ``cache_dir`` if given).
    - ``"minilm"``: ``path=`` or ``train_pairs=``, ``dev_pairs=`` [``cache_dir=``,
      ``max_train=``, ``seed=``, ``C=``] (the head cached in ``cache_dir`` if given); optional
      ``encoder=``.
    - ``"hf:<model>"``: :class:`HFPipelineJudge` with keyword arguments passed through.
    """
    if spec == "vader":
        _check_kwargs(spec, kw, set())
        return VaderJudge()
    if spec == "sst2-tfidf":
        return _make_sst2(dict(kw))
    if spec == "minilm":
        return _make_minilm(dict(kw))
    if spec.startswith("hf:") and len(spec) > 3:
        _check_kwargs(spec, kw, {"pipeline_fn", "positive_label", "negative_label", "batch_size"})
        return HFPipelineJudge(spec[3:], **kw)
    raise InputError(f"unknown judge spec {spec!r}; valid specs: {', '.join(JUDGE_SPECS)}")
