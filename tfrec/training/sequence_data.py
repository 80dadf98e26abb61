"""The sequences a next-item or pretraining run trains and validates on, and a dataset's fingerprint."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from tfrec.data import inputs, schema, task_splits
from tfrec.data.dataset import PreparedDataset
from tfrec.errors import TfrecError
from tfrec.training.cluster import WorkerShare
from tfrec.training.config import RunConfig


def data_fingerprint(dataset: PreparedDataset) -> str:
    return dataset.fingerprint


@dataclasses.dataclass
class SequenceData:
    """The leave-one-out sequences of a prepared dataset, as training and validation need them."""

    dataset: PreparedDataset
    train: list
    valid: inputs.EvalSequences
    vocabulary_size: int
    item_counts: np.ndarray
    users: np.ndarray  # the user index of each training sequence
    share: WorkerShare | None = None  # set when this worker of several read only its own sequence shards

    def batch_size(self, global_batch: int) -> int:
        """The batch this worker's pipeline makes: the stage's global batch, or with a share its part of it."""
        return self.share.per_replica_batch(global_batch) if self.share else global_batch

    def total(self, n: int) -> int:
        """`n` (a count of this worker's examples or users) summed over the workers that share the data."""
        return int(round(float(self.share.all_sum([n])[0]))) if self.share else int(n)

    def label_part(self, fraction: float, seed: int) -> list:
        """The training sequences a fine-tuning with ``finetune.fraction`` learns from: those of a seeded
        share of the users (:func:`tfrec.data.sequences.label_users`), every sequence at 1."""
        if fraction >= 1:
            return self.train
        kept = set(inputs.label_users(self.users, fraction, seed).tolist())
        return [seq for user, seq in zip(self.users.tolist(), self.train) if user in kept]

    @classmethod
    def load(cls, path: str, scheme: str = schema.LEAVE_ONE_OUT, config: RunConfig | None = None,
             share: WorkerShare | None = None) -> "SequenceData":
        """The training sequences and validation targets of `scheme`.

        ``loo``: the leave-one-out split (with ``config.refit``, the validation items are
        appended to the training sequences).  ``random`` / ``cold``: each user's training rows
        of that split in time order, validated on one held-back training row per user
        (:mod:`tfrec.data.task_splits`), so the split's test rows stay unseen.

        `share` (a worker of a multi-worker job): on a dataset with sequence shards, only this worker's
        shards are read (its users' training sequences and validation targets, ``config.valid_users``
        split over the workers); the item counts are summed over every worker's.
        """
        ds = PreparedDataset(path)
        shards = ds.sequence_shards if scheme == schema.LEAVE_ONE_OUT else []
        share = share if shards else None  # without shards, every worker reads the tables and fit splits batches
        if shards:  # prepared with --format tfrecord
            own = share.shards(shards, path) if share else None
            users, train, valid = inputs.read_sequence_shards(ds, own)
            if share:
                print(f"worker {share.index} of {share.count}: read {len(train)} users' sequences from its shards "
                      f"{', '.join(os.path.basename(f) for f in own)}", flush=True)
        elif scheme == schema.LEAVE_ONE_OUT:
            users, train = inputs.loo_sequences(ds, schema.TRAIN)
            valid = inputs.loo_sequences(ds, schema.VALID)
        if scheme == schema.LEAVE_ONE_OUT:
            if config is not None and config.refit:
                train = inputs.with_validation_items(ds, users, train)
        else:
            config = config or RunConfig()
            split = task_splits.load(ds, scheme, seed=config.seed, valid_fraction=config.tasks.valid_fraction,
                                     cold_fraction=config.tasks.cold_fraction)
            train, users = split.train_sequences, split.train_users
            valid = task_splits.eval_sequences(split.valid, limit=1, seed=config.seed)
        if not train or not len(valid.targets):
            where = f"the shards of worker {share.index} of {share.count} in" if share else "the dataset at"
            raise TfrecError(f"{where} {path} has no {scheme} training or validation sequences")
        valid_users = config.valid_users if config is not None else 0
        if share:  # split over the workers
            valid_users = -(-valid_users // share.count)
        if 0 < valid_users < len(valid.targets):
            keep = np.sort(np.random.default_rng(config.seed).choice(len(valid.targets), valid_users,
                                                                      replace=False))
            valid = inputs.EvalSequences(valid.user_indices[keep], [valid.histories[i] for i in keep],
                                         valid.targets[keep])
        vocab = len(ds.item_vocab)
        counts = np.bincount(np.concatenate(train), minlength=vocab).astype(np.float64)
        if share:
            counts = share.all_sum(counts)
        return cls(ds, train, valid, vocab, counts, np.asarray(users), share)
