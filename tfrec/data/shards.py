"""The TFRecord sequence shards of a prepared dataset (``--format tfrecord``): one record per user, the
same bytes from both engines (the Spark engine's tasks call :func:`sequence_example` too), written
without TensorFlow (:mod:`tfrec.data.tfrecord`)."""

from __future__ import annotations

import contextlib
import os

import pandas as pd

from tfrec.data import schema, tfrecord


def write_pandas(parts: dict[str, pd.DataFrame], staging: str, shards: int) -> dict:
    """Each user's leave-one-out sequence as a ``tf.train.Example`` (``position``, ``user_index``,
    ``items``: the training part in time order, ``valid_item`` and ``test_item``: 0 when none),
    user after user, dealt round-robin over `shards` TFRecord files."""
    from tfrec.data.inputs import group_sequences

    users, sequences = group_sequences(parts[schema.TRAIN])
    held = {name: dict(zip(parts[name][schema.USER_INDEX].tolist(), parts[name][schema.ITEM_INDEX].tolist()))
            for name in (schema.VALID, schema.TEST)}
    folder = os.path.join(staging, schema.SEQUENCES_DIR)
    os.makedirs(folder)

    paths = [os.path.join(folder, schema.SEQUENCE_SHARD.format(index=i, count=shards)) for i in range(shards)]
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open(p, "wb")) for p in paths]
        for position, (user, items) in enumerate(zip(users.tolist(), sequences)):
            files[position % shards].write(tfrecord.frame(sequence_example(
                position, user, items, held[schema.VALID].get(user, 0), held[schema.TEST].get(user, 0))))
    return {"shards": shards, "users": int(len(users))}


def sequence_example(position: int, user: int, items, valid_item: int, test_item: int) -> bytes:
    """One user's record in the sequence shards, a serialised ``tf.train.Example`` (both engines write
    these bytes)."""
    return tfrecord.int64_example({"position": [position], schema.USER_INDEX: [user], "items": items,
                                   "valid_item": [valid_item], "test_item": [test_item]})
