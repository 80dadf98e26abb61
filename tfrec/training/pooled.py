"""Pretraining on several prepared datasets at once, and starting a fine-tuning from a pretrained model.

:func:`load` builds the pretraining data of ``tfrec pretrain --data TARGET --data OTHER ...``: the target's
training sequences (of the run's split; none with ``pretrain.with_target: false``) and every other
dataset's whole sequences, in the pooled item space of :mod:`tfrec.data.corpus`, validated on the target's
validation split.  :func:`load_weights` starts a task model on one dataset from a model pretrained on a
corpus: the encoder, positions and head transform as they are, and the item rows (embedding, output bias,
last-item vectors) and feature rows through the dataset's item and feature maps; items and features the
corpus does not hold, or never trained, keep their fresh initial values.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from tfrec.data import corpus as corpora
from tfrec.data import inputs
from tfrec.data.dataset import PreparedDataset
from tfrec.errors import TfrecError
from tfrec.models import adapters, persistence
from tfrec.models.tasks import copy_head_weights
from tfrec.training.sequence_data import SequenceData, data_fingerprint

# the backbone settings a pretraining on several datasets shares with a model of one (not the vocabularies)
SHARED_SHAPE_KEYS = tuple(k for k in persistence.SHAPE_KEYS
                          if k not in ("vocabulary_size", "feature_vocabulary_size"))


class PooledDataset:
    """The item side of a :class:`tfrec.data.corpus.Corpus`, read as a backbone builder reads a dataset."""

    def __init__(self, corpus: corpora.Corpus):
        self.corpus = corpus
        self.item_vocab = corpus.keys
        self.path = None

    def item_feature_table(self, columns=None, max_features: int = 16):
        table = self.corpus.feature_table
        return table, len(self.corpus.feature_keys), (["pooled"] if table.shape[1] else [])


def load(paths: list[str], config, link: str) -> tuple[SequenceData, corpora.Corpus, str]:
    """``(SequenceData over the pooled items, Corpus, fingerprint of the pool)``."""
    datasets = [PreparedDataset(p) for p in paths]
    fingerprints = [data_fingerprint(d) for d in datasets]
    pooled = corpora.pool(datasets, fingerprints, link, features=config.model.item_features)
    target = SequenceData.load(paths[0], config.split, config)
    first = pooled.item_maps[0]
    train = [first[s] for s in target.train] if config.pretrain.with_target else []
    for ds, item_map in zip(datasets[1:], pooled.item_maps[1:]):
        _, sequences = inputs.group_sequences(ds.interactions)  # whole: none of the target's test items
        train += [item_map[s] for s in sequences]
    valid = inputs.EvalSequences(target.valid.user_indices, [first[h] for h in target.valid.histories],
                                 first[target.valid.targets])
    counts = np.bincount(np.concatenate(train), minlength=len(pooled.keys)).astype(np.float64)
    key = [fingerprints, link, config.split] + ([] if config.pretrain.with_target else ["without the target"])
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    data = SequenceData(PooledDataset(pooled), train, valid, len(pooled.keys), counts, np.arange(len(train)))
    return data, pooled, digest


def record(pooled: corpora.Corpus, data: SequenceData) -> dict:
    """What a model pretrained on `pooled` keeps (its ``config.json``'s ``corpus``): the corpus's item and
    feature keys, and the items no pretraining sequence of `data` held, which fine-tuning starts fresh
    (:func:`tfrec.data.corpus.item_map`)."""
    reserved = len(corpora.RESERVED_KEYS)
    never = np.flatnonzero(data.item_counts[reserved:] == 0) + reserved
    return dict(pooled.record(), untrained_items=never.tolist())


def _rows(target_weight, source_value: np.ndarray, mapping: np.ndarray) -> None:
    """Copies the source rows `mapping` points at into `target_weight`; rows mapped to -1 stay as they are."""
    value = target_weight.numpy()
    known = mapping >= 0
    value[known] = source_value[mapping[known]]
    target_weight.assign(value)


def _is_item_rows(name: str) -> bool:
    return any(part in name for part in ("item_embedding", "output_bias", "last_item"))


def _shared(head) -> list:
    """The head's weights other than its optional own groups (:meth:`ItemHead.own_weights`)."""
    own = {id(w) for group in head.own_weights().values() for w in group}
    return [w for w in head.weights if id(w) not in own]


def load_weights(model, source, record: dict, dataset: PreparedDataset, fingerprint: str, path: str) -> dict:
    """Starts `model` (built over `dataset`) from `source` (saved at `path`), pretrained on the corpus
    `record`; returns how many of the dataset's items and features the corpus held."""
    mine = model.backbone.get_config()
    persistence.check_compatible(mine, source.backbone.get_config(), path, shape_keys=SHARED_SHAPE_KEYS)
    items = corpora.item_map(record, dataset, fingerprint)
    features = corpora.feature_map(record, dataset) if mine.get("feature_table") is not None else None
    seen, pairs = set(), []
    # the head's own output-only and last-item vectors (a fine-tuning option) keep their zero start
    for a, b in [*zip(adapters.base_weights(model.backbone), source.backbone.weights),
                 *zip(_shared(model.head), _shared(source.head))]:
        if id(a) not in seen:
            seen.add(id(a))
            pairs.append((a, b))
    for mine_w, their_w in pairs:
        name = mine_w.name
        if _is_item_rows(name):
            _rows(mine_w, their_w.numpy(), items)
        elif "feature_embedding" in name:
            if features is not None and their_w.shape[0] > 1:
                _rows(mine_w, their_w.numpy(), features)
        elif tuple(mine_w.shape) == tuple(their_w.shape):
            mine_w.assign(their_w)
        else:
            raise TfrecError(f"the pretrained weight {their_w.name} {tuple(their_w.shape)} does not fit this "
                             f"model's {tuple(mine_w.shape)}")
    held = int((items[len(corpora.RESERVED_KEYS):] >= 0).sum())
    return {"items": len(items) - len(corpora.RESERVED_KEYS), "items_pretrained": held,
            "features_pretrained": None if features is None else int((features[1:] >= 0).sum())}


def start_from(model, source, source_config: dict, dataset: PreparedDataset, fingerprint: str, path: str) -> None:
    """Starts `model` (built over `dataset`) from the pretrained `source` saved at `path`: the same weights
    for a model of the same data, or through the item maps of a pretraining on several datasets."""
    if source_config.get("corpus"):
        held = load_weights(model, source, source_config["corpus"], dataset, fingerprint, path)
        print(f"{held['items_pretrained']} of the {held['items']} items start from the pretraining corpus of "
              f"{path}; the others start fresh", flush=True)
        return
    persistence.check_compatible(model.backbone.get_config(), source.backbone.get_config(), path)
    adapters.copy_backbone(model.backbone, source.backbone)
    copy_head_weights(model.head, source.head)
