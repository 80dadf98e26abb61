"""Augmentations on left-padded batches (``[batch, seq_len]`` int32, 0 = padding), in TensorFlow ops:
crop, mask and reorder (CL4SRec's views), and the segment swap of the continuation objective.  Each takes
an explicit seed tensor, so a batch is augmented the same way whatever the parallelism."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402

from tfrec.data import schema  # noqa: E402




def lengths(batch: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.cast(batch != schema.PAD_ID, tf.int32), axis=1)


def random_crop(batch: tf.Tensor, ratio: float, seed: tf.Tensor) -> tf.Tensor:
    """Keeps a random contiguous run of ``max(1, floor(ratio * n))`` items of each row."""
    seq_len = tf.shape(batch)[1]
    n = lengths(batch)
    keep = tf.maximum(1, tf.cast(tf.floor(ratio * tf.cast(n, tf.float32)), tf.int32))
    keep = tf.minimum(keep, tf.maximum(n, 1))
    u = tf.random.stateless_uniform(tf.shape(n), seed=seed)
    start = tf.cast(tf.floor(u * tf.cast(n - keep + 1, tf.float32)), tf.int32)  # in [0, n - keep]
    shift = n - start - keep  # how far the kept run moves right to end at the last slot
    pos = tf.range(seq_len)[tf.newaxis, :]
    src = pos - shift[:, tf.newaxis]
    inside = pos >= (seq_len - keep)[:, tf.newaxis]
    taken = tf.gather(batch, tf.clip_by_value(src, 0, seq_len - 1), batch_dims=1)
    return tf.where(inside, taken, tf.zeros_like(batch))


def random_mask(batch: tf.Tensor, ratio: float, seed: tf.Tensor, mask_id: int = schema.MASK_ID) -> tf.Tensor:
    """Replaces each item with the mask id with probability `ratio`."""
    hit = (tf.random.stateless_uniform(tf.shape(batch), seed=seed) < ratio) & (batch != schema.PAD_ID)
    return tf.where(hit, tf.fill(tf.shape(batch), tf.constant(mask_id, batch.dtype)), batch)


def random_reorder(batch: tf.Tensor, ratio: float, seed: tf.Tensor) -> tf.Tensor:
    """Shuffles a random contiguous run of ``floor(ratio * n)`` items of each row."""
    seq_len = tf.shape(batch)[1]
    n = lengths(batch)
    width = tf.cast(tf.floor(ratio * tf.cast(n, tf.float32)), tf.int32)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    u = tf.random.stateless_uniform(tf.shape(n), seed=seeds[0])
    start = (seq_len - n) + tf.cast(tf.floor(u * tf.cast(n - width + 1, tf.float32)), tf.int32)
    pos = tf.range(seq_len)[tf.newaxis, :]
    inside = (pos >= start[:, tf.newaxis]) & (pos < (start + width)[:, tf.newaxis])
    # Positions outside the run keep their place; inside it they sort by random keys.
    jitter = tf.random.stateless_uniform(tf.shape(batch), seed=seeds[1])
    keys = tf.where(inside, tf.cast(start[:, tf.newaxis], tf.float32) + jitter * tf.cast(width[:, tf.newaxis], tf.float32) - 0.5,
                    tf.cast(pos, tf.float32))
    keys = tf.broadcast_to(keys, tf.shape(batch))
    return tf.gather(batch, tf.argsort(keys, axis=1, stable=True), batch_dims=1)


def swap_older_halves(batch: tf.Tensor, rate: float, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Segment-continuation examples: ``(sequences, continues [batch] float32)``.

    With probability `rate`, a row (of at least two items) keeps its newer half but
    its older half is replaced by the older half of the previous row in the batch, a
    different user's history; ``continues`` is 0 for those rows, 1 for the others.
    """
    seq_len = tf.shape(batch)[1]
    n = lengths(batch)
    newer = n - n // 2  # items of the row's own newer half
    donor = tf.roll(batch, shift=1, axis=0)
    n_donor = tf.roll(n, shift=1, axis=0)
    older = n_donor // 2  # items of the donor's older half
    swap = (tf.random.stateless_uniform(tf.shape(n), seed=seed) < rate) & (n >= 2) & (older >= 1)
    pos = tf.range(seq_len)[tf.newaxis, :]
    start_newer = (seq_len - newer)[:, tf.newaxis]
    start_older = start_newer - older[:, tf.newaxis]
    # Donor position of each slot of its older half: it starts at the donor's first item.
    src = pos - start_older + (seq_len - n_donor)[:, tf.newaxis]
    taken = tf.gather(donor, tf.clip_by_value(src, 0, seq_len - 1), batch_dims=1)
    swapped = tf.where(pos >= start_newer, batch, tf.where(pos >= start_older, taken, tf.zeros_like(batch)))
    out = tf.where(swap[:, tf.newaxis], swapped, batch)
    return out, 1.0 - tf.cast(swap, tf.float32)


AUGMENTATIONS = {"crop": random_crop, "mask": random_mask, "reorder": random_reorder}


def augment(batch: tf.Tensor, seed: tf.Tensor, crop: float = 0.0, mask: float = 0.0, reorder: float = 0.0) -> tf.Tensor:
    """Applies each augmentation whose ratio is non-zero (crop ratio = share kept)."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    if crop:
        batch = random_crop(batch, crop, seeds[0])
    if reorder:
        batch = random_reorder(batch, reorder, seeds[1])
    if mask:
        batch = random_mask(batch, mask, seeds[2])
    return batch
