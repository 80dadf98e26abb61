"""Serving graphs of trained tfrec models: string ids in, string ids and scores out.

Signature contracts (every client may rely on the names, dtypes and shapes):

- next-item, pretrained and retrieval models (:class:`SequenceServing`):
  ``serving_default``: ``history`` ``DT_STRING [-1, -1]`` (item ids of the source data,
  oldest first; empty strings are padding wherever they stand, unknown ids are
  dropped), plus ``user_id`` ``DT_STRING [-1]`` for models with user features (default
  ``""``: an unknown user, features zero) -> ``item_ids`` ``DT_STRING [-1, K]`` and
  ``scores`` ``DT_FLOAT [-1, K]``, best first, the history's items excluded.
  ``rerank``: the same inputs plus ``diversity`` and ``popularity_penalty`` ``DT_FLOAT [-1]`` (one
  value per row, or one for all rows; signature defaults ``[0.0]``, so a gRPC request may leave them
  out and get serving_default's answer; REST requests name every input, as TF Serving's REST API
  requires) -> the same outputs, re-ranked (:mod:`tfrec.models.reranking`: MMR and a popularity
  penalty calibrated to the user); ``scores`` stay the model's scores of the chosen items.
  ``serving_tf_example``: ``examples`` ``DT_STRING [-1]`` (serialized ``tf.Example`` with a
  bytes feature ``history``, and ``user_id`` when used, and float features ``diversity`` and
  ``popularity_penalty`` when wanted) -> the same outputs.
  ``item_embeddings``: ``item_ids`` ``DT_STRING [-1]`` -> ``embeddings`` ``DT_FLOAT [-1, D]``
  (unknown ids get the out-of-vocabulary row), for an external vector index: a query
  scores ``candidate . query`` where the retrieval query is the same model's.
- ranking and multitask models (:class:`RankingServing`): ``serving_default`` (ranking
  only) or ``rank`` (multitask): ``user_id`` ``DT_STRING [-1]`` (or, for a model without per-user
  parameters, ``user_features`` ``DT_STRING [-1, -1]``: the user's "column=value" strings), ``item_id``
  ``DT_STRING [-1]``, ``history`` ``DT_STRING [-1, -1]``, ``timestamp`` ``DT_INT64 [-1]``
  (unix seconds; hour and weekday come from it) -> ``score`` ``DT_FLOAT [-1]`` (the
  predicted rating, or the like probability of a binary model); and ``regress``
  (``inputs``: serialized ``tf.Example``s with those features -> ``outputs``), which
  :mod:`tfrec.export.exporter` marks with TF Serving's regress method name.

Everything in these graphs is a core TensorFlow op: vocabulary lookups are
``tf.lookup`` tables over the asset files, and no text, keras-nlp or ScaNN op is used.
"""

from __future__ import annotations

import os
import re

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrec.contract import (BECAUSE_ITEM_IDS, BECAUSE_WEIGHTS, DIVERSITY, EMBEDDINGS, EXAMPLES,  # noqa: E402,F401
                            EXPLAIN, EXPLAIN_WINDOW, HISTORY, ITEM_EMBEDDINGS, ITEM_ID, ITEM_IDS, ITEM_INDEX,
                            ITEM_INDICES, POPULARITY_PENALTY, RANK, REGRESS, REGRESS_INPUTS, REGRESS_METHOD,
                            REGRESS_OUTPUTS, RERANK, RERANK_KNOBS, SCORE, SCORES, SERVING_DEFAULT, SERVING_TF_EXAMPLE,
                            SHARED_ATTRIBUTES, TIMESTAMP, USER_FEATURE_IDS, USER_FEATURES, USER_ID,
                            USER_INDEX, USER_NUMERIC)
from tfrec.data import schema  # noqa: E402
from tfrec.data.preprocessor import SequencePreprocessor, pack_histories, time_features  # noqa: E402
from tfrec.models import reranking  # noqa: E402

