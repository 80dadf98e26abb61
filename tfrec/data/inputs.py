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


# ---------------------------------------------------------------------------
# Sequences


def group_sequences(df: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-user item-index sequences of a chronologically sorted frame.

    Returns ``(user_indices [n_users], sequences)``, users in order of first appearance.
    """
    if df.empty:
        return np.zeros(0, np.int32), []
    users = df[schema.USER_INDEX].to_numpy()
    items = df[schema.ITEM_INDEX].to_numpy(dtype=np.int32)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    if len(np.unique(users[starts])) != len(starts):
        raise ValueError("group_sequences needs rows grouped by user (a chronologically sorted table)")
    return users[starts].astype(np.int32), np.split(items, starts[1:])


@dataclasses.dataclass
class EvalSequences:
    """Histories and held-out targets of one evaluation split.

    user_indices: [n] int32; histories: n int32 arrays (oldest first); targets: [n] int32.
    """

    user_indices: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray


def _validation_items(valid) -> dict[int, int]:
    """user index -> validation item index, from the validation rows of the leave-one-out split."""
    return dict(zip(valid[schema.USER_INDEX].tolist(), valid[schema.ITEM_INDEX].astype(np.int32).tolist()))


def loo_sequences(dataset, split: str) -> EvalSequences | tuple[np.ndarray, list[np.ndarray]]:
    """Sequences of the leave-one-out split of a :class:`PreparedDataset`.

    ``train``: ``(user_indices, sequences)`` of the training part.  ``valid``: history =
    train part, target = the validation item.  ``test``: history = train + validation,
    target = the test item.
    """
    train = dataset.split(schema.TRAIN)
    users, seqs = group_sequences(train)
    if split == schema.TRAIN:
        return users, seqs
    if split not in (schema.VALID, schema.TEST):
        raise TfrecError(f"unknown split {split!r}; use train, valid or test")
    by_user = dict(zip(users.tolist(), seqs))
    valid = dataset.split(schema.VALID)
    valid_item = _validation_items(valid)
    target_df = valid if split == schema.VALID else dataset.split(schema.TEST)
    empty = np.zeros(0, np.int32)
    histories, targets, uids = [], [], []
    for u, item in zip(target_df[schema.USER_INDEX].tolist(), target_df[schema.ITEM_INDEX].tolist()):
        hist = by_user.get(u, empty)
        if split == schema.TEST:
            hist = np.append(hist, np.int32(valid_item[u])).astype(np.int32)
        uids.append(u)
        histories.append(hist)
        targets.append(item)
    return EvalSequences(np.asarray(uids, np.int32), histories, np.asarray(targets, np.int32))


def _shard_spec() -> dict:
    scalar = tf.io.FixedLenFeature([], tf.int64)
    return {"position": scalar, schema.USER_INDEX: scalar, "items": tf.io.RaggedFeature(tf.int64),
            "valid_item": scalar, "test_item": scalar}


def sequence_shard_batches(dataset, batch_size: int = 4096, cycle_length: int = 4, shuffle_files: bool = False,
                           seed: int = 0) -> tf.data.Dataset:
    """The users' leave-one-out sequences from the TFRecord shards of a dataset prepared with
    ``--format tfrecord``: shards read in parallel and interleaved, parsed a batch of users at a
    time (``position``, ``user_index``, ``valid_item``, ``test_item`` [b] int64; ``items`` a
    [b, None] ragged int64 tensor)."""
    files = dataset.sequence_shards
    if not files:
        raise TfrecError(f"{dataset.path} has no sequence shards; prepare it with --format tfrecord")
    names = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        names = names.shuffle(len(files), seed=seed)
    records = names.interleave(tf.data.TFRecordDataset, cycle_length=max(1, cycle_length),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    spec = _shard_spec()
    return records.batch(batch_size).map(lambda r: tf.io.parse_example(r, spec), num_parallel_calls=tf.data.AUTOTUNE,
                                         deterministic=True)


def sequence_shards(dataset, cycle_length: int = 4, shuffle_files: bool = False, seed: int = 0) -> tf.data.Dataset:
    """The same, one dict per user (``items`` [n] int64)."""
    return sequence_shard_batches(dataset, 256, cycle_length, shuffle_files, seed).unbatch()


def read_sequence_shards(dataset) -> tuple[np.ndarray, list[np.ndarray], EvalSequences]:
    """``(users, training sequences, validation)`` from the shards, in the order of
    :func:`loo_sequences` (the shards hold each user's position)."""
    positions, users, valid_items, values, lengths = [], [], [], [], []
    for batch in sequence_shard_batches(dataset).prefetch(tf.data.AUTOTUNE):
        positions.append(batch["position"].numpy())
        users.append(batch[schema.USER_INDEX].numpy())
        valid_items.append(batch["valid_item"].numpy())
        values.append(batch["items"].flat_values.numpy())
        lengths.append(batch["items"].row_lengths().numpy())
    if not positions:
        return np.zeros(0, np.int32), [], EvalSequences(np.zeros(0, np.int32), [], np.zeros(0, np.int32))
    lengths = np.concatenate(lengths)
    sequences = np.split(np.concatenate(values).astype(np.int32), np.cumsum(lengths)[:-1])
    order = np.argsort(np.concatenate(positions), kind="stable")
    users = np.concatenate(users).astype(np.int32)[order]
    sequences = [sequences[i] for i in order]
    valid_items = np.concatenate(valid_items).astype(np.int32)[order]
    held = np.flatnonzero(valid_items)
    valid = EvalSequences(users[held], [sequences[i] for i in held], valid_items[held])
    return users, sequences, valid


def with_validation_items(dataset, users: np.ndarray, sequences: list[np.ndarray]) -> list[np.ndarray]:
    """Each user's training sequence with the validation item appended (a refit's training data)."""
    valid_item = _validation_items(dataset.split(schema.VALID))
    return [np.append(s, np.int32(valid_item[u])).astype(np.int32) if u in valid_item else s
            for u, s in zip(users.tolist(), sequences)]


def pad_left(sequences: list[np.ndarray], max_len: int) -> np.ndarray:
    """[n, max_len] int32: each sequence's last `max_len` items, right-aligned, zeros in front."""
    out = np.zeros((len(sequences), max_len), dtype=np.int32)
    for i, s in enumerate(sequences):
        s = s[-max_len:]
        if len(s):
            out[i, max_len - len(s):] = s
    return out


def sliding_windows(sequences: list[np.ndarray], max_len: int, stride: int | None = None) -> list[np.ndarray]:
    """Cuts histories longer than `max_len` into windows of `max_len`, `stride` apart.

    Windows end at the last item, then `stride` earlier each time; the earliest
    window starts at the first item, so every item appears in some window.
    """
    stride = stride or max_len
    if stride < 1 or max_len < 1:
        raise TfrecError(f"max_len and stride must be positive, got {max_len} and {stride}")
    out = []
    for s in sequences:
        n = len(s)
        if n <= max_len:
            out.append(s)
            continue
        ends = list(range(n, max_len, -stride))
        if ends[-1] != max_len:
            ends.append(max_len)
        out.extend(s[e - max_len:e] for e in reversed(ends))
    return out


def with_mask_slot(histories: list[np.ndarray], max_len: int) -> np.ndarray:
    """[n, max_len] int32: the last `max_len - 1` items of each history, then the mask id."""
    padded = pad_left(histories, max_len - 1)
    return np.concatenate([padded, np.full((len(histories), 1), schema.MASK_ID, np.int32)], axis=1)


def next_item_examples(sequences: list[np.ndarray], max_len: int, min_history: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Every (history -> next item) pair of each sequence, history ending in the mask slot.

    Returns ``inputs [N, max_len]`` (last `max_len - 1` items before the target, then
    the mask id) and ``targets [N]``.
    """
    width = max_len - 1
    inputs, targets = [], []
    for s in sequences:
        n = len(s)
        if n <= min_history:
            continue
        padded = np.concatenate([np.zeros(width, np.int32), s.astype(np.int32)])
        windows = np.lib.stride_tricks.sliding_window_view(padded, width)  # window t ends before s[t]
        inputs.append(windows[min_history:n])
        targets.append(s[min_history:])
    if not inputs:
        return np.zeros((0, max_len), np.int32), np.zeros(0, np.int32)
    x = np.concatenate(inputs)
    x = np.concatenate([x, np.full((len(x), 1), schema.MASK_ID, np.int32)], axis=1)
    return x, np.concatenate(targets).astype(np.int32)


def causal_next_item_examples(sequences: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows for next-item training at every position of a causal backbone.

    Each sequence (cut into windows of `max_len` by :func:`sliding_windows`) gives one row:
    ``inputs [N, max_len]``, its items but the last, then the mask id, left-padded; and
    ``targets [N, max_len]``, at each item's position the item after it; 0 at padding and
    at the mask slot (a causal model is read at the last item, not at the slot, so the
    row's last target is its last input item's).  Sequences of one item give no row.
    """
    rows = [np.asarray(w, np.int32) for w in sliding_windows(sequences, max_len)]
    rows = [w for w in rows if len(w) >= 2]
    inputs = np.zeros((len(rows), max_len), np.int32)
    targets = np.zeros((len(rows), max_len), np.int32)
    for i, w in enumerate(rows):
        n = len(w)
        inputs[i, max_len - n:-1] = w[:-1]
        inputs[i, -1] = schema.MASK_ID
        targets[i, max_len - n:-1] = w[1:]
    return inputs, targets


def last_example_weights(sequences: list[np.ndarray], last_weight: float, min_history: int = 1) -> np.ndarray:
    """Per-example weights in the order of :func:`next_item_examples`: `last_weight` for
    each sequence's last (most recent) example, 1 for the others."""
    counts = np.asarray([max(len(s) - min_history, 0) for s in sequences], np.int64)
    weights = np.ones(int(counts.sum()), np.float32)
    weights[np.cumsum(counts)[counts > 0] - 1] = last_weight
    return weights


# ---------------------------------------------------------------------------
# Augmentations on left-padded batches ([batch, seq_len] int32, 0 = padding)


def _lengths(batch: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.cast(batch != schema.PAD_ID, tf.int32), axis=1)


def random_crop(batch: tf.Tensor, ratio: float, seed: tf.Tensor) -> tf.Tensor:
    """Keeps a random contiguous run of ``max(1, floor(ratio * n))`` items of each row."""
    seq_len = tf.shape(batch)[1]
    n = _lengths(batch)
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
    n = _lengths(batch)
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
    n = _lengths(batch)
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


# ---------------------------------------------------------------------------
# Datasets


def _batched(arrays, to_batch, batch_size: int, shuffle: bool, seed: int, repeat: bool,
             drop_remainder: bool = False, sort_window: int = 0) -> tf.data.Dataset:
    """Shuffles, batches and maps ``to_batch(batch_index, batch)`` in parallel, order kept.

    With `sort_window`, every `sort_window` batches' worth of shuffled rows is sorted by
    sequence length and cut into batches, whose order is then shuffled: batches hold rows
    of similar length, so trimming their leading padding saves most of the padding's
    compute, while every row is still drawn at random.
    """
    n = len(tf.nest.flatten(arrays)[0])
    if n == 0:
        raise TfrecError("no training examples: the split is empty")
    ds = tf.data.Dataset.from_tensor_slices(arrays)
    if shuffle:
        ds = ds.shuffle(min(n, 200_000), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if sort_window > 1:
        def sorted_batches(chunk):
            ids = chunk[ITEM_INDICES] if isinstance(chunk, dict) else chunk
            order = tf.argsort(_lengths(ids), stable=True)
            chunk = tf.nest.map_structure(lambda a: tf.gather(a, order), chunk)
            return tf.data.Dataset.from_tensor_slices(chunk).batch(batch_size, drop_remainder=drop_remainder)

        ds = ds.batch(batch_size * sort_window).flat_map(sorted_batches)
        if shuffle:
            ds = ds.shuffle(sort_window, seed=seed + 1, reshuffle_each_iteration=True)
        ds = ds.enumerate()
    else:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder).enumerate()
    return ds.map(to_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def leading_padding(ids: tf.Tensor) -> tf.Tensor:
    """How many leading columns of a left-padded batch are padding in every row (one column always stays)."""
    return tf.shape(ids)[1] - tf.maximum(tf.reduce_max(_lengths(ids)), 1)


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

    return _batched(padded, to_batch, batch_size, shuffle, seed, repeat, drop_remainder, sort_window)


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
        n = _lengths(batch)
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

    return _batched(padded, to_batch, batch_size, shuffle, seed, repeat, drop_remainder, sort_window)


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

    return _batched(arrays, split, batch_size, shuffle, seed, repeat, sort_window=sort_window)


def causal_next_item_dataset(
    inputs: np.ndarray,
    targets: np.ndarray,
    batch_size: int = 256,
    shuffle: bool = True,
    repeat: bool = False,
    seed: int = 0,
    trim: bool = False,
    sort_window: int = 0,
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
                    sort_window=sort_window)


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
                    repeat: bool = False, trim: bool = False, sort_window: int = 0) -> tf.data.Dataset:
    """Batches of a dict of row-aligned feature arrays (the TFRS tasks' input: features only).

    With `trim`, ``item_ids`` loses the leading columns that are padding in every row
    (and `sort_window` batches rows of similar history length, as in :func:`_batched`).
    """
    def to_batch(index, batch):
        if trim:
            batch = dict(batch)
            batch[ITEM_INDICES] = batch[ITEM_INDICES][:, leading_padding(batch[ITEM_INDICES]):]
        return batch

    return _batched(arrays, to_batch, batch_size, shuffle, seed, repeat, sort_window=sort_window)


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
