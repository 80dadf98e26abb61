"""Differentially private training: DP-SGD (Abadi et al., 2016) with users as the privacy unit, and its
accounting by Google's ``dp-accounting`` library.

Each step, every unit (a user, or one training example with ``privacy.unit: example``) joins the batch
independently with probability ``q`` (Poisson sampling, which the accountant assumes); a sampled user
contributes one of their examples, drawn at random.  Each example's gradient is computed separately (its
own forward and backward pass, vectorised over the batch), clipped to L2 norm ``l2_clip``, the clipped
gradients are summed, Gaussian noise of standard deviation ``noise_multiplier * l2_clip`` is added to the sum, and the
result is divided by the expected batch size ``q * units`` (never the drawn size, which depends on the
data).  Since a user is in at most one example of a step, the clipped example is the user's whole
contribution to that step: the guarantee is user-level.

The accountant composes the steps of a run as Poisson-subsampled Gaussian mechanisms (Rényi DP) and
reports epsilon for ``delta`` (default: 1 / number of units).  What it covers and what it does not:
``docs/privacy.md``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from tfrec.data.inputs import PoissonSampling, sliding_windows
from tfrec.errors import TfrecError


# Rényi orders of the accountant: integers, where its moments are exact sums (fractional orders need a
# series that fails to converge at high sampling rates).
ORDERS = tuple(range(2, 64)) + (80, 96, 128, 192, 256, 384, 512)


@dataclasses.dataclass(frozen=True)
class Budget:
    """What a private run spends: recorded in its ``run.json`` and printed."""

    noise_multiplier: float
    l2_clip: float
    unit: str
    units: int
    sample_rate: float
    steps: int
    delta: float
    epsilon: float

    def describe(self) -> str:
        return (f"(epsilon {self.epsilon:.3g}, delta {self.delta:.3g})-DP per {self.unit} after {self.steps} steps: "
                f"noise multiplier {self.noise_multiplier:.4g}, clip {self.l2_clip:g}, "
                f"{self.units:,} {self.unit}s sampled at rate {self.sample_rate:.4g}")


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon of `steps` Poisson-subsampled Gaussian steps at `delta` (dp-accounting's RDP accountant at
    :data:`ORDERS`)."""
    from dp_accounting import dp_event, rdp

    if steps <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    accountant = rdp.RdpAccountant(ORDERS)
    accountant.compose(dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(sample_rate, dp_event.GaussianDpEvent(noise_multiplier)), int(steps)))
    return float(accountant.get_epsilon(delta))


def noise_for_epsilon(target: float, sample_rate: float, steps: int, delta: float) -> float:
    """The smallest noise multiplier (to 0.1%) whose `steps` steps spend at most `target` epsilon."""
    if not target > 0:
        raise TfrecError(f"privacy.target_epsilon must be positive, not {target}")
    low, high = 0.05, 1.0
    while epsilon(high, sample_rate, steps, delta) > target:
        low, high = high, high * 2
        if high > 1e4:
            raise TfrecError(f"no noise multiplier reaches epsilon {target} in {steps} steps at sampling rate "
                             f"{sample_rate:.4g}: train fewer steps or sample fewer units per step")
    while high - low > 1e-3 * high:
        mid = (low + high) / 2
        low, high = (low, mid) if epsilon(mid, sample_rate, steps, delta) <= target else (mid, high)
    return high