EXPLAINED = 10  # the recommendations the explain signature explains (at most K)
BECAUSE = 3  # the history items it names for each
NUMBER = r"[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?"  # a numeric user feature's value


NO_PROFILE = {"keys": [], "ids": [], "numeric": []}  # the user profile of a dataset without user features


class _Base(tf.Module):
    def __init__(self, model, item_vocab: str, user_vocab: str | None, max_len: int, k: int):
        super().__init__()
        # The model itself stays untracked (written to __dict__): the SavedModel holds its
        # variables and the traced functions, not Keras objects, so loading it needs
        # nothing but TensorFlow.
        self.__dict__["model"] = model
        self.model_variables = list(model.variables)
        # String ids, packing, the mask slot and time features: the one preprocessor training uses too.
        self.preprocessor = SequencePreprocessor(item_vocab, max_len, user_vocab)
        self.max_len = int(max_len)
        self.vocabulary_size = int(model.backbone.vocabulary_size)
        self.k = int(min(k, self.vocabulary_size - schema.NUM_ITEM_RESERVED))

    def _history(self, history):
        """``[B, T]`` strings -> (``[B, W + 1]`` ids ending in the mask slot, ``[B, T]`` ids, ``[B, T]`` known).

        ``W`` is the most known items of any row, at most ``max_len - 1``: the batch is packed
        no wider than its longest history (positions count from the right, so the scores are
        those of a full-width batch, at a fraction of the work for short histories)."""
        ids, known = self.preprocessor.lookup(history)
        return pack_histories(ids, known, self.max_len), ids, known

    def _users(self, user_id):
        return self.preprocessor.users(user_id)

    def _read_user_features(self, profile: dict | None, numeric: bool) -> None:
        """Requests name their user by ``"column=value"`` strings: the ids of the categorical values (the
        exporter's :func:`~tfrec.export.exporter.user_profile`) and, with `numeric`, how each numeric
        column is standardised.  No user id and no per-user table."""
        profile = profile or NO_PROFILE
        keys, ids = list(profile["keys"]) or [""], list(profile["ids"]) or [0]
        self.user_feature_index = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(keys, tf.string), tf.constant(ids, tf.int32)), default_value=0)
        columns = list(profile["numeric"]) if numeric else []
        self.user_numeric_columns = [(str(name), float(mean), float(std or 1.0)) for name, mean, std in columns]

    def _user_features(self, value) -> dict:
        """``[B, F]`` "column=value" strings -> ``user_feature_ids`` and ``user_numeric`` (unknown columns
        and values add nothing; a numeric column's value is standardised as in training, the mean where
        absent or not a number)."""
        tokens = tf.convert_to_tensor(value, tf.string)
        out = {USER_FEATURE_IDS: self.user_feature_index.lookup(tokens)}
        if self.user_numeric_columns:
            columns = []
            for name, mean, std in self.user_numeric_columns:
                prefix = re.escape(name + "=")
                given = tf.strings.regex_full_match(tokens, prefix + NUMBER)
                text = tf.where(given, tf.strings.regex_replace(tokens, "^" + prefix, ""), "0")
                z = tf.where(given, (tf.strings.to_number(text, tf.float32) - mean) / std, 0.0)
                count = tf.reduce_sum(tf.cast(given, tf.float32), axis=1)
                columns.append(tf.reduce_sum(z, axis=1) / tf.maximum(count, 1.0))
            out[USER_NUMERIC] = tf.stack(columns, axis=1)
        return out

    def _masked(self, scores, ids, known):
        """``[B, V]`` scores with reserved ids and the history's items (all of it, not only the packed
        part) at -inf."""
        where = tf.where(known)
        pairs = tf.stack([where[:, 0], tf.cast(tf.gather_nd(ids, where), tf.int64)], axis=1)
        scores = tf.tensor_scatter_nd_update(scores, pairs, tf.fill(tf.shape(pairs)[:1], float("-inf")))
        reserved = tf.fill(tf.stack([tf.shape(scores)[0], schema.NUM_ITEM_RESERVED]), float("-inf"))
        return tf.concat([reserved, scores[:, schema.NUM_ITEM_RESERVED:]], axis=1)

    def _top_k(self, scores, ids, known, diversity=None, popularity_penalty=None):
        """Best K of ``[B, V]`` scores, reserved ids and the history's items excluded; re-ranked
        (:mod:`tfrec.models.reranking`) where a row's knobs are not 0."""
        scores = self._masked(scores, ids, known)
        if diversity is None:
            best, index = tf.math.top_k(scores, k=self.k)
        else:
            index, best = reranking.rerank(scores, self.item_vectors, self.popularity, self.average_level, ids, known,
                                           self.k, diversity, popularity_penalty)
        return {ITEM_IDS: self.preprocessor.tokens(index), SCORES: best}


