"""``tf.data`` input pipelines: sequences, masked-item, next-item, retrieval and rating batches.

Sequences are int32 item indices of the item vocabulary (0 = padding, 1 = mask),
oldest first, **left-padded** to ``max_len`` so that the most recent item always
sits at the last position.  Every random choice is keyed by an explicit seed and
the batch index, so a pipeline built twice with the same seed yields the same
batches, whatever the parallelism.
"""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrec.contract import (CONTINUES, ITEM_INDEX, ITEM_INDICES, ITEMS, MASK_POSITIONS,  # noqa: E402,F401
                            PADDING_MASK, TARGET, TEACHER_ITEMS, TEACHER_PROBS, USER_INDEX, WEIGHT)
from tfrec.data import schema  # noqa: E402
from tfrec.errors import TfrecError  # noqa: E402
from tfrec.data.augment import AUGMENTATIONS, augment, lengths, swap_older_halves  # noqa: E402
# The sequence-building names, defined in tfrec/data/sequences.py, are part of this module's API too: the
# pipelines below batch what they build, and callers name both through ``inputs``.
from tfrec.data.sequences import (EvalSequences, causal_next_item_examples, group_sequences,  # noqa: E402,F401
                                  label_rows, label_users, last_example_weights, loo_sequences,
                                  next_item_examples, pad_left,
                                  read_sequence_shards, sequence_shard_batches, sequence_shards, sliding_windows,
                                  with_mask_slot, with_validation_items)

__all__ = ["EvalSequences", "causal_next_item_examples", "group_sequences", "last_example_weights",
           "loo_sequences", "next_item_examples", "pad_left", "read_sequence_shards", "sequence_shard_batches",
           "sequence_shards", "sliding_windows", "with_mask_slot", "with_validation_items", "augment",
           "swap_older_halves", "masked_item_dataset", "next_item_sequence_dataset", "next_item_dataset",
           "causal_next_item_dataset", "retrieval_dataset", "feature_batches", "time_features", "rating_dataset",
           "leading_padding", "PoissonSampling"]


@dataclasses.dataclass(frozen=True)
class PoissonSampling:
    """Batches as differentially private training draws them: every unit joins each step's batch on its
    own with probability `rate`, so batch sizes vary.  `unit_sizes`: how many consecutive examples each
    unit (a user) owns, in order; a sampled unit contributes one of them, drawn at random.  None: each
    example is a unit."""

    rate: float
    unit_sizes: np.ndarray | None = None


