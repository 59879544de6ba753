"""Fixtures for the reliability tests: one generated data folder, one tokenizer and a zoo of tiny
checkpoints — good ones and every kind of broken one — built once per session.

Nothing here reads ``shared/data``: the data folder is generated text with the layout of the real
one (WikiText-2 and SST-2), so the suite runs offline and in a few seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pytest

WORDS = ("the a movie film was is plot story very quite , . of and it on good bad great awful "
         "actor scene music long short funny boring").split()


def sst2_rows() -> list[tuple[str, int]]:
    """60 SST-2 rows: six random words, then "good" (label 1) or "bad" (label 0)."""
    rng = random.Random(3)
    return [(" ".join([rng.choice(WORDS) for _ in range(6)] + ["good" if i % 2 else "bad"]), i % 2)
            for i in range(60)]


def data_folder_options() -> dict:
    """:func:`write_fake_data` options of the reliability data folder: WikiText-2 splits and
    SST-2 train/dev files (header ``sentence<TAB>label``)."""
    return dict(wikitext=(("train", 200, 0), ("valid", 60, 1), ("test", 60, 2)), words=WORDS,
                length=(5, 15), sst2=sst2_rows())


class Payload:
    """Unpickling this object creates ``marker``: if the marker exists, untrusted code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def malicious_pickle(marker: Path) -> bytes:
    """Bytes in ``torch.save``'s format whose unpickling creates ``marker``."""
    import torch

    buffer = io.BytesIO()
    torch.save({"wte.weight": Payload(marker), "optimizer": Payload(marker)}, buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class Zoo:
    """Paths of the session's data folders and checkpoints (see :func:`zoo`)."""

    root: Path
    data: Path            # a good data folder (wikitext-2/, sst2/)
    cache: Path           # a prepared-data cache shared by the tests
    hybrid: Path          # a tiny hybrid with its tokenizer
    block_hybrid: Path    # the same with a transformer-block vector field
    discrete: Path        # the discrete baseline of that shape
    truncated: Path       # the hybrid with model.safetensors cut in half
    not_checkpoint: Path  # an existing folder without config.json
    pickle_only: Path     # a folder holding only pytorch_model.bin (a malicious pickle)
    pickle_renamed: Path  # config.json + a malicious pickle named model.safetensors
    other_version: Path   # config.json with format_version 99
    other_config: Path    # config.json whose shapes do not match the weights
    no_tokenizer: Path    # a valid checkpoint saved without tokenizer.json
    stiff: Path           # a stiff linear field (λ = 1e5) whose eval solver is dopri5, max_nfe=200
    diverging: Path       # a field whose solution blows up in finite time under dopri5
    marker: Path          # created if any pickle payload above were ever unpickled
    missing: Path         # a path that does not exist
    empty_text: Path      # data folder whose wikitext-2/valid.txt is empty
    non_utf8: Path        # data folder whose wikitext-2/valid.txt is not UTF-8
    bad_sst2: Path        # data folder whose SST-2 files have a wrong header


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def make_stiff(model, lam: float = 1e5, s: float = 10.0, shift: float = 30.0) -> None:
    """Make the ODE field the linear decay ``α F(H) = -λ H`` (λ = α s²) on every channel.

    ``fc_in = s·I`` with bias ``shift`` keeps softplus in its exact linear range (input > 20 for
    |H| < 1), ``fc_out = -s·I`` with bias ``s·shift`` cancels the shift: ``F(H) = -s² H``. An
    explicit solver is stable only for steps ≲ 3.3/λ, so dopri5 crawls: the textbook stiff
    ODE.
    """
    import torch

    field, d = model.ode.field, model.config.n_embd
    with torch.no_grad():
        w_in = field.fc_in.linear.weight  # (hidden, d + c); hidden == d in the tiny preset
        w_in.zero_()
        w_in[:, :d] = s * torch.eye(d)
        field.fc_in.linear.bias.fill_(shift)
        field.fc_out.weight.copy_(-s * torch.eye(d))
        field.fc_out.bias.fill_(s * shift)
        model.ode.alpha.fill_(lam / s ** 2)


@pytest.fixture(scope="session")
def zoo(tmp_path_factory, make_fake_data) -> Zoo:
    """Build every data folder and checkpoint once (about a second).

    Folder names are neutral (``h3``, not ``truncated``) so that a test looking for a word in an
    error message cannot be satisfied by the path the message quotes.
    """
    import torch

    from steerflow.config import ModelConfig, SolverSpec
    from steerflow.data import train_bpe
    from steerflow.model.gpt import SteerFlowGPT

    root = tmp_path_factory.mktemp("reliability")
    data = make_fake_data(root / "data", **data_folder_options())
    tok = train_bpe((data / "wikitext-2" / "train.txt").read_text().splitlines(), 300)
    tiny = dict(vocab_size=tok.vocab_size)
    marker = root / "RAN.marker"

    def save(name: str, model, tokenizer=tok) -> Path:
        model.save_pretrained(root / name, tokenizer=tokenizer)
        return root / name

    torch.manual_seed(0)
    hybrid = save("h1", SteerFlowGPT(ModelConfig.from_name("tiny", **tiny)))
    discrete = save("b1", SteerFlowGPT(ModelConfig.from_name("tiny", ode_span=None, **tiny)))
    block_hybrid = save("h1-block", SteerFlowGPT(ModelConfig.from_name("tiny", field="block", **tiny)))
    no_tokenizer = save("h2", SteerFlowGPT(ModelConfig.from_name("tiny", **tiny)), None)

    truncated = root / "h3"
    shutil.copytree(hybrid, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    not_checkpoint = root / "plain"
    not_checkpoint.mkdir()
    (not_checkpoint / "notes.txt").write_text("not a model\n")

    evil = malicious_pickle(marker)
    pickle_only = root / "h4"
    pickle_only.mkdir()
    (pickle_only / "pytorch_model.bin").write_bytes(evil)
    pickle_renamed = root / "h5"
    shutil.copytree(hybrid, pickle_renamed)
    (pickle_renamed / "model.safetensors").write_bytes(evil)

    other_version = root / "h6"
    shutil.copytree(hybrid, other_version)
    _edit_config(other_version, format_version=99, steerflow_version="9.9.9")
    other_config = root / "h7"
    shutil.copytree(hybrid, other_config)
    _edit_config(other_config, n_embd=64, field_hidden=64)

    adaptive = SolverSpec(method="dopri5", steps=None, rtol=1e-3, atol=1e-4, max_nfe=200)
    stiff_model = SteerFlowGPT(ModelConfig.from_name("tiny", field_norm=False, eval_solver=adaptive,
                                                     **tiny))
    make_stiff(stiff_model)
    stiff = save("h8", stiff_model)
    torch.manual_seed(0)
    diverging_model = SteerFlowGPT(ModelConfig.from_name("tiny", field_norm=False, **tiny))
    make_diverging(diverging_model, alpha=1e5)
    diverging = save("h9", diverging_model)

    def variant(name: str, rel: str, content: bytes) -> Path:
        folder = root / name
        shutil.copytree(data, folder)
        for file in rel.split("|"):
            (folder / file).write_bytes(content)
        return folder

    return Zoo(
        root=root, data=data, cache=root / "cache", hybrid=hybrid, block_hybrid=block_hybrid,
        discrete=discrete,
        truncated=truncated, not_checkpoint=not_checkpoint, pickle_only=pickle_only,
        pickle_renamed=pickle_renamed, other_version=other_version, other_config=other_config,
        no_tokenizer=no_tokenizer, stiff=stiff, diverging=diverging, marker=marker,
        missing=root / "absent",
        empty_text=variant("d1", "wikitext-2/valid.txt", b""),
        non_utf8=variant("d2", "wikitext-2/valid.txt", b" caf\xe9 \xff\xfe film \n" * 20),
        bad_sst2=variant("d3", "sst2/train.tsv|sst2/dev.tsv",
                         b"text\tpolarity\nthe film was good\t1\n"),
    )


def make_diverging(model, alpha: float, seed: int = 1) -> None:
    """O(1) LeCun-normal weights in the un-normalised ODE field and a huge α = ``alpha``: ``H``
    grows like ``exp(α‖W‖τ)`` and overflows float32 long before τ = 1."""
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.ode.field.modules():
            if isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen)
                                    * module.in_features ** -0.5)
                if module.bias is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
        model.ode.alpha.fill_(alpha)


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.strip().splitlines()


def run_cli(argv: Sequence[object]) -> CliResult:
    """``steerflow.cli.main.main(argv)`` in this process, with stdout/stderr captured.

    argparse usage errors raise SystemExit; its code is returned like ``main``'s.
    """
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
    """The :func:`run_cli` function."""
    return run_cli


def assert_one_line_error(result: CliResult, code: int, needle: str = "") -> None:
    """Exit ``code``, nothing on stdout, exactly one line on stderr holding ``needle``, no
    traceback."""
    assert result.code == code, (result.code, result.err)
    assert "Traceback" not in result.err, result.err
    assert len(result.err_lines) == 1, result.err
    assert needle.lower() in result.err.lower(), (needle, result.err)
    assert result.out == "", result.out



@pytest.fixture
def one_line_error():
    """The :func:`assert_one_line_error` function."""
    return assert_one_line_error


@pytest.fixture
def evil_pickle():
    """The :func:`malicious_pickle` function: ``evil_pickle(marker) -> bytes``."""
    return malicious_pickle
