"""Shared test setup.

Tests that need the real data read it from ``$STEERFLOW_DATA``. When it is unset and a
``shared/data`` folder lies beside the repository (the layout CI uses), point it there.
"""

import os
from pathlib import Path

_beside = Path(__file__).resolve().parents[2] / "shared" / "data"
if "STEERFLOW_DATA" not in os.environ and _beside.is_dir():
    os.environ["STEERFLOW_DATA"] = str(_beside)

os.environ.setdefault("MPLBACKEND", "Agg")


# --------------------------------------------------------------------------- shared fixtures
import pytest  # noqa: E402


FAKE_WORDS = ("the a movie film was is good bad great awful plot actor scene story cat dog sat ran "
              "on in of and it 's not very quite funny boring long short music score , . 1990 "
              "@-@").split()


def fake_lines(n_lines: int, seed: int, words=FAKE_WORDS, length=(3, 15),
               blank_rate: float = 0.0) -> str:
    """``n_lines`` WikiText-like lines (a leading space, space-separated words, a trailing
    newline) from a seeded RNG; a ``blank_rate`` share of them are blank (`` \n``)."""
    import random

    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        if blank_rate and rng.random() < blank_rate:
            lines.append(" \n")
        else:
            lines.append(" " + " ".join(rng.choice(words) for _ in range(rng.randint(*length)))
                         + " \n")
    return "".join(lines)