def _batched(arrays, to_batch, batch_size: int, shuffle: bool, seed: int, repeat: bool,
             drop_remainder: bool = False, sort_window: int = 0,
             poisson: PoissonSampling | None = None) -> tf.data.Dataset:
    """Shuffles, batches and maps ``to_batch(batch_index, batch)`` in parallel, order kept.

    With `sort_window`, every `sort_window` batches' worth of shuffled rows is sorted by
    sequence length and cut into batches, whose order is then shuffled: batches hold rows
    of similar length, so trimming their leading padding saves most of the padding's
    compute, while every row is still drawn at random.  With `poisson`, batches are drawn
    by Poisson sampling instead (endless; `batch_size`, `shuffle` and `sort_window` unused).
    """
    n = len(tf.nest.flatten(arrays)[0])
    if n == 0:
        raise TfrecError("no training examples: the split is empty")
    if poisson is not None:
        return _poisson_batches(arrays, to_batch, poisson, seed)
    ds = tf.data.Dataset.from_tensor_slices(arrays)
    if shuffle:
        ds = ds.shuffle(min(n, 200_000), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if sort_window > 1:
        def sorted_batches(chunk):
            ids = chunk[ITEM_INDICES] if isinstance(chunk, dict) else chunk
            order = tf.argsort(lengths(ids), stable=True)
            chunk = tf.nest.map_structure(lambda a: tf.gather(a, order), chunk)
            return tf.data.Dataset.from_tensor_slices(chunk).batch(batch_size, drop_remainder=drop_remainder)

        ds = ds.batch(batch_size * sort_window).flat_map(sorted_batches)
        if shuffle:
            ds = ds.shuffle(sort_window, seed=seed + 1, reshuffle_each_iteration=True)
        ds = ds.enumerate()
    else:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder).enumerate()
    return ds.map(to_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def _poisson_batches(arrays, to_batch, sampling: PoissonSampling, seed: int) -> tf.data.Dataset:
    n = len(tf.nest.flatten(arrays)[0])
    sizes = np.ones(n, np.int64) if sampling.unit_sizes is None else np.asarray(sampling.unit_sizes, np.int64)
    if sizes.sum() != n:
        raise TfrecError(f"{len(sizes)} units own {sizes.sum()} examples, but there are {n}")
    if not 0 < sampling.rate <= 1:
        raise TfrecError(f"a sampling rate is a probability above 0, not {sampling.rate}")
    owned = sizes > 0
    starts, counts = tf.constant((np.cumsum(sizes) - sizes)[owned]), tf.constant(sizes[owned])
    units = int(owned.sum())
    table = tf.nest.map_structure(tf.constant, arrays)

    def draw(step):
        seeds = tf.random.experimental.stateless_split(_batch_seed(seed, step), 2)
        chosen = tf.where(tf.random.stateless_uniform([units], seed=seeds[0]) < sampling.rate)[:, 0]
        offset = tf.random.stateless_uniform(tf.shape(chosen), seed=seeds[1], minval=0, maxval=2**62,
                                             dtype=tf.int64) % tf.gather(counts, chosen)
        rows = tf.gather(starts, chosen) + offset
        return step, tf.nest.map_structure(lambda a: tf.gather(a, rows), table)

    steps = tf.data.Dataset.counter()
    return steps.map(draw).map(to_batch, num_parallel_calls=tf.data.AUTOTUNE,
                               deterministic=True).prefetch(tf.data.AUTOTUNE)


def leading_padding(ids: tf.Tensor) -> tf.Tensor:
    """How many leading columns of a left-padded batch are padding in every row (one column always stays)."""
    return tf.shape(ids)[1] - tf.maximum(tf.reduce_max(lengths(ids)), 1)


def _trim(features: dict, labels, weights):
    """Trims a batch's leading all-padding columns (positions shift to match)."""
    ids = features[ITEM_INDICES]
    start = leading_padding(ids)
    out = dict(features)
    out[ITEM_INDICES] = ids[:, start:]
    out[PADDING_MASK] = features[PADDING_MASK][:, start:]
    if MASK_POSITIONS in features:
        out[MASK_POSITIONS] = tf.maximum(features[MASK_POSITIONS] - tf.cast(start, tf.int64), 0)
    return out, labels, weights


def _batch_seed(seed: int, index: tf.Tensor) -> tf.Tensor:
    return tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)])


