"""Query and candidate towers over the sequence backbone, in the shape tensorflow-recommenders uses.

Every tower maps to vectors of width ``hidden_dim + 1`` whose dot product is a
retrieval score.  The query is ``[h, 1]`` with ``h`` the item head's state at a mask
slot appended to the history; a candidate is ``[e_i, b_i]`` with ``e_i`` its item
embedding and ``b_i`` the head's output bias.  So at the start of fine-tuning,
``query . candidate`` is exactly the pretrained model's logit for the item, and every
extra input (user features, item features) enters through a zero-initialised
projection that fine-tuning grows from nothing.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrec.data import schema  # noqa: E402
from tfrec.contract import ITEM_INDICES, PADDING_MASK, USER_FEATURE_IDS, USER_INDEX, USER_NUMERIC  # noqa: E402
from tfrec.models.sequence_backbone import SEQUENCE_OUTPUT, SequenceBackbone  # noqa: E402
from tfrec.models.item_head import ItemHead  # noqa: E402


class PooledFeatures(tf.keras.layers.Layer):
    """Mean-pooled embeddings of per-row feature ids looked up in a constant table.

    ``table`` ``[rows, width]`` int32 (0 = none), ids below ``size``; maps ``[batch]``
    row indices to ``[batch, dim]``.
    """

    def __init__(self, table, size: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.table_values = np.asarray(table, np.int32)
        self.size, self.dim = int(size), int(dim)
        self.embedding = tf.keras.layers.Embedding(self.size, self.dim, name="embedding")

    def build(self, input_shape):
        self.table = tf.constant(self.table_values)
        super().build(input_shape)

    def call(self, rows):
        return self.pool(tf.gather(self.table, rows))

    def pool(self, ids):
        """``[batch, width]`` feature ids (0 = none) -> their mean embedding ``[batch, dim]`` (0 for none)."""
        present = tf.cast(ids > 0, self.compute_dtype)[..., tf.newaxis]
        return tf.reduce_sum(self.embedding(ids) * present, axis=-2) / tf.maximum(tf.reduce_sum(present, -2), 1.0)


def _zeros_dense(units: int, name: str) -> tf.keras.layers.Dense:
    return tf.keras.layers.Dense(units, kernel_initializer="zeros", name=name)


class QueryTower(tf.keras.Model):
    """History (and user) -> query vector ``[batch, hidden_dim + 1]``.

    Inputs: ``item_ids`` ``[batch, seq_len]`` int32, left-padded, ending in the mask
    slot; ``user_index`` ``[batch]`` int32 when user features are used.

    Args:
        backbone: the (pretrained) sequence backbone.
        head: its item head (the pretrained one, so the query starts where pretraining ended).
        user_table, user_table_size: optional ``[users, width]`` categorical user
            feature ids (gender, occupation...) and their id space size.
        user_numeric: optional ``[users, k]`` standardised numeric user features (age...).
        num_users: > 0 adds a user-id embedding.
    """

    def __init__(self, backbone: SequenceBackbone, head: ItemHead, user_table=None, user_table_size: int = 0,
                 user_numeric=None, num_users: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.backbone, self.head = backbone, head
        d = backbone.hidden_dim
        self.user_features = None
        if user_table is not None and np.asarray(user_table).shape[1]:
            self.user_features = PooledFeatures(user_table, user_table_size, d, name="user_features")
        self.user_numeric = None
        if user_numeric is not None and np.asarray(user_numeric).shape[1]:
            self.user_numeric = tf.constant(np.asarray(user_numeric, np.float32))
        self.user_id = tf.keras.layers.Embedding(num_users, d, embeddings_initializer="zeros", name="user_id") \
            if num_users else None
        self.uses_user = bool(self.user_features is not None or self.user_numeric is not None or num_users)
        self.user_projection = _zeros_dense(d, "user_projection") if self.uses_user else None

    def history_state(self, item_ids, training=False):
        """The head's state at the mask slot: ``[batch, hidden_dim]``."""
        sequence = self.backbone({ITEM_INDICES: item_ids, PADDING_MASK: item_ids != schema.PAD_ID},
                                 training=training)[SEQUENCE_OUTPUT]
        slot = tf.fill([tf.shape(item_ids)[0], 1], tf.cast(tf.shape(item_ids)[1] - 1, tf.int64))
        return self.head(sequence, mask_positions=slot)[:, 0]

    def call(self, features, training=False):
        """`features`: ``item_indices`` and, for a tower that reads the user, either ``user_index`` (the
        user's row of the feature tables) or the user's own ``user_feature_ids`` ``[batch, width]`` (ids of
        the categorical feature table's space, 0 = none) and ``user_numeric`` ``[batch, k]`` (standardised,
        0 = the mean): what a served model takes in the request instead of a user id."""
        h = self.history_state(features[ITEM_INDICES], training=training)
        if self.uses_user:
            given = USER_INDEX not in features
            users = None if given else features[USER_INDEX]
            parts = []
            if self.user_features is not None:
                parts.append(self.user_features.pool(features[USER_FEATURE_IDS]) if given else
                             self.user_features(users))
            if self.user_numeric is not None:
                parts.append(features[USER_NUMERIC] if given else tf.gather(self.user_numeric, users))
            if self.user_id is not None:
                if given:
                    raise ValueError("this query tower embeds user ids; it needs user_index")
                parts.append(self.user_id(users))
            h = h + self.user_projection(tf.concat(parts, axis=-1))
        return tf.concat([h, tf.ones_like(h[:, :1])], axis=-1)


