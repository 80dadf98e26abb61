"""Fine-tuning the sequence backbone into tensorflow-recommenders tasks.

One ``tfrs.Model`` covers the four tasks, as the TFRS multitask recipe does: a
retrieval task (query tower over the history and user, candidate tower over the
item) and a ranking task (rating regression or like/dislike classification), mixed
by two loss weights.

- ``retrieval``: retrieval weight 1, ranking weight 0;
- ``ranking``: retrieval weight 0, ranking weight 1;
- ``multitask``: both, weighted;
- ``cold-start``: retrieval whose candidate tower reads content features only, so
  items without any interaction still get a vector.

Features (all ``[batch]`` unless said): ``item_ids`` ``[batch, seq_len]`` (the user's
history, left-padded, ending in the mask slot), ``user_index``, ``item_index`` (the
candidate), ``hour`` and ``weekday`` (context of the interaction), and ``rating``
(the ranking label).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402

from tfrec.contract import (COLD_START, HOUR, ITEM_INDEX, ITEM_INDICES, MULTITASK, RANKING, RETRIEVAL,  # noqa: E402
                            USER_FEATURE_IDS, USER_INDEX, USER_NUMERIC, WEEKDAY)
from tfrec.data import schema  # noqa: E402
from tfrec.models.sequence_backbone import SequenceBackbone  # noqa: E402
from tfrec.models.item_head import item_head  # noqa: E402
from tfrec.models.towers import CandidateTower, ContentTower, PooledFeatures, QueryTower  # noqa: E402

RATING = schema.RATING

TASK_WEIGHTS = {RETRIEVAL: (1.0, 0.0), RANKING: (0.0, 1.0), MULTITASK: (1.0, 1.0), COLD_START: (1.0, 0.0)}
OBJECTIVES = ("rating", "binary")
RETRIEVAL_KS = (1, 5, 10, 50, 100)


class RecommenderModel(tfrs.Model):
    """Retrieval and/or ranking over a shared (pretrained) backbone.

    Args:
        backbone: the sequence backbone; its item embedding is the candidate embedding.
        task: ``retrieval``, ``ranking``, ``multitask`` or ``cold-start``.
        item_probability: ``[vocabulary]`` probability of each item being a batch's
            candidate (its training frequency), for the log-q correction of the in-batch softmax.
        candidates: item indices the retrieval metrics rank among.
        temperature: divides the in-batch logits.
        retrieval_weight, ranking_weight: loss weights (default from the task).
        objective: ``rating`` (MSE; RMSE and MAE) or ``binary`` (labels
            ``rating >= like_threshold``; cross-entropy and AUC).
        rating_mean: the training ratings' mean, the rating model's starting point.
        user_bias, item_bias: starting rating offsets per user index and item index.
        user_table, user_table_size, user_numeric, num_users: user features of the
            query tower and the ranking model (see :class:`QueryTower`).
        content: for ``cold-start``, the content tower's tables
            (``feature_table``, ``feature_size``, ``numeric_table``, ``text_table``, ``text_size``);
            ``item_numeric``: numeric item features of the ranking model.
        cross_layers, mlp: the deep-and-cross ranking network; factor_l2: L2 weight of
            its matrix-factorisation term.
        freeze_backbone: keep the backbone's weights fixed (the head and towers still train).
    """

    def __init__(self, backbone: SequenceBackbone, task: str = RETRIEVAL, item_probability=None, candidates=None,
                 temperature: float = 1.0, retrieval_weight: float | None = None,
                 ranking_weight: float | None = None, objective: str = "rating", like_threshold: float = 4.0,
                 rating_mean: float = 0.0, user_table=None, user_table_size: int = 0, user_numeric=None,
                 num_users: int = 0, content: dict | None = None, item_numeric=None, cross_layers: int = 1,
                 mlp: tuple = (256, 64), dropout: float = 0.2, user_bias=None, item_bias=None, factor_l2: float = 1e-4, freeze_backbone: bool = False, **kwargs):
        super().__init__(**kwargs)
        if task not in TASK_WEIGHTS:
            raise ValueError(f"unknown task {task!r}; known: {', '.join(TASK_WEIGHTS)}")
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
        self.backbone = backbone
        # Applied by the trainer once pretrained weights are in (see :meth:`apply_freeze`).
        self.freeze_backbone = bool(freeze_backbone)
        self.task_name = task
        default_r, default_k = TASK_WEIGHTS[task]
        self.retrieval_weight = default_r if retrieval_weight is None else float(retrieval_weight)
        self.ranking_weight = default_k if ranking_weight is None else float(ranking_weight)
        if task in (RETRIEVAL, COLD_START):
            self.ranking_weight = 0.0
        if task == RANKING:
            self.retrieval_weight = 0.0
        self.objective, self.like_threshold = objective, float(like_threshold)
        self.head = item_head(backbone, extra=False)
        self.query_tower = QueryTower(backbone, self.head, user_table, user_table_size, user_numeric, num_users,
                                      name="query_tower")
        if task == COLD_START:
            if not content:
                raise ValueError("the cold-start task needs item content features")
            self.candidate_tower = ContentTower(backbone.hidden_dim, **content, name="content_tower")
        else:
            self.candidate_tower = CandidateTower(backbone, self.head, name="candidate_tower")
        vocab = backbone.vocabulary_size
        probability = np.full(vocab, 1.0 / vocab) if item_probability is None else np.asarray(item_probability, float)
        self._log_q_table = tf.constant(np.maximum(probability, 1e-12).astype(np.float32))
        if candidates is None:
            candidates = np.arange(schema.NUM_ITEM_RESERVED, vocab, dtype=np.int32)
        self.candidate_ids = np.asarray(candidates, np.int32)
        # Build the head and the candidate tower now: the metrics' candidate index below
        # traces the tower inside tf.data, where no variable may be created.
        self.head.build((None, None, backbone.hidden_dim), (None, 1))
        self.candidate_tower(tf.constant([schema.PAD_ID], tf.int32))
        self.retrieval_task = None
        if self.retrieval_weight:
            index = tf.data.Dataset.from_tensor_slices(self.candidate_ids).batch(2048).map(
                lambda ids: (ids, self.candidate_tower(ids)))
            self.retrieval_task = tfrs.tasks.Retrieval(
                metrics=tfrs.metrics.FactorizedTopK(index, ks=[k for k in RETRIEVAL_KS if k <= len(self.candidate_ids)]),
                temperature=temperature, remove_accidental_hits=True)
        self.ranking_task = None
        if self.ranking_weight:
            self._build_ranking(rating_mean, user_table, user_table_size, user_numeric, num_users, item_numeric,
                                cross_layers, mlp, dropout, user_bias, item_bias, factor_l2)

    @classmethod
    def built(cls, backbone: SequenceBackbone, **arguments) -> "RecommenderModel":
        """A model whose variables all exist (called once on a dummy batch), ready for
        ``set_weights`` or a checkpoint restore."""
        model = cls(backbone, **arguments)
        dummy = {ITEM_INDICES: tf.constant([[schema.NUM_ITEM_RESERVED, schema.MASK_ID]], tf.int32),
                 USER_INDEX: tf.constant([0], tf.int32), ITEM_INDEX: tf.constant([0], tf.int32),
                 HOUR: tf.constant([0], tf.int32), WEEKDAY: tf.constant([0], tf.int32)}
        model(dummy)
        model.candidate_tower(dummy[ITEM_INDEX])
        return model

    def apply_freeze(self) -> None:
        """Fixes the backbone's weights when ``freeze_backbone``: the pretrained encoder
        becomes a feature extractor; heads, towers and the ranking network still train."""
        if self.freeze_backbone:
            self.backbone.trainable = False

    # -- ranking -------------------------------------------------------------------

    def _build_ranking(self, rating_mean, user_table, user_table_size, user_numeric, num_users, item_numeric,
                       cross_layers, mlp, dropout, user_bias, item_bias, factor_l2):
        d = self.backbone.hidden_dim
        self.rating_mean = float(rating_mean) if self.objective == "rating" else 0.0
        # Per-user parameters (an id embedding, a rating offset and a factor) only with `num_users`: without,
        # the network reads the user through features alone, which a request can carry (no user id served).
        per_user = num_users > 0
        self.user_embedding = tf.keras.layers.Embedding(num_users, 32, name="rank_user_id",
                                                        embeddings_regularizer=tf.keras.regularizers.l2(1e-5)) \
            if per_user else None
        # Per-user and per-item offsets, started from the shrunk mean deviations of the
        # training ratings (an embedding row moves only about the learning rate per step).
        def offsets(values, rows, name):
            init = "zeros" if values is None or self.objective != "rating" else \
                tf.keras.initializers.Constant(np.asarray(values, np.float32).reshape(-1, 1))
            return tf.keras.layers.Embedding(rows, 1, embeddings_initializer=init, name=name)

        self.user_bias = offsets(user_bias, num_users, "rank_user_bias") if per_user else None
        self.item_bias = offsets(item_bias, self.backbone.vocabulary_size, "rank_item_bias")
        self.rank_user_features = None
        if user_table is not None and np.asarray(user_table).shape[1]:
            self.rank_user_features = PooledFeatures(user_table, user_table_size, 16, name="rank_user_features")
        self._user_numeric = None if user_numeric is None or not np.asarray(user_numeric).shape[1] \
            else tf.constant(np.asarray(user_numeric, np.float32))
        self._item_numeric = None if item_numeric is None or not np.asarray(item_numeric).shape[1] \
            else tf.constant(np.asarray(item_numeric, np.float32))
        # A biased matrix-factorisation term beside the deep part: user and item factors
        # whose dot product adds to the rating (an MLP alone learns dot products poorly).
        self.user_factor = tf.keras.layers.Embedding(
            num_users, 32, embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.01),
            embeddings_regularizer=tf.keras.regularizers.l2(factor_l2), name="rank_user_factor") if per_user else None
        self.item_factor = tf.keras.layers.Embedding(
            self.backbone.vocabulary_size, 32, embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.01),
            embeddings_regularizer=tf.keras.regularizers.l2(factor_l2), name="rank_item_factor") if per_user else None
        self.hour_embedding = tf.keras.layers.Embedding(24, 4, name="rank_hour")
        self.weekday_embedding = tf.keras.layers.Embedding(7, 4, name="rank_weekday")
        self.cross = [tfrs.layers.dcn.Cross(projection_dim=d // 2, kernel_initializer="glorot_uniform",
                                            name=f"cross_{i}") for i in range(cross_layers)]
        self.deep = tf.keras.Sequential(
            [layer for units in mlp for layer in (tf.keras.layers.Dense(units, activation="relu"),
                                                  tf.keras.layers.Dropout(dropout))]
            + [tf.keras.layers.Dense(1)], name="rank_mlp")
        self.features_norm = tf.keras.layers.LayerNormalization(name="rank_features_norm")
        if self.objective == "rating":
            self.ranking_task = tfrs.tasks.Ranking(
                loss=tf.keras.losses.MeanSquaredError(reduction=tf.keras.losses.Reduction.SUM),
                metrics=[tf.keras.metrics.RootMeanSquaredError(name="rmse"),
                         tf.keras.metrics.MeanAbsoluteError(name="mae")])
        else:
            self.ranking_task = tfrs.tasks.Ranking(
                loss=tf.keras.losses.BinaryCrossentropy(from_logits=True, reduction=tf.keras.losses.Reduction.SUM),
                metrics=[tf.keras.metrics.AUC(from_logits=True, name="auc")])

    def predict_rating(self, features, query=None, training=False):
        """``[batch]`` predicted rating (or like logit for ``binary``).  The user is ``user_index`` (a row of
        the feature tables), or, for a model without per-user parameters, may be its own features
        ``user_feature_ids`` and ``user_numeric`` as :class:`~tfrec.models.towers.QueryTower` reads them."""
        items = features[ITEM_INDEX]
        given = USER_INDEX not in features
        users = None if given else features[USER_INDEX]
        if given and self.user_embedding is not None:
            raise ValueError("this ranking model learns parameters per user; it needs user_index")
        if query is None:
            query = self.query_tower(features, training=training)
        item_vec = self.candidate_tower(items)
        affinity = tf.reduce_sum(query * item_vec, axis=-1, keepdims=True)
        parts = [query[:, :-1], item_vec[:, :-1], affinity,
                 self.hour_embedding(features[HOUR]), self.weekday_embedding(features[WEEKDAY])]
        if self.user_embedding is not None:
            parts.insert(0, self.user_embedding(users))
        if self.rank_user_features is not None:
            parts.append(self.rank_user_features.pool(features[USER_FEATURE_IDS]) if given else
                         self.rank_user_features(users))
        if self._user_numeric is not None:
            parts.append(features[USER_NUMERIC] if given else tf.gather(self._user_numeric, users))
        if self._item_numeric is not None:
            parts.append(tf.gather(self._item_numeric, items))
        x0 = self.features_norm(tf.concat(parts, axis=-1))
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        out = self.deep(x, training=training)[:, 0]
        if self.user_factor is not None:
            out += tf.reduce_sum(self.user_factor(users) * self.item_factor(items), axis=-1)
        out = out + self.rating_mean
        if self.user_bias is not None:
            out = out + self.user_bias(users)[:, 0]
        return out + self.item_bias(items)[:, 0]

    def example_losses(self, y, y_pred, sample_weight=None):
        """``[batch]`` ranking loss of each example (squared error, or cross-entropy for ``binary``): what
        :class:`tfrec.training.privacy.PrivateTraining` clips example by example.  `y` the rating, `y_pred`
        the output of :meth:`call`."""
        predicted = y_pred[RATING]
        label = tf.cast(y, tf.float32)
        if self.objective == "binary":
            label = tf.cast(label >= self.like_threshold, tf.float32)
            losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=label, logits=predicted)
        else:
            losses = tf.square(predicted - label)
        return losses if sample_weight is None else losses * tf.reshape(tf.cast(sample_weight, tf.float32), [-1])

    def rating_label(self, features):
        rating = tf.cast(features[RATING], tf.float32)
        if self.objective == "binary":
            return tf.cast(rating >= self.like_threshold, tf.float32)
        return rating

    # -- tfrs.Model ---------------------------------------------------------------

    def call(self, features, training=False):
        query = self.query_tower(features, training=training)
        out = {"query": query}
        if self.ranking_task is not None:
            out[RATING] = self.predict_rating(features, query, training=training)
        return out

    def compute_loss(self, features, training=False):
        """Weighted sum of the tasks' losses, each a mean over the global batch.

        Both tasks sum over their replica's rows (what ``tf.distribute`` requires); dividing
        by the global batch size makes each a mean once the replicas' gradients are summed.
        """
        query = self.query_tower(features, training=training)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        rows = tf.cast(tf.shape(query)[0] * replicas, tf.float32)
        loss = tf.constant(0.0)
        if self.retrieval_task is not None:
            items = features[ITEM_INDEX]
            candidates = self.candidate_tower(items)
            retrieval_loss = self.retrieval_task(
                query, candidates, candidate_sampling_probability=tf.gather(self._log_q_table, items),
                candidate_ids=items, compute_metrics=not training)
            loss += self.retrieval_weight * retrieval_loss / rows
        if self.ranking_task is not None:
            prediction = self.predict_rating(features, query, training=training)
            ranking_loss = self.ranking_task(labels=self.rating_label(features)[:, tf.newaxis],
                                             predictions=prediction[:, tf.newaxis])
            loss += self.ranking_weight * ranking_loss / rows
        return loss

    # -- scoring ------------------------------------------------------------------

    def candidate_matrix(self) -> np.ndarray:
        """``[vocabulary_size, hidden_dim + 1]`` candidate vectors of every item id."""
        ids = np.arange(self.backbone.vocabulary_size, dtype=np.int32)
        return np.concatenate([self.candidate_tower(tf.constant(ids[i:i + 4096])).numpy()
                               for i in range(0, len(ids), 4096)])

    def _in_batches(self, fn, features: dict, batch_size: int, empty_shape: tuple) -> np.ndarray:
        n = len(next(iter(features.values())))
        out = [fn({k: tf.constant(v[i:i + batch_size]) for k, v in features.items()}).numpy()
               for i in range(0, n, batch_size)]
        return np.concatenate(out) if out else np.zeros(empty_shape, np.float32)

    def query_vectors(self, features: dict, batch_size: int = 1024) -> np.ndarray:
        """``[n, hidden_dim + 1]`` query vectors of numpy features (``item_ids``, ``user_index``)."""
        if not hasattr(self, "_query_fn"):
            self._query_fn = tf.function(lambda f: self.query_tower(f, training=False), reduce_retracing=True)
        return self._in_batches(self._query_fn, features, batch_size, (0, self.backbone.hidden_dim + 1))

    def ratings(self, features: dict, batch_size: int = 4096) -> np.ndarray:
        """``[n]`` predicted ratings (like logits for ``binary``) of numpy features."""
        if not hasattr(self, "_rating_fn"):
            self._rating_fn = tf.function(lambda f: self.predict_rating(f, training=False), reduce_retracing=True)
        return self._in_batches(self._rating_fn, features, batch_size, (0,))