def masked_item_dataset(
    sequences: list[np.ndarray] | np.ndarray,
    max_len: int,
    vocabulary_size: int,
    batch_size: int = 256,
    mask_rate: float = 0.2,
    mask_last_rate: float = 0.0,
    max_masks: int | None = None,
    augmentations: dict[str, float] | None = None,
    shuffle: bool = True,
    repeat: bool = False,
    seed: int = 0,
    drop_remainder: bool = False,
    continuation_rate: float = 0.0,
    trim: bool = False,
    sort_window: int = 0,
    poisson: PoissonSampling | None = None,
) -> tf.data.Dataset:
    """Masked-item (cloze) batches: ``(features, labels, sample_weights)``.

    features: ``item_ids`` [batch, max_len] int32 with masked items replaced by the mask id,
    ``padding_mask`` [batch, max_len] bool, ``mask_positions`` [batch, max_masks] int64.
    labels: ``items``, the original items at those positions [batch, max_masks] int32, and
    with `continuation_rate`, ``continues`` [batch] (see :func:`swap_older_halves`);
    sample_weights: 1.0 for real masks, 0.0 for padding slots [batch, max_masks].

    `mask_last_rate` is the share of sequences in which only the last item is masked,
    the situation of next-item fine-tuning.  `augmentations` maps ``crop``/``mask``/
    ``reorder`` to their ratios, applied before masking.  `trim` drops each batch's
    leading all-padding columns (then ``seq_len <= max_len``); `sort_window` batches
    rows of similar length (see :func:`_batched`).
    """
    from tfrec.data.masking import SeededMaskGenerator

    padded = sequences if isinstance(sequences, np.ndarray) else pad_left(sequences, max_len)
    max_masks = max_masks or max(1, int(np.ceil(mask_rate * max_len)))
    generator = SeededMaskGenerator(
        vocabulary_size=vocabulary_size, mask_selection_rate=mask_rate, mask_token_id=schema.MASK_ID,
        mask_selection_length=max_masks, unselectable_token_ids=[schema.PAD_ID],
    )
    aug = {k: float(v) for k, v in (augmentations or {}).items() if v}
    unknown = set(aug) - set(AUGMENTATIONS)
    if unknown:
        raise TfrecError(f"unknown augmentation {sorted(unknown)[0]!r}; known: {', '.join(AUGMENTATIONS)}")

    def to_batch(index, batch):
        seeds = tf.random.experimental.stateless_split(_batch_seed(seed, index), 4)
        if aug:
            batch = augment(batch, seeds[0], **aug)
        if continuation_rate:
            batch, continues = swap_older_halves(batch, continuation_rate, seeds[3])
        out = generator(batch, seed=seeds[1])
        tokens, positions = out["token_ids"], out["mask_positions"]
        labels, weights = out["mask_ids"], out["mask_weights"]
        if mask_last_rate > 0:
            rows = tf.shape(batch)[0]
            last = tf.random.stateless_uniform([rows], seed=seeds[2]) < mask_last_rate
            last_col = tf.one_hot(max_len - 1, max_len, on_value=True, off_value=False)[tf.newaxis, :]
            last_tokens = tf.where(last_col, tf.constant(schema.MASK_ID, batch.dtype), batch)
            first_slot = tf.one_hot(0, max_masks, on_value=True, off_value=False)[tf.newaxis, :]
            last_positions = tf.where(first_slot, tf.constant(max_len - 1, tf.int64), tf.constant(0, tf.int64))
            last_labels = tf.where(first_slot, batch[:, -1:], tf.zeros_like(batch[:, -1:]))
            last_weights = tf.cast(first_slot, weights.dtype) * tf.cast(batch[:, -1:] != schema.PAD_ID, weights.dtype)
            pick = last[:, tf.newaxis]
            tokens = tf.where(pick, last_tokens, tokens)
            positions = tf.where(pick, tf.broadcast_to(last_positions, tf.shape(positions)), positions)
            labels = tf.where(pick, tf.broadcast_to(last_labels, tf.shape(labels)), labels)
            weights = tf.where(pick, tf.broadcast_to(last_weights, tf.shape(weights)), weights)
        features = {ITEM_INDICES: tokens, PADDING_MASK: batch != schema.PAD_ID, MASK_POSITIONS: positions}
        targets = {ITEMS: labels}
        if continuation_rate:
            targets[CONTINUES] = continues
        return _trim(features, targets, weights) if trim else (features, targets, weights)

    return _batched(padded, to_batch, batch_size, shuffle, seed, repeat, drop_remainder, sort_window, poisson)


def next_item_sequence_dataset(
    sequences: list[np.ndarray] | np.ndarray,
    max_len: int,
    batch_size: int = 256,
    prefix_rate: float = 0.5,
    augmentations: dict[str, float] | None = None,
    shuffle: bool = True,
    repeat: bool = False,
    seed: int = 0,
    drop_remainder: bool = False,
    trim: bool = False,
    sort_window: int = 0,
    poisson: PoissonSampling | None = None,
) -> tf.data.Dataset:
    """Next-item batches drawn from whole sequences: ``(features, labels, sample_weights)``.

    Each row's target is its last item, or with probability `prefix_rate` the item at
    a uniformly drawn earlier point (a fresh draw every epoch), so an epoch costs one
    pass over the users while every position is a target over time.  features:
    ``item_ids`` [batch, max_len] (the `max_len - 1` items before the target, then the
    mask id) and ``padding_mask``; labels ``items`` [batch, 1]; weights [batch, 1].
    `augmentations` (``mask``/``reorder`` ratios) apply to the history only; `trim`
    and `sort_window` as in :func:`masked_item_dataset`.
    """
    padded = sequences if isinstance(sequences, np.ndarray) else pad_left(sequences, max_len)
    aug = {k: float(v) for k, v in (augmentations or {}).items() if v}
    unknown = set(aug) - {"mask", "reorder"}
    if unknown:
        raise TfrecError(f"unknown fine-tuning augmentation {sorted(unknown)[0]!r}; known: mask, reorder")

    def to_batch(index, batch):
        seeds = tf.random.experimental.stateless_split(_batch_seed(seed, index), 3)
        n = lengths(batch)
        u = tf.random.stateless_uniform(tf.shape(n), seed=seeds[0])
        cut = tf.random.stateless_uniform(tf.shape(n), seed=seeds[1])
        # End (exclusive) of the kept run: n, or uniform in [1, n - 1] for a prefix.
        end = tf.where((u < prefix_rate) & (n >= 2),
                       1 + tf.cast(tf.floor(cut * tf.cast(n - 1, tf.float32)), tf.int32), n)
        shift = n - end
        pos = tf.range(max_len)[tf.newaxis, :]
        src = pos - shift[:, tf.newaxis]
        kept = tf.where(src >= (max_len - n)[:, tf.newaxis],
                        tf.gather(batch, tf.clip_by_value(src, 0, max_len - 1), batch_dims=1), tf.zeros_like(batch))
        target = kept[:, -1:]
        history = kept[:, :-1]
        if aug:
            history = augment(history, seeds[2], **aug)
        tokens = tf.concat([history, tf.fill([tf.shape(batch)[0], 1], tf.constant(schema.MASK_ID, batch.dtype))], axis=1)
        features = {ITEM_INDICES: tokens, PADDING_MASK: tokens != schema.PAD_ID}
        out = features, {ITEMS: target}, tf.cast(target != schema.PAD_ID, tf.float32)
        return _trim(*out) if trim else out

    return _batched(padded, to_batch, batch_size, shuffle, seed, repeat, drop_remainder, sort_window, poisson)


