"""Several next-item models scored as one: their item log-probabilities, averaged.

Models trained from different starting points (another fine-tuning seed, another
pretraining, from scratch) make different mistakes; averaging their log-softmax scores
ranks better than any of them alone.  The ensemble scores like a single next-item
model (:meth:`logits`, :meth:`score`), so ``tfrec evaluate``, ``recommend`` and
``tfrec export`` take it unchanged; it is saved and rebuilt by
:mod:`tfrec.models.persistence` with every member's weights in one checkpoint.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrec.models.tasks import score_in_batches  # noqa: E402


class NextItemEnsemble(tf.keras.Model):
    """A weighted mean of the members' item log-probabilities.

    Args:
        members: next-item (or pretrained) task models over the same item vocabulary and
            sequence length, each with ``logits(item_ids)``.
        member_weights: one positive weight per member (default: equal); normalised to sum to 1.

    ``logits(item_ids)`` ``[batch, vocabulary_size]`` is ``sum_m w_m * log_softmax(logits_m)``,
    a log-probability-like score: its ranking is the ensemble's recommendation.
    """

    # Scores are not one dot product of a query and an item vector, so an export has no
    # item_embeddings signature.
    serves_item_embeddings = False

    def __init__(self, members, member_weights=None, **kwargs):
        super().__init__(**kwargs)
        members = list(members)
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two models")
        first = members[0].backbone
        for m in members[1:]:
            if m.backbone.vocabulary_size != first.vocabulary_size:
                raise ValueError(f"the models have {first.vocabulary_size} and {m.backbone.vocabulary_size} item ids; "
                                 "an ensemble's models must be trained on the same data")
            if m.backbone.max_len != first.max_len:
                raise ValueError(f"the models read {first.max_len} and {m.backbone.max_len} items of history; "
                                 "an ensemble's models must share model.max_len")
        if member_weights is None:
            member_weights = [1.0] * len(members)
        member_weights = [float(w) for w in member_weights]
        if len(member_weights) != len(members):
            raise ValueError(f"{len(member_weights)} weights for {len(members)} models")
        if not all(np.isfinite(w) and w > 0 for w in member_weights):
            raise ValueError("ensemble weights must be positive numbers")
        total = sum(member_weights)
        self.members = members
        self.member_weights = [w / total for w in member_weights]

    @property
    def backbone(self):
        """The first member's backbone: vocabulary size and sequence length, shared by all."""
        return self.members[0].backbone

    def logits(self, item_ids):
        parts = [w * tf.nn.log_softmax(m.logits(item_ids)) for m, w in zip(self.members, self.member_weights)]
        return tf.add_n(parts)

    def call(self, item_ids, training=False):
        return self.logits(item_ids)

    def score(self, item_ids, batch_size: int = 1024) -> np.ndarray:
        """Scores ``[n, vocabulary_size]`` for left-padded histories ending in the mask slot."""
        return score_in_batches(self, item_ids, batch_size)
