"""Models: the discrete/hybrid GPT, its ODE block and vector fields."""

from steerflow.model.decoding import sample_next
from steerflow.model.gpt import GenerationCache, SteerFlowGPT
from steerflow.model.ode_block import ODEBlock, ODESolution, SolveStats, integrate_fixed
from steerflow.model.vector_fields import FIELDS, build_field

__all__ = ["SteerFlowGPT", "GenerationCache", "sample_next", "ODEBlock", "ODESolution",
           "SolveStats", "integrate_fixed", "FIELDS", "build_field"]