def next_item_dataset(
    inputs: np.ndarray,
    targets: np.ndarray,
    batch_size: int = 256,
    shuffle: bool = True,
    repeat: bool = False,
    seed: int = 0,
    user_indices: np.ndarray | None = None,
    trim: bool = False,
    sort_window: int = 0,
    weights: np.ndarray | None = None,
    soft_targets: tuple[np.ndarray, np.ndarray] | None = None,
    poisson: PoissonSampling | None = None,
) -> tf.data.Dataset:
    """Next-item batches ``(features, labels, sample_weights)`` from :func:`next_item_examples`.

    features: ``item_ids`` [batch, max_len] int32 ending in the mask slot, ``padding_mask``
    [batch, max_len] bool, and ``user_index`` [batch] when `user_indices` is given;
    labels: ``items`` [batch, 1] int32 item index, and with `soft_targets` (a teacher's
    ``[N, k]`` item ids and probabilities per example) ``teacher_items`` and ``teacher_probs``
    [batch, k]; sample_weights [batch, 1]: `weights` (one per example, e.g.
    :func:`last_example_weights`), or ones.
    """
    arrays = {ITEM_INDICES: inputs, TARGET: targets}
    if soft_targets is not None:
        ids, probs = soft_targets
        if len(ids) != len(targets) or np.shape(ids) != np.shape(probs):
            raise TfrecError(f"teacher targets of shape {np.shape(ids)} and {np.shape(probs)} "
                             f"for {len(targets)} examples")
        arrays[TEACHER_ITEMS] = np.asarray(ids, np.int32)
        arrays[TEACHER_PROBS] = np.asarray(probs, np.float32)
    if user_indices is not None:
        arrays[USER_INDEX] = user_indices
    if weights is not None:
        if len(weights) != len(targets):
            raise TfrecError(f"{len(weights)} example weights for {len(targets)} examples")
        arrays[WEIGHT] = np.asarray(weights, np.float32)

    def split(index, batch):
        features = {ITEM_INDICES: batch[ITEM_INDICES], PADDING_MASK: batch[ITEM_INDICES] != schema.PAD_ID}
        if USER_INDEX in batch:
            features[USER_INDEX] = batch[USER_INDEX]
        target = batch[TARGET][:, tf.newaxis]
        weight = batch[WEIGHT][:, tf.newaxis] if WEIGHT in batch else tf.ones_like(target, tf.float32)
        labels = {ITEMS: target}
        if TEACHER_ITEMS in batch:
            labels[TEACHER_ITEMS], labels[TEACHER_PROBS] = batch[TEACHER_ITEMS], batch[TEACHER_PROBS]
        out = features, labels, weight
        return _trim(*out) if trim else out

    return _batched(arrays, split, batch_size, shuffle, seed, repeat, sort_window=sort_window, poisson=poisson)