class CandidateTower(tf.keras.layers.Layer):
    """Item index ``[batch]`` -> ``[batch, hidden_dim + 1]``: the shared item embedding
    (plus a learnt projection of the backbone's pooled item features) and the head's bias."""

    def __init__(self, backbone: SequenceBackbone, head: ItemHead, **kwargs):
        super().__init__(**kwargs)
        self.backbone, self.head = backbone, head
        self.feature_projection = None
        if backbone.feature_embedding is not None:
            self.feature_projection = _zeros_dense(backbone.hidden_dim, "feature_projection")

    def call(self, item_index):
        e = self.backbone.token_embedding(item_index)
        if self.feature_projection is not None:
            e = e + self.feature_projection(self.backbone.feature_embedding(item_index))
        bias = tf.gather(self.head.output_bias, item_index)[:, tf.newaxis]
        return tf.concat([e, bias], axis=-1)


class ContentTower(tf.keras.layers.Layer):
    """Item index ``[batch]`` -> ``[batch, hidden_dim + 1]`` from content features alone,
    so that items never seen in training get a candidate vector (cold start).

    Args:
        feature_table, feature_size: ``[items, width]`` categorical/list feature ids
            (genres, categories, attributes) and their id space size.
        numeric_table: ``[items, k]`` standardised numeric features (year...).
        text_table, text_size: ``[items, tokens]`` word ids of a text feature (titles),
            tokenised before training so no text op is needed in the graph.
    """

    def __init__(self, hidden_dim: int, feature_table=None, feature_size: int = 0, numeric_table=None,
                 text_table=None, text_size: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.parts = []
        if feature_table is not None and np.asarray(feature_table).shape[1]:
            self.parts.append(PooledFeatures(feature_table, feature_size, hidden_dim, name="item_features"))
        if text_table is not None and np.asarray(text_table).shape[1]:
            self.parts.append(PooledFeatures(text_table, text_size, hidden_dim, name="item_text"))
        self.numeric = None
        if numeric_table is not None and np.asarray(numeric_table).shape[1]:
            self.numeric = tf.constant(np.asarray(numeric_table, np.float32))
        if not self.parts and self.numeric is None:
            raise ValueError("a content tower needs item features")
        self.hidden = tf.keras.layers.Dense(2 * hidden_dim, activation="gelu", name="content_hidden")
        self.out = tf.keras.layers.Dense(hidden_dim + 1, name="content_output")

    def call(self, item_index):
        parts = [p(item_index) for p in self.parts]
        if self.numeric is not None:
            parts.append(tf.gather(self.numeric, item_index))
        return self.out(self.hidden(tf.concat(parts, axis=-1)))
