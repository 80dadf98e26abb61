"""``model.backbone: lstm``: stacked LSTM layers over item sequences."""

from __future__ import annotations

import tensorflow as tf

from tfrec.models.backbone_registry import register_backbone
from tfrec.models.recurrent_backbone import RecurrentBackbone


@register_backbone("lstm", causal=True)
class LSTMBackbone(RecurrentBackbone):
    """LSTM layers of width ``hidden_dim`` (see :class:`~tfrec.models.recurrent_backbone.RecurrentBackbone`)."""

    layer_class = tf.keras.layers.LSTM
