"""Model families (Flax Linen) and the architecture facade.

Importing this package registers every family in ``ARCHITECTURES``: ``mlp``, ``cnn``, ``lstm``,
``transformer``, ``bert``. Each family file has the same shape: a frozen config dataclass, the
module built as ``Module(config)``, ``SIZES`` (``"tiny"`` for tests, ``"small"`` the default,
``"base"``) and ``make_config``.

Every module follows one calling convention, which the training core relies on:

* ``module.apply(variables, x, train=bool, rngs={'dropout': key})`` -> logits
  ``[B, num_classes]``; dropout draws from the ``'dropout'`` rng only when ``train``;
* ``module.apply(variables, x, method=Module.features)`` -> penultimate features ``[B, F]``
  (the embedding for domain adaptation and core-set active learning);
* params split into a feature extractor and a classifier (``{'encoder', 'head'}``; for BERT the
  embeddings/``layers_i``/``pooler`` and ``classifier``/``mlm_*`` heads);
* computation follows the dtype of inputs and params (cast both to bfloat16 for mixed
  precision; token ids stay int32); there is no BatchNorm, so no mutable state.
"""

from ml_adv.models import bert, cnn, lstm, mlp, transformer
from ml_adv.models.architecture import AdvancedModelArchitecture, abstract_variables, count_params
from ml_adv.models.bert import BERT, BERTConfig
from ml_adv.models.cnn import CNN, CNNConfig, conv_layer
from ml_adv.models.layers import ACTIVATIONS, EncoderBlock
from ml_adv.models.lstm import LSTM, LSTMConfig
from ml_adv.models.mlp import MLP, MLPConfig
from ml_adv.models.registry import (
    ARCHITECTURES,
    ArchitectureEntry,
    ModelSpec,
    make_spec,
    register_architecture,
)
from ml_adv.models.transformer import Transformer, TransformerConfig

__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURES",
    "BERT",
    "BERTConfig",
    "CNN",
    "CNNConfig",
    "LSTM",
    "LSTMConfig",
    "MLP",
    "MLPConfig",
    "AdvancedModelArchitecture",
    "ArchitectureEntry",
    "EncoderBlock",
    "ModelSpec",
    "Transformer",
    "TransformerConfig",
    "abstract_variables",
    "bert",
    "cnn",
    "conv_layer",
    "count_params",
    "lstm",
    "make_spec",
    "mlp",
    "register_architecture",
    "transformer",
]
