"""``model.backbone: gru``: stacked GRU layers over item sequences, as GRU4Rec reads a session."""

from __future__ import annotations

import tensorflow as tf

from tfrec.models.backbone_registry import register_backbone
from tfrec.models.recurrent_backbone import RecurrentBackbone


@register_backbone("gru", causal=True)
class GRUBackbone(RecurrentBackbone):
    """GRU layers of width ``hidden_dim`` (see :class:`~tfrec.models.recurrent_backbone.RecurrentBackbone`)."""

    layer_class = tf.keras.layers.GRU
