"""The sequences a next-item or pretraining run trains and validates on, and a dataset's fingerprint."""

from __future__ import annotations

import dataclasses

import numpy as np

from tfrec.data import inputs, schema, task_splits
from tfrec.data.dataset import PreparedDataset
from tfrec.errors import TfrecError
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

    def label_part(self, fraction: float, seed: int) -> list:
        """The training sequences a fine-tuning with ``finetune.fraction`` learns from: those of a seeded
        share of the users (:func:`tfrec.data.sequences.label_users`), every sequence at 1."""
        if fraction >= 1:
            return self.train
        kept = set(inputs.label_users(self.users, fraction, seed).tolist())
        return [seq for user, seq in zip(self.users.tolist(), self.train) if user in kept]

    @classmethod
    def load(cls, path: str, scheme: str = schema.LEAVE_ONE_OUT, config: RunConfig | None = None) -> "SequenceData":
        """The training sequences and validation targets of `scheme`.

        ``loo``: the leave-one-out split (with ``config.refit``, the validation items are
        appended to the training sequences).  ``random`` / ``cold``: each user's training rows
        of that split in time order, validated on one held-back training row per user
        (:mod:`tfrec.data.task_splits`), so the split's test rows stay unseen.
        """
        ds = PreparedDataset(path)
        if scheme == schema.LEAVE_ONE_OUT and ds.sequence_shards:  # prepared with --format tfrecord
            users, train, valid = inputs.read_sequence_shards(ds)
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
            raise TfrecError(f"the dataset at {path} has no {scheme} training or validation sequences")
        if config is not None and 0 < config.valid_users < len(valid.targets):
            keep = np.sort(np.random.default_rng(config.seed).choice(len(valid.targets), config.valid_users,
                                                                      replace=False))
            valid = inputs.EvalSequences(valid.user_indices[keep], [valid.histories[i] for i in keep],
                                         valid.targets[keep])
        vocab = len(ds.item_vocab)
        counts = np.bincount(np.concatenate(train), minlength=vocab).astype(np.float64)
        return cls(ds, train, valid, vocab, counts, np.asarray(users))
