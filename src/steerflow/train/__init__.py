"""Training: the loop (``train``), its config, resumable checkpoints, metrics, DDP, experiments.

``from steerflow.train import TrainConfig, train`` — see :mod:`steerflow.train.loop`.
"""

from steerflow.train.config import TrainConfig
from steerflow.train.loop import NonFiniteError, TrainResult, train
from steerflow.train.tasks import BatchSource, LMBatchSource

__all__ = ["TrainConfig", "TrainResult", "train", "NonFiniteError", "BatchSource", "LMBatchSource"]