class SequenceServing(_Base):
    """History (and user) -> top-K items, for next-item, pretrained and retrieval models."""

    def __init__(self, model, item_vocab: str, user_vocab: str | None, max_len: int, k: int = 100,
                 interactions=None, attributes=None, explain_window: int = EXPLAIN_WINDOW, user_profile=None):
        if explain_window < 0:
            raise ValueError(f"the explain window must be 0 (every history item) or positive, got {explain_window}")
        self.retrieval = hasattr(model, "query_tower")
        uses_user = self.retrieval and model.query_tower.uses_user
        # What a request names its user by: the user's own features ("column=value" strings) where the
        # query tower reads features only, so the export holds no user id and no per-user table; a user id
        # where the tower embeds ids (or no profile was given).
        by_features = uses_user and user_profile is not None and model.query_tower.user_id is None
        super().__init__(model, item_vocab, user_vocab if uses_user and not by_features else None, max_len, k)
        self.uses_user = uses_user
        self.user_input = (USER_FEATURES if by_features else USER_ID) if uses_user else None
        if by_features:
            self._read_user_features(user_profile, model.query_tower.user_numeric is not None)
        self.serves_embeddings = getattr(model, "serves_item_embeddings", True)
        if self.retrieval:
            self.candidates = tf.Variable(model.candidate_matrix(), trainable=False, name="candidate_embeddings")
        elif self.serves_embeddings:
            # The matrix the head scores against (item embedding, plus the feature embedding
            # where the model scores with features, then any output-only item vectors), so
            # [h, 1] . [e_i, b_i] is the model's logit.
            self.candidates = tf.Variable(model.head.item_matrix(), trainable=False,
                                          name="item_embeddings")
            self.bias = tf.Variable(model.head.output_bias, trainable=False, name="item_bias")
        # what the re-rankers read: the vectors MMR compares items by, and each item's popularity level
        self.item_vectors = (self.candidates if self.retrieval or self.serves_embeddings else
                             tf.Variable(reranking.similarity_vectors(model), trainable=False, name="item_vectors"))
        counts = np.zeros(self.vocabulary_size) if interactions is None else np.asarray(interactions)
        levels, average = reranking.popularity_levels(counts)
        self.popularity = tf.Variable(levels, trainable=False, name="item_popularity")
        self.average_level = tf.Variable(average, dtype=tf.float32, trainable=False, name="average_popularity")
        # what the explain signature reads: each item's attribute ids and their "column=value" names
        table, names = attributes if attributes is not None else (np.zeros((self.vocabulary_size, 1), np.int32), [""])
        self.attribute_table = tf.constant(np.asarray(table, np.int32))
        self.attribute_names = tf.constant(list(names), tf.string)
        self.explained = int(min(EXPLAINED, self.k))
        self.explain_window = int(explain_window)

    def _query(self, packed, users):
        """A retrieval model's query vectors for packed histories (and users: indices, or feature tensors)."""
        features = {ITEM_INDICES: packed}
        if self.user_input == USER_FEATURES:
            features.update(users)
        elif self.uses_user:
            features[USER_INDEX] = users
        return self.model.query_tower(features, training=False)

    def _user(self, value):
        """A request's user input -> what the query tower reads: ``[B]`` user indices for a user id, or
        the features of ``[B, F]`` "column=value" strings (:meth:`_user_features`)."""
        if self.user_input != USER_FEATURES:
            return self._users(value)
        return self._user_features(value)

    def scores(self, packed, users=None):
        """``[B, V]`` scores of every item id for packed histories."""
        if self.retrieval:
            return tf.matmul(self._query(packed, users), self.candidates, transpose_b=True)
        if self.serves_embeddings:
            # The matrix snapshot taken at export: a feature-aware head does not rebuild every
            # item's feature embedding per request.  Equal to the model's logits.
            hidden = self.model._last_position_hidden(packed)
            return tf.matmul(hidden, self.candidates, transpose_b=True) + self.bias
        return self.model.logits(packed)

    def item_scores(self, packed, users, items):
        """``[N, E]`` scores of ``[N, E]`` item ids for packed histories: only those items are scored where
        the model is a dot product (what makes occlusion's many variants affordable)."""
        if self.retrieval:
            return tf.einsum("nd,ned->ne", self._query(packed, users), tf.gather(self.candidates, items))
        if self.serves_embeddings:
            hidden = self.model._last_position_hidden(packed)
            return tf.einsum("nd,ned->ne", hidden, tf.gather(self.candidates, items)) + tf.gather(self.bias, items)
        return tf.gather(self.model.logits(packed), items, batch_dims=1)

    def recommend(self, history, user_id=None, diversity=None, popularity_penalty=None):
        packed, ids, known = self._history(history)
        users = self._user(user_id) if self.uses_user else None
        return self._top_k(self.scores(packed, users), ids, known, diversity, popularity_penalty)

    def explain(self, history, user_id=None):
        """The top :data:`EXPLAINED` items, each with the :data:`BECAUSE` history items whose removal lowers
        its score most, and the attributes it shares with the history.  Occlusion: each of the most recent
        ``explain_window`` history items (0: every one) is left out in turn and every variant is scored in
        one batch, so the weights are the score drops themselves; an older item is never named."""
        packed, ids, known = self._history(history)
        users = self._user(user_id) if self.uses_user else None
        full = self.scores(packed, users)
        best, rec = tf.math.top_k(self._masked(full, ids, known), k=self.explained)  # [B, E]
        rows, width = tf.shape(packed)[0], tf.shape(packed)[1] - 1  # W history slots, then the mask slot
        # the S slots left out in turn: the last S of the W (rows are right-aligned, so each row's newest)
        size = width if not self.explain_window else tf.minimum(width, self.explain_window)
        # variant p: the packed row without slot p (older slots move right, a pad enters on the left)
        slot, place = tf.range(width - size, width)[:, tf.newaxis], tf.range(width + 1)[tf.newaxis, :]
        source = tf.where(place <= slot, place - 1, place) + 1  # [S, W + 1] into the row with a pad in front
        variants = tf.gather(tf.pad(packed, [[0, 0], [1, 0]]), source, axis=1)  # [B, S, W + 1]
        flat = tf.reshape(variants, tf.stack([rows * size, width + 1]))
        flat_users = None if users is None else tf.nest.map_structure(lambda t: tf.repeat(t, size, axis=0), users)
        scored = self.item_scores(flat, flat_users, tf.repeat(rec, size, axis=0))  # [B * S, E]
        drop = best[:, tf.newaxis, :] - tf.reshape(scored, tf.stack([rows, size, -1]))  # [B, S, E]
        left_out = packed[:, width - size:width]  # [B, S] the items of those slots
        drop = tf.where((left_out > 0)[:, tf.newaxis, :], tf.transpose(drop, [0, 2, 1]), float("-inf"))  # [B, E, S]
        drop = tf.pad(drop, [[0, 0], [0, 0], [0, BECAUSE]], constant_values=float("-inf"))
        weight, at = tf.math.top_k(drop, k=BECAUSE)  # [B, E, M] slots among the S
        item = tf.gather(tf.pad(left_out, [[0, 0], [0, BECAUSE]]), at, batch_dims=1)
        real = tf.logical_and(tf.math.is_finite(weight), item > 0)
        because = tf.where(real, self.preprocessor.tokens(item), "")
        # attributes of each recommended item that some history item has too
        mine = tf.gather(self.attribute_table, rec)  # [B, E, F]
        theirs = tf.reshape(tf.gather(self.attribute_table, packed[:, :width]), tf.stack([rows, 1, 1, -1]))
        shared = tf.logical_and(mine > 0, tf.reduce_any(mine[..., tf.newaxis] == theirs, axis=-1))
        return {ITEM_IDS: self.preprocessor.tokens(rec), SCORES: best, BECAUSE_ITEM_IDS: because,
                BECAUSE_WEIGHTS: tf.where(real, weight, 0.0),
                SHARED_ATTRIBUTES: tf.where(shared, tf.gather(self.attribute_names, mine), "")}

    def embeddings(self, item_ids):
        index = self.preprocessor.items(item_ids)
        if self.retrieval:
            return {EMBEDDINGS: tf.gather(self.candidates, index)}
        # [e_i, b_i]: a query [h, 1] from the same model scores h . e_i + b_i
        return {EMBEDDINGS: tf.concat([tf.gather(self.candidates, index),
                                       tf.gather(self.bias, index)[:, tf.newaxis]], axis=1)}

    def signatures(self) -> dict:
        history_spec = tf.TensorSpec([None, None], tf.string, name=HISTORY)
        knobs = [tf.TensorSpec([None], tf.float32, name=DIVERSITY), tf.TensorSpec([None], tf.float32,
                                                                                 name=POPULARITY_PENALTY)]
        user_spec = None if not self.uses_user else (
            tf.TensorSpec([None, None], tf.string, name=USER_FEATURES) if self.user_input == USER_FEATURES
            else tf.TensorSpec([None], tf.string, name=USER_ID))
        if self.uses_user:
            default = tf.function(lambda history, user: self.recommend(history, user)).get_concrete_function(
                history_spec, user_spec)
        else:
            default = tf.function(lambda history: self.recommend(history)).get_concrete_function(history_spec)
        # The re-ranking signature: serving_default's inputs plus the knobs, which have signature defaults
        # (0: the model's own top-K), so a gRPC request may leave them out; TF Serving's REST API names
        # every input of a signature, so serving_default keeps its inputs and REST clients stay unchanged.
        off = tf.constant([0.0])
        if self.uses_user:
            def with_user(history, user, diversity=off, popularity_penalty=off):
                return self.recommend(history, user, diversity, popularity_penalty)

            rerank = tf.function(with_user, input_signature=[history_spec, user_spec, *knobs])
        else:
            def without_user(history, diversity=off, popularity_penalty=off):
                return self.recommend(history, None, diversity, popularity_penalty)

            rerank = tf.function(without_user, input_signature=[history_spec, *knobs])

        def from_examples(examples):
            spec = {HISTORY: tf.io.VarLenFeature(tf.string),
                    **{name: tf.io.FixedLenFeature([], tf.float32, default_value=0.0) for name in RERANK_KNOBS}}
            if self.user_input == USER_FEATURES:
                spec[USER_FEATURES] = tf.io.VarLenFeature(tf.string)
            elif self.uses_user:
                spec[USER_ID] = tf.io.FixedLenFeature([], tf.string, default_value="")
            parsed = tf.io.parse_example(examples, spec)
            history = tf.sparse.to_dense(parsed[HISTORY], default_value="")
            user = parsed.get(USER_ID)
            if self.user_input == USER_FEATURES:
                user = tf.sparse.to_dense(parsed[USER_FEATURES], default_value="")
            return self.recommend(history, user, parsed[DIVERSITY], parsed[POPULARITY_PENALTY])

        examples = tf.function(from_examples).get_concrete_function(tf.TensorSpec([None], tf.string, name=EXAMPLES))
        if self.uses_user:
            explain = tf.function(lambda history, user: self.explain(history, user)).get_concrete_function(
                history_spec, user_spec)
        else:
            explain = tf.function(lambda history: self.explain(history)).get_concrete_function(history_spec)
        out = {SERVING_DEFAULT: default, SERVING_TF_EXAMPLE: examples, RERANK: rerank, EXPLAIN: explain}
        if self.serves_embeddings:
            out[ITEM_EMBEDDINGS] = tf.function(lambda item_ids: self.embeddings(item_ids)).get_concrete_function(
                tf.TensorSpec([None], tf.string, name=ITEM_IDS))
        return out


