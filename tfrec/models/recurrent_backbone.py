"""What the recurrent backbones share: item (and feature) embeddings, stacked RNN layers, the protocol."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrec.contract import ITEM_INDICES, PADDING_MASK, SEQUENCE_OUTPUT  # noqa: E402
from tfrec.models.backbone_registry import BackboneMixin  # noqa: E402
from tfrec.models.sequence_backbone import embedded_items  # noqa: E402


class RecurrentBackbone(BackboneMixin, tf.keras.Model):
    """Stacked recurrent layers over left-padded item sequences (GRU4Rec-style); subclasses name the layer.

    Inputs ``item_indices`` ``[batch, seq_len]`` int32 (0 = padding) and ``padding_mask`` ``[batch, seq_len]``
    bool; output ``sequence_output`` ``[batch, seq_len, hidden_dim]``, each position's state after reading the
    items up to it (padding is skipped: the state carries over it).  A recurrent backbone is causal by
    nature: next-item fine-tuning trains every position (``finetune.examples: causal``).  It has no
    positions to embed and no attention: ``num_heads`` and ``intermediate_dim`` are accepted and unused.
    The item embedding is a keras-nlp ``ReversibleEmbedding``, so the heads tie to it as they do to the
    Transformer's.
    """

    backbone_type: str | None = None
    layer_class = None  # tf.keras.layers.GRU or LSTM

    def __init__(self, vocabulary_size: int, max_len: int = 50, hidden_dim: int = 64, num_layers: int = 1,
                 dropout: float = 0.2, layer_norm_epsilon: float = 1e-12, feature_table=None,
                 feature_vocabulary_size: int = 0, output_features: bool = False, causal: bool = True,
                 output_extra_dim: int = 0, output_last_item: bool = False, num_heads=None, intermediate_dim=None,
                 **kwargs):
        if output_extra_dim < 0:
            raise ValueError(f"output_extra_dim {output_extra_dim} is negative")
        if num_layers < 1:
            raise ValueError(f"num_layers {num_layers} must be at least 1")
        item_ids, padding_mask, token_embedding, feature_embedding, x = embedded_items(
            vocabulary_size, hidden_dim, feature_table, feature_vocabulary_size)
        x = tf.keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="embeddings_layer_norm")(x)
        x = tf.keras.layers.Dropout(dropout, name="embeddings_dropout")(x)
        for i in range(num_layers):
            x = self.layer_class(hidden_dim, return_sequences=True, name=f"{self.backbone_type}_layer_{i}")(
                x, mask=padding_mask)
            x = tf.keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
        x = tf.keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="output_layer_norm")(x)
        super().__init__(inputs={ITEM_INDICES: item_ids, PADDING_MASK: padding_mask}, outputs={SEQUENCE_OUTPUT: x},
                         **kwargs)
        self.vocabulary_size, self.max_len, self.hidden_dim = vocabulary_size, max_len, hidden_dim
        self.num_layers, self.dropout, self.layer_norm_epsilon = num_layers, dropout, layer_norm_epsilon
        self.feature_table = None if feature_table is None else np.asarray(feature_table, np.int32)
        self.feature_vocabulary_size = feature_vocabulary_size
        self.output_features = bool(output_features) and feature_embedding is not None
        self.causal = True
        self.output_extra_dim = int(output_extra_dim)
        self.output_last_item = bool(output_last_item)
        self.token_embedding = token_embedding
        self.feature_embedding = feature_embedding

    def get_config(self):
        return {"backbone_type": self.backbone_type, "vocabulary_size": self.vocabulary_size,
                "max_len": self.max_len, "hidden_dim": self.hidden_dim, "num_layers": self.num_layers,
                "dropout": self.dropout, "layer_norm_epsilon": self.layer_norm_epsilon,
                "feature_table": None if self.feature_table is None else self.feature_table.tolist(),
                "feature_vocabulary_size": self.feature_vocabulary_size, "output_features": self.output_features,
                "output_extra_dim": self.output_extra_dim, "output_last_item": self.output_last_item,
                "name": self.name}
