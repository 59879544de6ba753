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