class RankingServing(_Base):
    """(user, item, history, time) -> score, for ranking and multitask models.  The user is a user id, or,
    for a model without per-user parameters (``tasks.user_params: false``), the user's own features
    (``user_features``: "column=value" strings), so that the export holds no user id and no per-user table."""

    def __init__(self, model, item_vocab: str, user_vocab: str, max_len: int, k: int = 100, user_profile=None):
        by_features = model.user_embedding is None
        super().__init__(model, item_vocab, None if by_features else user_vocab, max_len, k)
        self.binary = model.objective == "binary"
        self.user_input = USER_FEATURES if by_features else USER_ID
        if by_features:
            self._read_user_features(user_profile, model._user_numeric is not None)

    def score(self, user, item_id, history, timestamp):
        packed, _, _ = self._history(history)
        users = self._user_features(user) if self.user_input == USER_FEATURES else {USER_INDEX: self._users(user)}
        features = {ITEM_INDICES: packed, **users, ITEM_INDEX: self.preprocessor.items(item_id),
                    **time_features(timestamp)}
        out = self.model.predict_rating(features, training=False)
        return tf.sigmoid(out) if self.binary else out

    def _parse(self, examples):
        by_features = self.user_input == USER_FEATURES
        parsed = tf.io.parse_example(examples, {
            self.user_input: tf.io.VarLenFeature(tf.string) if by_features else
            tf.io.FixedLenFeature([], tf.string, default_value=""),
            ITEM_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
            HISTORY: tf.io.VarLenFeature(tf.string),
            TIMESTAMP: tf.io.FixedLenFeature([], tf.int64, default_value=0)})
        user = tf.sparse.to_dense(parsed[USER_FEATURES], default_value="") if by_features else parsed[USER_ID]
        return user, parsed[ITEM_ID], tf.sparse.to_dense(parsed[HISTORY], default_value=""), parsed[TIMESTAMP]

    def signatures(self, default_name: str = SERVING_DEFAULT) -> dict:
        user = tf.TensorSpec([None, None], tf.string, name=USER_FEATURES) if self.user_input == USER_FEATURES else \
            tf.TensorSpec([None], tf.string, name=USER_ID)
        specs = (user, tf.TensorSpec([None], tf.string, name=ITEM_ID),
                 tf.TensorSpec([None, None], tf.string, name=HISTORY), tf.TensorSpec([None], tf.int64, name=TIMESTAMP))
        if self.user_input == USER_FEATURES:  # the argument names are the signature's input names
            rank = tf.function(lambda user_features, item_id, history, timestamp: {
                SCORE: self.score(user_features, item_id, history, timestamp)}).get_concrete_function(*specs)
        else:
            rank = tf.function(lambda user_id, item_id, history, timestamp: {
                SCORE: self.score(user_id, item_id, history, timestamp)}).get_concrete_function(*specs)
        regress = tf.function(lambda inputs: {REGRESS_OUTPUTS: self.score(*self._parse(inputs))}).get_concrete_function(
            tf.TensorSpec([None], tf.string, name=REGRESS_INPUTS))
        return {default_name: rank, REGRESS: regress}
