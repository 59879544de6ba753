"""Fixtures for the `transformers` interop tests: small randomly initialised GPT-2 models built
from configs and saved with ``save_pretrained`` (no weights are downloaded), a tokenizer trained
on the cloze sentences and saved by ``transformers``, and the steerflow conversions of them.

GPT-2's own init (std 0.02) gives logits of about 0.1, where a wrong GELU or a transposed weight
could hide inside a 1e-5 tolerance; :func:`liven_gpt2` gives every weight O(1) effect instead.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from steerflow.data.tokenizer import EOS_TOKEN, train_bpe  # noqa: E402
from steerflow.steer.data import cloze_examples  # noqa: E402

#: the tiny GPT-2 of the tests (the issue's GPT2Config(n_layer=4, n_embd=64, ...))
GPT2_SHAPE = dict(n_layer=4, n_embd=64, n_head=2, n_positions=32)
VOCAB = 384


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def liven_gpt2(model, seed: int = 0) -> None:
    """O(1) weights: LeCun-normal Conv1D weights (stored ``(in, out)``), embeddings of std 0.5,
    LayerNorm gains near 1 and biases of std 0.1, so logits are O(1) and every weight shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith(("wte.weight", "wpe.weight")):
                p.copy_(0.5 * noise)
            elif p.ndim == 2:
                p.copy_(noise * p.shape[0] ** -0.5)
            elif ".ln_" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)


def save_gpt2(folder: Path, tokenizer=None, seed: int = 0, **config) -> "transformers.GPT2LMHeadModel":
    """A lively random ``GPT2LMHeadModel`` (and ``tokenizer``) saved by ``transformers``."""
    values = dict(GPT2_SHAPE, vocab_size=VOCAB, bos_token_id=0, eos_token_id=0)
    values.update(config)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**values))
    liven_gpt2(model, seed)
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return model.eval()


@pytest.fixture(scope="session")
def hf_tokenizer():
    """A byte-level BPE trained on the cloze sentences, as a ``transformers`` tokenizer."""
    texts = [e.text for e in cloze_examples("train") + cloze_examples("dev")]
    tok = train_bpe(texts * 2, VOCAB)
    assert tok.vocab_size == VOCAB
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok.backend, eos_token=EOS_TOKEN,
                                                bos_token=EOS_TOKEN, unk_token=EOS_TOKEN)


@dataclass(frozen=True)
class Source:
    """A saved GPT-2 folder and the ``transformers`` model it holds."""

    folder: Path
    model: "transformers.GPT2LMHeadModel"


@pytest.fixture(scope="session")
def gpt2_source(tmp_path_factory, hf_tokenizer) -> Source:
    """The tiny GPT-2 with the cloze tokenizer, saved by ``transformers``."""
    folder = tmp_path_factory.mktemp("gpt2")
    return Source(folder, save_gpt2(folder, hf_tokenizer))


@pytest.fixture(scope="session")
def converted(tmp_path_factory, gpt2_source) -> dict:
    """``steerflow convert hf`` of :func:`gpt2_source`, discrete and with layers 1-2 as the ODE
    block, saved: ``{"discrete": folder, "hybrid": folder}``."""
    from steerflow.hf.convert import convert_hf

    out = {}
    for name, span in (("discrete", None), ("hybrid", (1, 3))):
        folder = tmp_path_factory.mktemp(f"converted-{name}")
        convert_hf(str(gpt2_source.folder), span).model.save_pretrained(folder)
        out[name] = folder
    return out


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*argv) -> CliResult:
    """``steerflow.cli.main.main(argv)`` in this process, with stdout and stderr captured."""
    from steerflow.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return CliResult(int(code), out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    return run_cli
