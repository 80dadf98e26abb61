"""Users' item sequences as numpy arrays: the leave-one-out parts, padding, windows, next-item examples.

Sequences are int32 item indices of the item vocabulary (0 = padding, 1 = mask), oldest first; padded
arrays are **left-padded** to ``max_len`` so that the most recent item always sits at the last position.
The ``tf.data`` pipelines of :mod:`tfrec.data.inputs` batch what these functions build.
"""

from __future__ import annotations

import dataclasses
import os
import re

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrec.data import schema  # noqa: E402
from tfrec.errors import TfrecError  # noqa: E402

LABEL_STREAM = 20261205  # the random stream of the label-scarce draws, apart from the seed's other draws




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


def label_rows(count: int, fraction: float, seed: int) -> np.ndarray:
    """Row positions a label-scarce fine-tuning on ratings or interactions keeps: ``ceil(fraction x
    count)`` rows (at least one), drawn with the seed, in their original order."""
    if fraction >= 1:
        return np.arange(count)
    keep = max(1, int(np.ceil(fraction * count)))
    return np.sort(np.random.default_rng([seed, LABEL_STREAM]).choice(count, keep, replace=False))


def label_users(users: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The users whose examples a label-scarce fine-tuning keeps (``finetune.fraction``): a seeded draw of
    ``ceil(fraction x n)`` of `users` (at least one), sorted.  The draw depends on the seed and the user
    set only, so an evaluation recomputes it to report the users fine-tuning never saw."""
    users = np.unique(np.asarray(users))  # sorted, so the kept rows' users come out sorted
    return users[label_rows(len(users), fraction, seed)]


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


def _store_records(store, path: str):
    from tfrec.data import tfrecord

    with store.fs.open_input_stream(path) as stream:
        yield from tfrecord.read_records(stream, path)


def sequence_shard_batches(dataset, batch_size: int = 4096, cycle_length: int = 4, shuffle_files: bool = False,
                           seed: int = 0, files: list[str] | None = None) -> tf.data.Dataset:
    """The users' leave-one-out sequences from the TFRecord shards of a dataset prepared with
    ``--format tfrecord``: shards read in parallel and interleaved, parsed a batch of users at a
    time (``position``, ``user_index``, ``valid_item``, ``test_item`` [b] int64; ``items`` a
    [b, None] ragged int64 tensor).  `files`: some of the shards (a worker's own), default all."""
    files = dataset.sequence_shards if files is None else list(files)
    if not files:
        raise TfrecError(f"{dataset.path} has no sequence shards; prepare it with --format tfrecord")
    names = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        names = names.shuffle(len(files), seed=seed)
    if dataset.store.remote:  # a store TensorFlow cannot open (S3, HDFS): each file read through pyarrow
        store = dataset.store

        def read(name):
            return tf.data.Dataset.from_generator(lambda path: _store_records(store, path.decode()), args=(name,),
                                                  output_signature=tf.TensorSpec([], tf.string))
    else:
        read = tf.data.TFRecordDataset
    records = names.interleave(read, cycle_length=max(1, cycle_length), num_parallel_calls=tf.data.AUTOTUNE,
                               deterministic=True)
    spec = _shard_spec()
    return records.batch(batch_size).map(lambda r: tf.io.parse_example(r, spec), num_parallel_calls=tf.data.AUTOTUNE,
                                         deterministic=True)


def sequence_shards(dataset, cycle_length: int = 4, shuffle_files: bool = False, seed: int = 0) -> tf.data.Dataset:
    """The same, one dict per user (``items`` [n] int64)."""
    return sequence_shard_batches(dataset, 256, cycle_length, shuffle_files, seed).unbatch()


def read_sequence_shards(dataset, files: list[str] | None = None) -> tuple[np.ndarray, list[np.ndarray], EvalSequences]:
    """``(users, training sequences, validation)`` from the shards (`files`: some of them, default all), in
    the order of :func:`loo_sequences` (the shards hold each user's position)."""
    positions, users, valid_items, values, lengths = [], [], [], [], []
    try:
        for batch in sequence_shard_batches(dataset, files=files).prefetch(tf.data.AUTOTUNE):
            positions.append(batch["position"].numpy())
            users.append(batch[schema.USER_INDEX].numpy())
            valid_items.append(batch["valid_item"].numpy())
            values.append(batch["items"].flat_values.numpy())
            lengths.append(batch["items"].row_lengths().numpy())
    except tf.errors.OpError as e:  # a corrupt or truncated shard, a store that stopped answering
        ours = re.search(r"TfrecError: (.+)", e.message)  # raised by our reader inside the pipeline
        detail = ours.group(1) if ours else e.message.strip().splitlines()[0]
        detail = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:.*$", "", detail)  # TensorFlow's wrapping
        raise TfrecError(f"the sequence shards of {dataset.location} cannot be read: {detail}") from None
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