def causal_next_item_dataset(
    inputs: np.ndarray,
    targets: np.ndarray,
    batch_size: int = 256,
    shuffle: bool = True,
    repeat: bool = False,
    seed: int = 0,
    trim: bool = False,
    sort_window: int = 0,
    poisson: PoissonSampling | None = None,
) -> tf.data.Dataset:
    """Batches ``(features, labels, sample_weights)`` from :func:`causal_next_item_examples`.

    features: ``item_ids`` and ``padding_mask`` [batch, max_len]; labels ``items``
    [batch, max_len] (the next item at every position, 0 at padding); sample_weights
    [batch, max_len], 1 where there is a target.  `trim` drops leading all-padding columns
    of features, labels and weights alike.
    """
    if inputs.shape != targets.shape:
        raise TfrecError(f"inputs {inputs.shape} and targets {targets.shape} differ in shape")

    def split(index, batch):
        ids, target = batch[ITEM_INDICES], batch[TARGET]
        if trim:
            start = leading_padding(ids)
            ids, target = ids[:, start:], target[:, start:]
        features = {ITEM_INDICES: ids, PADDING_MASK: ids != schema.PAD_ID}
        return features, {ITEMS: target}, tf.cast(target != schema.PAD_ID, tf.float32)

    return _batched({ITEM_INDICES: inputs, TARGET: targets}, split, batch_size, shuffle, seed, repeat,
                    sort_window=sort_window, poisson=poisson)


def retrieval_dataset(
    inputs: np.ndarray,
    targets: np.ndarray,
    user_indices: np.ndarray,
    batch_size: int = 256,
    shuffle: bool = True,
    repeat: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """(query, candidate) pairs: features ``item_ids``/``padding_mask`` (the history),
    ``user_index`` [batch] and ``item_index`` [batch] (the candidate the user chose next)."""

    def split(index, batch):
        return {ITEM_INDICES: batch[ITEM_INDICES], PADDING_MASK: batch[ITEM_INDICES] != schema.PAD_ID,
                USER_INDEX: batch[USER_INDEX], ITEM_INDEX: batch[TARGET]}

    return _batched({ITEM_INDICES: inputs, TARGET: targets, USER_INDEX: user_indices}, split, batch_size, shuffle, seed, repeat)


def feature_batches(arrays: dict[str, np.ndarray], batch_size: int = 256, shuffle: bool = True, seed: int = 0,
                    repeat: bool = False, trim: bool = False, sort_window: int = 0,
                    poisson: PoissonSampling | None = None) -> tf.data.Dataset:
    """Batches of a dict of row-aligned feature arrays (the TFRS tasks' input: features only).

    With `trim`, ``item_ids`` loses the leading columns that are padding in every row
    (and `sort_window` batches rows of similar history length, as in :func:`_batched`); with `poisson`,
    batches are drawn as differentially private training draws them (:class:`PoissonSampling`).
    """
    def to_batch(index, batch):
        if trim:
            batch = dict(batch)
            batch[ITEM_INDICES] = batch[ITEM_INDICES][:, leading_padding(batch[ITEM_INDICES]):]
        return batch

    return _batched(arrays, to_batch, batch_size, shuffle, seed, repeat, sort_window=sort_window, poisson=poisson)


def time_features(timestamps: np.ndarray) -> dict[str, np.ndarray]:
    """Context features of unix-second timestamps: hour of day, day of week (int32 numpy arrays).

    The preprocessor's own function (:func:`tfrec.data.preprocessor.time_features`), run eagerly: the
    ranking signatures compute these features with the same ops in their graphs."""
    from tfrec.data.preprocessor import time_features as computed

    return {k: v.numpy() for k, v in computed(np.asarray(timestamps, np.int64)).items()}


def rating_dataset(
    df: pd.DataFrame,
    batch_size: int = 256,
    shuffle: bool = True,
    repeat: bool = False,
    seed: int = 0,
    with_time: bool = True,
) -> tf.data.Dataset:
    """Rating examples ``(features, rating)``: ``user_index``, ``item_index`` [batch] int32,
    plus ``hour``/``weekday`` when `with_time`; rating [batch] float32."""
    if schema.RATING not in df.columns:
        raise TfrecError("this dataset has no ratings; a rating task needs explicit feedback")
    arrays = {USER_INDEX: df[schema.USER_INDEX].to_numpy(np.int32), ITEM_INDEX: df[schema.ITEM_INDEX].to_numpy(np.int32),
              TARGET: df[schema.RATING].to_numpy(np.float32)}
    if with_time:
        arrays.update(time_features(df[schema.TIMESTAMP].to_numpy()))

    def split(index, batch):
        target = batch.pop(TARGET)
        return batch, target

    return _batched(arrays, split, batch_size, shuffle, seed, repeat)
