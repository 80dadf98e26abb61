"""DP-SGD (tfrec.training.privacy): clipped and noised gradients against a direct numpy computation, Poisson
sampling of users, and the accounting against dp-accounting's own figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tfrec  # noqa: F401  (Keras 2)
import tensorflow as tf

from tfrec.data import inputs
from tfrec.data.inputs import PoissonSampling
from tfrec.errors import TfrecError
from tfrec.training import privacy
from tfrec.training.config import RunConfig


def test_clipped_sum_is_the_numpy_computation():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3, 2)).astype(np.float32), rng.normal(size=(5, 4)).astype(np.float32)
    a[0] *= 0.01  # one example well inside the clip, the others outside
    out, norms = privacy.clipped_noisy_sum([tf.constant(a), tf.constant(b)], l2_clip=1.5, noise_multiplier=0.0,
                                           expected_batch=4.0)
    norm = np.sqrt((a ** 2).sum(axis=(1, 2)) + (b ** 2).sum(axis=1))  # over both variables together
    scale = np.minimum(1.0, 1.5 / norm)
    np.testing.assert_allclose(norms.numpy(), norm, rtol=1e-5)
    np.testing.assert_allclose(out[0].numpy(), (a * scale[:, None, None]).sum(0) / 4.0, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out[1].numpy(), (b * scale[:, None]).sum(0) / 4.0, rtol=1e-5, atol=1e-7)
    assert scale[0] == 1.0 and (scale[1:] < 1).all()


def test_the_noise_has_the_promised_spread_and_repeats_with_its_seed():
    zeros = tf.zeros([1, 200_000])
    seed = tf.constant([3, 7], tf.int64)
    first, _ = privacy.clipped_noisy_sum([zeros], l2_clip=2.0, noise_multiplier=1.5, expected_batch=10.0, seed=seed)
    again, _ = privacy.clipped_noisy_sum([zeros], l2_clip=2.0, noise_multiplier=1.5, expected_batch=10.0, seed=seed)
    other, _ = privacy.clipped_noisy_sum([zeros], l2_clip=2.0, noise_multiplier=1.5, expected_batch=10.0,
                                         seed=tf.constant([3, 8], tf.int64))
    values = first[0].numpy()
    assert values.std() == pytest.approx(1.5 * 2.0 / 10.0, rel=0.01) and abs(values.mean()) < 0.002
    np.testing.assert_array_equal(values, again[0].numpy())
    assert not np.array_equal(values, other[0].numpy())


class _Linear(tf.keras.Model):
    """y = x . w, with the example_losses interface of tfrec's task models (squared error per example)."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable([[0.5], [-1.0], [2.0]])

    def call(self, x, training=False):
        return tf.matmul(x, self.w)

    def example_losses(self, y, y_pred, sample_weight=None):
        return 0.5 * tf.reduce_sum(tf.square(y_pred - y), axis=1)