def write_fake_data(root: Path, *, wikitext=(("train", 300, 0), ("valid", 40, 1), ("test", 40, 2)),
                    words=FAKE_WORDS, length=(3, 15), blank_rate: float = 0.0,
                    texts: dict | None = None, sst2=None, sst2_dev=None,
                    gpt2_placeholder: bool = False) -> Path:
    """A data folder with the layout of the real one (``wikitext-2/``, ``sst2/``, and
    ``gpt2-tokenizer/`` placeholder files when asked), all generated text.

    Args:
        wikitext: ``(split, lines, seed)`` per WikiText-2 split (ignored where ``texts`` is given).
        texts: the split texts themselves, instead of generated ones.
        sst2: the SST-2 rows ``[(sentence, label), ...]`` written to both train.tsv and dev.tsv;
            None writes no ``sst2/`` folder.
        sst2_dev: the rows of dev.tsv when they differ from ``sst2``'s.
    """
    (root / "wikitext-2").mkdir(parents=True)
    texts = texts or {split: fake_lines(n, seed, words, length, blank_rate)
                      for split, n, seed in wikitext}
    for split, text in texts.items():
        (root / "wikitext-2" / f"{split}.txt").write_text(text, encoding="utf-8")
    if sst2 is not None:
        (root / "sst2").mkdir()
        for split, rows in (("train", sst2), ("dev", sst2 if sst2_dev is None else sst2_dev)):
            body = "sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows)
            (root / "sst2" / f"{split}.tsv").write_text(body, encoding="utf-8")
    if gpt2_placeholder:
        (root / "gpt2-tokenizer").mkdir()
        (root / "gpt2-tokenizer" / "encoder.json").write_text("{}", encoding="utf-8")
        (root / "gpt2-tokenizer" / "vocab.bpe").write_text("#version: 0.2\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def make_fake_data():
    """The :func:`write_fake_data` function: ``make_fake_data(root, **options) -> root``."""
    return write_fake_data


@pytest.fixture(scope="session")
def make_fake_lines():
    """The :func:`fake_lines` function: ``make_fake_lines(n, seed, words, length, blank_rate)``."""
    return fake_lines


STORY_SUBJECTS = ("The team", "The station", "The river", "The council", "The ship", "He", "She")
STORY_VERBS = ("moved to", "stood near", "was named after", "returned to", "passed through")
STORY_OBJECTS = ("the north of the old city", "a small town near the coast",
                 "the eastern side of the valley")
#: short SST-2-like reviews of each label
STORY_POSITIVE = ("a wonderful , moving film", "great fun and beautifully acted",
                  "an excellent story")
STORY_NEGATIVE = ("a dull , tedious mess", "boring and badly acted", "an awful story")


def story_lines(n: int, seed: int) -> str:
    """``n`` WikiText-like lines of two neutral encyclopedic sentences each (seeded)."""
    import random

    rng = random.Random(seed)
    return "".join(" " + " ".join(f"{rng.choice(STORY_SUBJECTS)} {rng.choice(STORY_VERBS)} "
                                  f"{rng.choice(STORY_OBJECTS)} ." for _ in range(2)) + " \n"
                   for _ in range(n))


def write_story_data(root: Path, lines=(("train", 150, 0), ("valid", 30, 1), ("test", 30, 2)),
                     repeat: int = 8, **options) -> tuple[Path, dict[str, str]]:
    """A data folder of :func:`story_lines` splits and ``repeat`` copies of the SST-2-like
    reviews (:func:`write_fake_data`'s ``options`` too): ``(folder, the split texts)``."""
    texts = {split: story_lines(n, seed) for split, n, seed in lines}
    sst2 = repeat * ([(f"{t} ", 1) for t in STORY_POSITIVE]
                     + [(f"{t} ", 0) for t in STORY_NEGATIVE])
    return write_fake_data(root, texts=texts, sst2=sst2, **options), texts


@pytest.fixture(scope="session")
def make_story_data():
    """The :func:`write_story_data` function: neutral encyclopedic splits and short reviews."""
    return write_story_data


@pytest.fixture(scope="session")
def story_reviews() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(positive, negative)`` review texts of :func:`write_story_data`'s SST-2 rows."""
    return STORY_POSITIVE, STORY_NEGATIVE


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder from ``$STEERFLOW_DATA``; tests that use it are skipped when absent."""
    env = os.environ.get("STEERFLOW_DATA")
    if not env or not Path(env).is_dir():
        pytest.skip("real data absent: set STEERFLOW_DATA to the data folder")
    return Path(env)


@pytest.fixture
def tiny_config():
    """The ``tiny`` preset (4 layers, d=32, ODE block replacing layers 1-2), hybrid, mlp field."""
    from steerflow.config import ModelConfig

    return ModelConfig.from_name("tiny")


def liven_ode(model, alpha: float = 0.5, seed: int = 1) -> None:
    """Give the ODE block's field O(1) weights and α = ``alpha``.

    The default near-zero init of the field's output layer makes ``α·F`` about 1e-3 of ``H``,
    so a wrong field would hide inside float tolerances; tests of the ODE block use this instead.
    """
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.ode.field.modules():
            if isinstance(module, nn.Linear):
                # LeCun-normal: keeps each layer's output O(1) for O(1) inputs
                w = torch.randn(module.weight.shape, generator=gen) * module.in_features ** -0.5
                module.weight.copy_(w)
                if module.bias is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
        model.ode.alpha.fill_(alpha)


@pytest.fixture
def make_tiny_model():
    """Factory ``make(seed=0, live=True, dtype=torch.float32, **config_overrides)``: a ``tiny``
    :class:`SteerFlowGPT` in eval mode, with a lively ODE field (see :func:`liven_ode`)."""
    import torch

    from steerflow.config import ModelConfig
    from steerflow.model.gpt import SteerFlowGPT

    def make(seed: int = 0, live: bool = True, dtype=torch.float32, **overrides):
        torch.manual_seed(seed)
        model = SteerFlowGPT(ModelConfig.from_name("tiny", **overrides))
        if live and model.ode is not None:
            liven_ode(model, seed=seed + 1)
        return model.to(dtype).eval()

    return make


@pytest.fixture
def single_thread():
    """Run the test on one intra-op thread (tiny tensors on a shared 2-core machine are faster
    without thread hand-offs), restoring the previous setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def liven():
    """The :func:`liven_ode` function, for tests that build ODE blocks themselves."""
    return liven_ode
