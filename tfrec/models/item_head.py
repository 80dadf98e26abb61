"""The item head every item-predicting model shares: a keras-nlp ``MaskedLMHead`` tied to the backbone's item
embedding, with the options its models need as constructor arguments (``get_config`` round-trips them).

It outputs the hidden state at the positions asked for; the item logits are that state times the item
embedding (plus each item's pooled feature embedding and output-only item vectors where the backbone has
them) plus a bias, computed by :meth:`ItemHead.project` where the logits are needed.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import keras_nlp  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrec.models.sequence_backbone import SequenceBackbone  # noqa: E402



class ItemHead(keras_nlp.layers.MaskedLMHead):
    """A ``MaskedLMHead`` tied to the item embedding, split in two steps.

    ``head(sequence_output, mask_positions)`` gathers the positions and applies the
    head's dense + layer-norm transform (``[batch, positions, hidden_dim]``);
    :meth:`project` turns such states into item logits with the tied embedding and
    the output bias.  ``project(head(x, p))`` is exactly ``MaskedLMHead``'s output.

    With ``extra_dim > 0`` (the backbone's ``output_extra_dim``) items also get
    output-only vectors of that width, and the state a linear map of the gathered
    encoder output to match (``[batch, positions, hidden_dim + extra_dim]``): logits
    of rank ``hidden_dim + extra_dim``, for a model that must express more than its
    input embedding's width holds (a distilled ensemble, say).  The map starts at zero,
    so the logits start as the tied head's; its weights are the head's own, so a head
    copied from one without them (:func:`copy_head_weights`) keeps the rest.

    With ``last_item`` (the backbone's ``output_last_item``) every item also gets a vector
    added to the state of a history that ends with it (``head(x, p, previous_items=ids)``,
    ``ids`` ``[batch, positions]`` the item each state follows): a transition term
    ``v[last] . e[next]`` of the item pair itself, of the state's full width, beside what the
    encoder makes of the whole history.  The vectors start at zero, like the extra map.
    """

    def __init__(self, vocabulary_size: int, token_embedding, extra_dim: int = 0, last_item: bool = False,
                 output_embeddings=None, **kwargs):
        """`extra_dim`, `last_item`: as above; `output_embeddings`: a callable giving the matrix to score
        against instead of the tied embedding (a feature-aware backbone's ``output_item_embeddings``;
        a bound method, not a layer, so the head's checkpoint has the same shape either way)."""
        super().__init__(vocabulary_size=vocabulary_size, token_embedding=token_embedding, **kwargs)
        if extra_dim < 0:
            raise ValueError(f"extra_dim {extra_dim} is negative")
        self.extra_dim = int(extra_dim)
        self.last_item = bool(last_item)
        self._output_embeddings = output_embeddings

    def get_config(self):
        config = super().get_config()
        config.update(extra_dim=self.extra_dim, last_item=self.last_item)
        return config

    def build(self, inputs_shape, mask_positions_shape=None):
        super().build(inputs_shape, mask_positions_shape)
        if self.extra_dim:
            self._extra_dense = tf.keras.layers.Dense(self.extra_dim, kernel_initializer="zeros",
                                                      name="extra_state_dense")
            self._extra_dense.build((inputs_shape[0], None, inputs_shape[-1]))
            self._extra_items = self.add_weight(
                name="extra_item_embeddings", shape=[self.vocabulary_size, self.extra_dim],
                initializer=tf.keras.initializers.TruncatedNormal(stddev=0.02), dtype=self.dtype)
        if self.last_item:
            self._last_item_vectors = self.add_weight(
                name="last_item_vectors", shape=[self.vocabulary_size, inputs_shape[-1] + self.extra_dim],
                initializer="zeros", dtype=self.dtype)

    def call(self, inputs, mask_positions, previous_items=None):
        positions = tf.cast(mask_positions, tf.int32)[..., tf.newaxis]
        x = tf.gather_nd(inputs, positions, batch_dims=1)
        hidden = self._intermediate_layer_norm(self._intermediate_dense(x))
        if self.extra_dim:
            hidden = tf.concat([hidden, self._extra_dense(x)], axis=-1)
        if self.last_item:
            if previous_items is None:
                raise ValueError("a head with last-item vectors needs previous_items")
            hidden = hidden + tf.gather(self._last_item_vectors, tf.cast(previous_items, tf.int32))
        return hidden

    def own_weights(self) -> dict:
        """The weights this head adds to ``MaskedLMHead``'s, in the groups that are taken or left
        together: ``extra`` (the output-only item vectors and their state map) and
        ``last_item`` (the last-item vectors), those it has."""
        out = {}
        if self.extra_dim:
            out["extra"] = [self._extra_items, *self._extra_dense.weights]
        if self.last_item:
            out["last_item"] = [self._last_item_vectors]
        return out

    def item_matrix(self):
        """``[vocabulary_size, state width]``: what a state is scored against, before the bias."""
        tied = self.token_embedding.embeddings if self._output_embeddings is None else self._output_embeddings()
        return tf.concat([tied, self._extra_items], axis=1) if self.extra_dim else tied

    def project(self, hidden):
        if self._output_embeddings is None and not self.extra_dim:
            return self.token_embedding(hidden, reverse=True) + self._bias
        return tf.matmul(hidden, self.item_matrix(), transpose_b=True) + self._bias

    @property
    def output_bias(self):
        return self._bias

    def compute_output_shape(self, inputs_shape, mask_positions_shape):
        return tuple(mask_positions_shape) + (inputs_shape[-1] + self.extra_dim,)


def copy_head_weights(target: ItemHead, source: ItemHead) -> None:
    """Copies `source`'s head weights into `target`: the tied head's always; of the head's own
    weight groups (:meth:`ItemHead.own_weights`), each one both heads have at the same shapes (a
    head gaining output-only or last-item vectors keeps its fresh, zero-started ones; a head
    without them leaves the source's out)."""
    def split(head):
        own = head.own_weights()
        ids = {id(w) for group in own.values() for w in group}
        return [w for w in head.weights if id(w) not in ids], own

    (mine, my_own), (theirs, their_own) = split(target), split(source)
    if [tuple(w.shape) for w in mine] != [tuple(w.shape) for w in theirs]:
        raise ValueError("the source head's weights do not match this head's")
    pairs = list(zip(mine, theirs))
    for name, group in my_own.items():
        other = their_own.get(name, [])
        if [tuple(w.shape) for w in group] == [tuple(w.shape) for w in other]:
            pairs += zip(group, other)
    for w, value in pairs:
        w.assign(value)


def item_head(backbone: SequenceBackbone, extra: bool = True) -> ItemHead:
    """The item head over `backbone`; `extra`: with the backbone's output-only item vectors
    (``output_extra_dim``), which towers of the TFRS tasks do not take."""
    return ItemHead(vocabulary_size=backbone.vocabulary_size, token_embedding=backbone.token_embedding,
                    extra_dim=backbone.output_extra_dim if extra else 0,
                    last_item=backbone.output_last_item and extra,
                    output_embeddings=backbone.output_item_embeddings if backbone.output_features else None,
                    intermediate_activation="gelu", activation=None, name="item_head")
