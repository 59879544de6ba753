"""Fixtures for the flow-analysis tests: one thread, and tiny checkpoints with a tokenizer and a
generated WikiText-like data folder (so the CLI runs without the real data)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # the test modules import flow_helpers too

from steerflow.config import ModelConfig  # noqa: E402
from steerflow.model.gpt import SteerFlowGPT  # noqa: E402

#: the words of the generated WikiText-like text analyze flow runs on
FLOW_WORDS = ("the a river city was is north south old new king war song film band team game "
              "of and in on to by , . @-@ <unk> 1990 first second played built named").split()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine they lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def flow_env(tmp_path_factory, make_fake_data) -> dict[str, Path]:
    """A generated data folder, a token cache and three tiny checkpoints sharing one tokenizer:
    ``hybrid`` (mlp field), ``contractive`` and ``baseline``."""
    from steerflow.data import train_bpe

    root = tmp_path_factory.mktemp("flow")
    data = make_fake_data(root / "data", words=FLOW_WORDS, length=(4, 16),
                          wikitext=(("train", 600, 0), ("valid", 120, 1), ("test", 60, 2)))
    train_text = (data / "wikitext-2" / "train.txt").read_text(encoding="utf-8")
    tokenizer = train_bpe(train_text.splitlines(keepends=True), 300)
    paths = {"data": data, "cache": root / "cache"}
    for name, overrides in (("hybrid", {}), ("contractive", {"field": "contractive"}),
                            ("baseline", {"ode_span": None})):
        torch.manual_seed(1)
        config = ModelConfig.from_name("tiny", vocab_size=tokenizer.vocab_size, **overrides)
        model = SteerFlowGPT(config)
        if model.ode is not None:
            with torch.no_grad():
                for p in model.ode.field.parameters():
                    p.add_(0.1 * torch.randn_like(p))
        model.save_pretrained(root / name, tokenizer=tokenizer)
        paths[name] = root / name
    return paths
