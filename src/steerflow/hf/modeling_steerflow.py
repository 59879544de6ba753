"""`transformers` remote code for continuous-depth steerflow models.

:func:`steerflow.hf.export.export_transformers` copies this file, unchanged, as
``modeling_steerflow.py`` into the folder of every exported hybrid, whose ``config.json`` names
its classes in ``auto_map`` (the Hub's convention for custom architectures)::

    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    out = model.generate(ids, u=1.0, max_new_tokens=20)

It wraps :class:`steerflow.model.gpt.SteerFlowGPT` (steerflow must be installed) in a
``PreTrainedModel`` with ``GenerationMixin``. ``forward`` and ``generate`` take the control
``u`` as ``SteerFlowGPT`` does: a number, a list, a ``(B,)`` or ``(B, c)`` tensor; None is u = 0.
Each generation step recomputes the whole sequence (steerflow's own ``generate`` decodes through
KV caches), and batches must not be padded. steerflow never imports this module itself.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from steerflow.config import ModelConfig
from steerflow.model.gpt import SteerFlowGPT


class SteerFlowConfig(PretrainedConfig):
    """The Hub config of an exported model; ``steerflow`` holds its ``ModelConfig`` as a dict."""

    model_type = "steerflow"

    def __init__(self, steerflow: Optional[dict] = None, **kwargs) -> None:
        self.steerflow = dict(steerflow or {})
        super().__init__(**kwargs)


class SteerFlowForCausalLM(PreTrainedModel, GenerationMixin):
    """A steerflow model behind ``transformers``' causal-LM interface, with the control ``u``."""

    config_class = SteerFlowConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _supports_cache_class = False

    def __init__(self, config: SteerFlowConfig) -> None:
        super().__init__(config)
        self.model = SteerFlowGPT(ModelConfig.from_dict(dict(config.steerflow)))
        self.post_init()

    def _init_weights(self, module) -> None:
        """SteerFlowGPT initialises itself, and the checkpoint holds every weight."""

    def get_input_embeddings(self):
        return self.model.wte

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                u=None, labels: Optional[torch.Tensor] = None, **kwargs) -> CausalLMOutput:
        """Logits ``(B, T, V)`` under control ``u``; with ``labels``, the next-token loss
        (``transformers``' convention: labels are the inputs, shifted here, -100 ignored)."""
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError("steerflow models read unpadded batches: attention_mask must be all "
                             "ones (generate one prompt length at a time)")
        logits, _ = self.model(input_ids, u)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                                   ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, u=None,
                                      attention_mask: Optional[torch.Tensor] = None, **kwargs):
        """The whole sequence at every step (no cache through ``transformers``)."""
        return {"input_ids": input_ids, "u": u, "attention_mask": attention_mask}
