"""Interoperability with Hugging Face `transformers`: import GPT-2 checkpoints exactly
(:mod:`~steerflow.hf.convert`) and export steerflow models (:mod:`~steerflow.hf.export`).

`transformers` is an optional extra (``steerflow[hf]``): only the remote-code template
:mod:`~steerflow.hf.modeling_steerflow`, which exported folders carry, imports it.
"""

#: the vector fields that can hold pretrained layers (``convert hf --field``)
CONVERT_FIELDS = ("depth-block",)
