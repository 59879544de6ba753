"""steerflow: continuous-depth transformers steered by a control signal u.

``import steerflow`` loads only the config objects; the model is imported on first use so that
the command-line tool starts quickly.
"""

from steerflow.config import ModelConfig, SolverSpec
from steerflow.errors import SteerflowError

__version__ = "0.1.0"

__all__ = ["ModelConfig", "SolverSpec", "SteerFlowGPT", "SteerflowError", "__version__"]


def __getattr__(name: str):
    if name == "SteerFlowGPT":
        from steerflow.model.gpt import SteerFlowGPT

        return SteerFlowGPT
    raise AttributeError(f"module 'steerflow' has no attribute {name!r}")