def clipped_noisy_sum(per_example: list, l2_clip: float, noise_multiplier: float, expected_batch: float,
                      seed: tf.Tensor | None = None, shapes: list | None = None) -> tuple[list[tf.Tensor], tf.Tensor]:
    """DP-SGD's gradient from per-example gradients: every example's gradient (over all variables together)
    clipped to L2 norm `l2_clip`, summed, Gaussian noise of standard deviation ``noise_multiplier * l2_clip``
    added to every coordinate, divided by `expected_batch`.  Returns the gradients (dense) and the examples'
    norms before clipping.

    Each entry of `per_example` is a dense ``[batch, *shape]`` tensor, or, for a variable each example reads
    a few rows of (an embedding table), the pair ``(values [batch, rows, *row_shape], indices [batch, rows])``
    of the examples' sparse gradients, whose variable's shape is ``shapes[i]``: an example's gradient is then
    the sum of its values by row (a row it read twice counts once, with the two values added), its norm and
    the clipped sum are computed from the rows read, and the memory is that of the rows, not of a table per
    example.  The noise covers the whole table either way, so the guarantee is the dense computation's."""
    batch = tf.shape(tf.nest.flatten(per_example[0])[0])[0]
    squares, rows = [], []
    for i, g in enumerate(per_example):
        if isinstance(g, tuple):  # one value row per (example, row read), duplicates added
            values, indices = g
            width = tf.reduce_prod(tf.shape(values)[2:])
            flat = tf.reshape(values, tf.stack([-1, width]))
            example = tf.repeat(tf.range(batch, dtype=tf.int64), tf.shape(indices)[1])
            keys = example * int(shapes[i][0]) + tf.reshape(tf.cast(indices, tf.int64), [-1])
            unique, position = tf.unique(keys)
            summed = tf.math.unsorted_segment_sum(flat, position, tf.shape(unique)[0])
            owner = tf.math.unsorted_segment_max(example, position, tf.shape(unique)[0])
            squares.append(tf.math.unsorted_segment_sum(tf.reduce_sum(tf.square(summed), 1), owner, batch))
            rows.append((flat, example, tf.reshape(indices, [-1])))
        else:
            squares.append(tf.reduce_sum(tf.reshape(tf.square(g), tf.stack([tf.shape(g)[0], -1])), axis=1))
            rows.append(None)
    norms = tf.sqrt(tf.add_n(squares))
    factor = tf.minimum(1.0, l2_clip / tf.maximum(norms, 1e-12))
    out = []
    for i, g in enumerate(per_example):
        if rows[i] is None:
            total = tf.tensordot(factor, g, axes=1)
        else:
            flat, example, indices = rows[i]
            shape = tf.TensorShape(shapes[i])
            total = tf.reshape(tf.math.unsorted_segment_sum(flat * tf.gather(factor, example)[:, tf.newaxis], indices,
                                                            shape[0]), shape)
        if noise_multiplier > 0:
            shape = tf.shape(total)
            noise = (tf.random.normal(shape, stddev=noise_multiplier * l2_clip) if seed is None else
                     tf.random.stateless_normal(shape, seed=tf.random.experimental.stateless_fold_in(seed, i),
                                                stddev=noise_multiplier * l2_clip))
            total = total + noise
        out.append(total / expected_batch)
    return out, norms


@dataclasses.dataclass(frozen=True)
class Plan:
    """A private stage's sampling, steps and noise, fixed before it trains."""

    sampling: PoissonSampling
    units: int
    steps_per_epoch: int
    noise_multiplier: float
    l2_clip: float
    unit: str
    delta: float

    @property
    def expected_batch(self) -> float:
        return self.sampling.rate * self.units

    def budget(self, steps: int) -> Budget:
        return Budget(self.noise_multiplier, self.l2_clip, self.unit, self.units, self.sampling.rate, int(steps),
                      self.delta, epsilon(self.noise_multiplier, self.sampling.rate, steps, self.delta))

    def spent(self, fitted: "PrivateTraining") -> dict:
        """What `fitted`'s training spent (printed), for the run's summary: the budget of the steps it took,
        and the tables whose per-example gradients were clipped from the rows read."""
        budget = self.budget(int(fitted.optimizer.iterations.numpy()))
        print(f"privacy: {budget.describe()}", flush=True)
        return dict(dataclasses.asdict(budget), sparse_tables=list(fitted.sparse_variables))


def plan(privacy, stage, name: str, unit_sizes: np.ndarray) -> Plan | None:
    """The plan of stage `name` (``pretrain`` or ``finetune``; `stage` its settings) under the ``privacy``
    settings, whose training examples belong to users as `unit_sizes` says (consecutive rows, users in
    order); None when the stage trains without privacy."""
    if not privacy.enabled or name not in privacy.stages:
        return None
    if getattr(stage, "num_sampled", 0):
        raise TfrecError(f"{name}: private training takes the full softmax; set {name}.num_sampled to 0 (a sampled "
                         "softmax draws its negatives by the training data's item counts, which the noise does not "
                         "cover, and its accidental-hit removal has no per-example form)")
    sizes = np.asarray(unit_sizes, np.int64)
    units = int((sizes > 0).sum()) if privacy.unit == "user" else int(sizes.sum())
    if units == 0:
        raise TfrecError("private training has no training examples")
    rate = min(1.0, stage.batch_size / units)
    steps = stage.steps_per_epoch or max(1, math.ceil(1 / rate))
    delta = privacy.delta or 1.0 / units
    noise = (noise_for_epsilon(privacy.target_epsilon, rate, stage.epochs * steps, delta)
             if privacy.target_epsilon > 0 else privacy.noise_multiplier)
    sampling = PoissonSampling(rate, sizes if privacy.unit == "user" else None)
    return Plan(sampling, units, steps, float(noise), float(privacy.l2_clip), privacy.unit, float(delta))