def test_a_private_step_applies_the_clipped_per_example_gradients():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 3)).astype(np.float32), rng.normal(size=(6, 1)).astype(np.float32)
    inner = _Linear()
    w0 = inner.w.numpy().copy()
    model = privacy.PrivateTraining(inner, l2_clip=1.0, noise_multiplier=0.0, expected_batch=8.0)
    model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=1.0))
    model.fit(x, y, batch_size=6, epochs=1, verbose=0, shuffle=False)
    residual = x @ w0 - y  # [6, 1]
    grads = residual * x  # the gradient of 0.5 * (x.w - y)^2 for each example, [6, 3]
    scale = np.minimum(1.0, 1.0 / np.linalg.norm(grads, axis=1))
    expected = w0 - ((grads * scale[:, None]).sum(0) / 8.0)[:, None]
    np.testing.assert_allclose(inner.w.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_poisson_sampling_draws_each_user_at_the_rate_and_one_example_each():
    sizes = np.array([3, 0, 1, 5, 2])  # user 1 has no example
    owner = np.repeat(np.arange(5), sizes)
    ds = inputs._batched({"owner": owner, "row": np.arange(len(owner))}, lambda i, b: b, 0, False, 5, False,
                         poisson=PoissonSampling(0.3, sizes))
    seen = np.zeros(5)
    rows = []
    for batch in ds.take(2000):
        owners = batch["owner"].numpy()
        assert len(set(owners.tolist())) == len(owners)  # a user in a step gives one example
        seen[owners] += 1
        rows += batch["row"].numpy().tolist()
    assert seen[1] == 0
    np.testing.assert_allclose(seen[[0, 2, 3, 4]] / 2000, 0.3, atol=0.035)
    counts = np.bincount(rows, minlength=len(owner))  # within user 3, its five examples alike
    assert counts[4:9].min() > 0.7 * counts[4:9].max()
    again = [b["row"].numpy().tolist() for b in inputs._batched(
        {"owner": owner, "row": np.arange(len(owner))}, lambda i, b: b, 0, False, 5, False,
        poisson=PoissonSampling(0.3, sizes)).take(20)]
    first = [b["row"].numpy().tolist() for b in ds.take(20)]
    assert again == first  # seeded


def test_unit_sizes_match_the_example_builders():
    rng = np.random.default_rng(2)
    seqs = [rng.integers(3, 50, size=n).astype(np.int32) for n in (1, 2, 7, 20, 21, 45, 61)]
    assert privacy.unit_sizes_of_prefixes(seqs).sum() == len(inputs.next_item_examples(seqs, 20)[1])
    assert privacy.unit_sizes_of_windows(seqs, 20).tolist() == [len(inputs.sliding_windows([s], 20)) for s in seqs]
    assert privacy.unit_sizes_of_causal_rows(seqs, 20).sum() == len(inputs.causal_next_item_examples(seqs, 20)[1])


def test_the_accountant_is_dp_accountings_and_the_noise_search_inverts_it():
    from dp_accounting import dp_event, rdp

    accountant = rdp.RdpAccountant(privacy.ORDERS)
    accountant.compose(dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(0.01, dp_event.GaussianDpEvent(1.1)), 10_000))
    assert privacy.epsilon(1.1, 0.01, 10_000, 1e-5) == pytest.approx(accountant.get_epsilon(1e-5))
    # more noise, fewer steps or a smaller sampling rate spend less
    assert privacy.epsilon(2.0, 0.01, 10_000, 1e-5) < privacy.epsilon(1.1, 0.01, 10_000, 1e-5)
    assert privacy.epsilon(1.1, 0.01, 1_000, 1e-5) < privacy.epsilon(1.1, 0.01, 10_000, 1e-5)
    assert privacy.epsilon(0.0, 0.01, 10, 1e-5) == math.inf and privacy.epsilon(1.0, 0.01, 0, 1e-5) == 0.0
    for target in (1.0, 3.0, 8.0):
        noise = privacy.noise_for_epsilon(target, 0.25, 200, 1e-3)
        assert privacy.epsilon(noise, 0.25, 200, 1e-3) <= target < privacy.epsilon(noise * 0.99, 0.25, 200, 1e-3)


def test_a_plan_follows_the_settings():
    config = RunConfig.from_dict({"privacy": {"target_epsilon": 3.0}, "finetune": {"batch_size": 50, "epochs": 4}})
    sizes = np.array([4, 0, 2, 9] * 50)  # 150 users with examples
    plan = privacy.plan(config.privacy, config.finetune, "finetune", sizes)
    assert plan.units == 150 and plan.sampling.rate == pytest.approx(50 / 150) and plan.steps_per_epoch == 3
    assert plan.delta == pytest.approx(1 / 150) and plan.expected_batch == pytest.approx(50)
    assert privacy.epsilon(plan.noise_multiplier, plan.sampling.rate, 12, plan.delta) <= 3.0
    by_example = RunConfig.from_dict({"privacy": {"noise_multiplier": 1.0, "unit": "example"}})
    plan = privacy.plan(by_example.privacy, by_example.finetune, "finetune", sizes)
    assert plan.units == sizes.sum() and plan.sampling.unit_sizes is None and plan.noise_multiplier == 1.0
    assert privacy.plan(RunConfig().privacy, config.finetune, "finetune", sizes) is None  # off by default
    only_pretrain = RunConfig.from_dict({"privacy": {"noise_multiplier": 1.0, "stages": ["pretrain"]}})
    assert privacy.plan(only_pretrain.privacy, only_pretrain.finetune, "finetune", sizes) is None
    for bad, message in (({"unit": "household"}, "unknown privacy.unit"), ({"l2_clip": 0}, "positive l2_clip"),
                         ({"stages": ["tasks"]}, "privacy.stages")):
        with pytest.raises(TfrecError, match=message):
            RunConfig.from_dict({"privacy": bad})
    with pytest.raises(TfrecError, match="set finetune.contrastive_weight to 0"):
        privacy.refuse_coupled_objectives("finetune", **{"finetune.contrastive_weight": 0.1})