class PrivateTraining(tf.keras.Model):
    """Fits `model` with DP-SGD: ``fit`` on this wrapper, everything else (scoring, saving) on `model`,
    whose ``example_losses(y, y_pred, sample_weight)`` gives one loss per example."""

    def __init__(self, model: tf.keras.Model, l2_clip: float, noise_multiplier: float, expected_batch: float,
                 seed: int = 0, sparse_gradients: bool = True):
        super().__init__()
        self.sparse_gradients = bool(sparse_gradients)
        self.sparse_variables: list[str] = []  # set when the step is traced: the tables clipped from their rows
        self.inner = model
        self.l2_clip = float(l2_clip)
        self.noise_multiplier = float(noise_multiplier)
        self.expected_batch = float(expected_batch)
        self.seed = int(seed)
        self._loss = tf.keras.metrics.Mean(name="loss")
        self._clipped = tf.keras.metrics.Mean(name="clipped_share")
        self.built = model.built  # its weights are the model's: built when the model is

    @property
    def metrics(self):
        return [self._loss, self._clipped]

    def call(self, inputs, training=False):
        return self.inner(inputs, training=training)

    def test_step(self, data):
        """Validation (``fit``'s ``validation_data``) is the model's own, with its own metrics: no privacy
        is spent on the held-back rows, which are not trained on."""
        return self.inner.test_step(data)

    def reset_metrics(self):
        super().reset_metrics()
        self.inner.reset_metrics()

    def train_step(self, data):
        x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
        variables = self.inner.trainable_variables

        def one(example):  # one example's loss and gradient, as a batch of one: a table the example reads
            # fewer rows of than it holds (a gather) keeps its gradient as those rows and their ids; every other
            # weight's is dense (a table read all over would gain nothing from rows)
            xi, yi, wi = tf.nest.map_structure(lambda t: t[tf.newaxis], example)
            with tf.GradientTape() as tape:
                loss = self.inner.example_losses(yi, self.inner(xi, training=True), wi)[0]
            grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return loss, [(g.values, g.indices) if self.sparse_gradients and _reads_few_rows(g, v)
                          else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]

        # Vectorised over the batch (as fast as one batch gradient on tfrec's models, where the Jacobian of
        # the batch's losses ran 40x slower); ops without a vectorised form run in a loop.
        example = (x, y, sample_weight) if sample_weight is not None else (x, y, tf.ones_like(tf.nest.flatten(y)[0],
                                                                                              tf.float32))
        losses, per_example = tf.vectorized_map(one, example, fallback_to_while_loop=True)
        self.sparse_variables = [v.name for v, g in zip(variables, per_example) if isinstance(g, tuple)]
        step = tf.cast(self.optimizer.iterations, tf.int64)
        grads, norms = clipped_noisy_sum(per_example, self.l2_clip, self.noise_multiplier, self.expected_batch,
                                         tf.stack([tf.constant(self.seed, tf.int64), step]),
                                         [v.shape for v in variables])
        self.optimizer.apply_gradients(zip(grads, variables))
        self._loss.update_state(losses)
        self._clipped.update_state(tf.cast(norms > self.l2_clip, tf.float32))
        return {m.name: m.result() for m in self.metrics}


def _reads_few_rows(gradient, variable) -> bool:
    """Whether an example's gradient of `variable` is rows of it (a gather) fewer than the table holds."""
    if not isinstance(gradient, tf.IndexedSlices):
        return False
    reads = gradient.indices.shape[0]
    return reads is None or reads < variable.shape[0]


def by_user(features: dict, key: str) -> tuple[dict, np.ndarray]:
    """Row-aligned feature arrays regrouped user after user (stable; `key` the user index), and how many rows
    each user owns: the units of user-level sampling (:class:`tfrec.data.inputs.PoissonSampling`)."""
    users = features[key]
    order = np.argsort(users, kind="stable")
    return {k: v[order] for k, v in features.items()}, np.bincount(users)


def unit_sizes_of_prefixes(sequences: list[np.ndarray], min_history: int = 1) -> np.ndarray:
    """How many next-item examples (:func:`tfrec.data.inputs.next_item_examples`) each sequence gives."""
    return np.array([max(0, len(s) - min_history) for s in sequences], np.int64)


def unit_sizes_of_windows(sequences: list[np.ndarray], max_len: int) -> np.ndarray:
    """How many windows (:func:`tfrec.data.inputs.sliding_windows`, views of the sequence) each sequence gives."""
    return np.array([len(sliding_windows([s], max_len)) for s in sequences], np.int64)


def unit_sizes_of_causal_rows(sequences: list[np.ndarray], max_len: int) -> np.ndarray:
    """How many rows (:func:`tfrec.data.inputs.causal_next_item_examples`) each sequence gives: its windows,
    none for a one-item sequence."""
    return np.where([len(s) >= 2 for s in sequences], unit_sizes_of_windows(sequences, max_len), 0)


def refuse_coupled_objectives(where: str, **weights: float) -> None:
    """Private training clips each example's gradient alone: an objective that mixes the examples of a
    batch (segment continuation, in-batch contrast, a teacher's soft targets...) has no per-example gradient."""
    on = [name for name, weight in weights.items() if weight]
    if on:
        raise TfrecError(f"{where}: private training takes the item objective only; set {on[0]} to 0 (it is not "
                         "a sum of per-example losses, so its examples cannot be clipped one by one)")