def test_rows_regrouped_by_user_own_their_users_rows():
    from tfrec.training.privacy import by_user

    features = {"user": np.array([2, 0, 2, 1, 0, 2]), "row": np.arange(6)}
    grouped, sizes = by_user(features, "user")
    assert grouped["user"].tolist() == [0, 0, 1, 2, 2, 2] and grouped["row"].tolist() == [1, 4, 3, 0, 2, 5]
    assert sizes.tolist() == [2, 1, 3]  # consecutive rows per user, in user order: PoissonSampling's units


def test_sparse_rows_clip_and_sum_as_the_dense_tables_do():
    """An embedding's per-example gradient kept as (rows read, ids), a row read twice included, gives the
    norms and the clipped sum of the same gradient written out as a table per example."""
    rng = np.random.default_rng(3)
    batch, reads, rows, dim = 6, 5, 40, 4
    values = rng.normal(size=(batch, reads, dim)).astype(np.float32)
    ids = rng.integers(0, rows, size=(batch, reads))
    ids[0] = [2, 2, 2, 7, 2]  # one example reads row 2 four times: its gradient there is their sum
    values[1] *= 0.01  # one example inside the clip
    bias = rng.normal(size=(batch, 3)).astype(np.float32)
    tables = np.zeros((batch, rows, dim), np.float32)
    for b in range(batch):
        np.add.at(tables[b], ids[b], values[b])
    sparse, sparse_norms = privacy.clipped_noisy_sum([(tf.constant(values), tf.constant(ids)), tf.constant(bias)],
                                                     l2_clip=2.0, noise_multiplier=0.0, expected_batch=5.0,
                                                     shapes=[(rows, dim), (3,)])
    norm = np.sqrt((tables ** 2).sum(axis=(1, 2)) + (bias ** 2).sum(1))
    scale = np.minimum(1.0, 2.0 / norm)
    np.testing.assert_allclose(sparse_norms.numpy(), norm, rtol=1e-5)
    np.testing.assert_allclose(sparse[0].numpy(), (tables * scale[:, None, None]).sum(0) / 5.0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sparse[1].numpy(), (bias * scale[:, None]).sum(0) / 5.0, rtol=1e-5, atol=1e-6)
    assert scale[1] == 1.0 and (scale[[0, 2, 3, 4, 5]] < 1).all()
    # the noise covers every row of the table, not only the rows this batch read
    noisy, _ = privacy.clipped_noisy_sum([(tf.constant(values), tf.constant(ids)), tf.constant(bias)], l2_clip=2.0,
                                         noise_multiplier=1.0, expected_batch=5.0, shapes=[(rows, dim), (3,)],
                                         seed=tf.constant([1, 2], tf.int64))
    unread = np.setdiff1d(np.arange(rows), ids)
    assert len(unread) and (np.abs(noisy[0].numpy()[unread]) > 0).all()


class _Embedded(tf.keras.Model):
    """A rating from two looked-up ids and a dense layer, with tfrec's example_losses interface."""

    def __init__(self):
        super().__init__()
        self.table = tf.keras.layers.Embedding(20, 4)
        self.out = tf.keras.layers.Dense(1)

    def call(self, ids, training=False):
        return self.out(tf.reduce_sum(self.table(ids), axis=1))

    def example_losses(self, y, y_pred, sample_weight=None):
        return 0.5 * tf.reduce_sum(tf.square(y_pred - y), axis=1)


def test_a_private_step_with_sparse_embedding_gradients_is_the_dense_step():
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 20, size=(8, 3)).astype(np.int32)
    ids[0] = [5, 5, 1]
    y = rng.normal(size=(8, 1)).astype(np.float32) * 3
    weights = []
    for sparse in (True, False):
        tf.keras.utils.set_random_seed(0)
        inner = _Embedded()
        inner(ids[:1])
        model = privacy.PrivateTraining(inner, l2_clip=0.5, noise_multiplier=0.7, expected_batch=8.0, seed=3,
                                        sparse_gradients=sparse)
        model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=1.0))
        model.fit(ids, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        weights.append([w.numpy() for w in inner.weights])
        assert model.sparse_variables == ([inner.table.embeddings.name] if sparse else [])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_small_table_read_all_over_stays_dense():
    table = tf.Variable(tf.zeros([4, 2]))
    rows = tf.IndexedSlices(tf.zeros([3, 2]), tf.constant([0, 1, 1]), tf.constant([4, 2]))
    many = tf.IndexedSlices(tf.zeros([6, 2]), tf.constant([0, 1, 1, 2, 3, 3]), tf.constant([4, 2]))
    assert privacy._reads_few_rows(rows, table)
    assert not privacy._reads_few_rows(many, table) and not privacy._reads_few_rows(tf.zeros([4, 2]), table)
