"""Pretraining corpora wider than one dataset: several prepared datasets pooled into one item space.

``tfrec pretrain --data TARGET --data OTHER ...`` pretrains one backbone on the target's training sequences
and every other dataset's whole sequences (they hold none of the target's test items).  Each item gets a
*key*: with ``--link title``, a movie's normalised title and year, so that the same film in two MovieLens
releases is one pooled item; otherwise, and for a title that is not unique within its dataset,
``<dataset fingerprint>:<item id>``, so items of different datasets stay apart while the encoder is
shared.  Item features pool the same way, by ``column=value``, so a genre or category of the same name
is one feature.

The pooled keys are recorded with the pretrained model (:meth:`Corpus.record`); a fine-tuning on any
dataset maps its own items onto them (:func:`item_map`): an item of a pooled dataset, or one linked by
title, keeps its pretrained vector, and any other starts fresh (with its features' pooled embedding where
it has features).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd

from tfrec.data import schema
from tfrec.errors import TfrecError

LINKS = ("none", "title")
RESERVED_KEYS = tuple(f"[reserved:{i}]" for i in range(schema.NUM_ITEM_RESERVED))


def normalised_title(title: str) -> str:
    """Lower case, without parenthesised alternative titles ("Twelve Monkeys (a.k.a. 12 Monkeys)") or
    punctuation, spaces collapsed: how two releases of a catalogue spell one film alike."""
    title = re.sub(r"\([^)]*\)", " ", title.lower()).replace("&", " and ")
    return re.sub(r"\s+", " ", re.sub(r"[^\w ]+", " ", title)).strip()


def _title_keys(dataset) -> dict[int, str]:
    """item index -> "title:<normalised title> (<year>)", for titles unique within the dataset."""
    items = dataset.items
    if items is None or "title" not in items.columns:
        return {}
    titles = items["title"].astype(str).map(normalised_title)
    if "year" in items.columns:
        years = [("" if pd.isna(y) else f" ({int(y)})") for y in items["year"].tolist()]
        titles = titles + years
    unique = ~titles.duplicated(keep=False) & (titles.str.len() > 0)
    return {int(i): f"title:{t}" for i, t, keep in zip(items[schema.ITEM_INDEX], titles, unique) if keep}


def item_keys(dataset, fingerprint: str, link: str) -> list[str]:
    """The key of each item index of `dataset` (reserved ids first)."""
    if link not in LINKS:
        raise TfrecError(f"unknown --link {link!r}; use {' or '.join(LINKS)}")
    tokens = dataset.item_vocab.tokens
    linked = _title_keys(dataset) if link == "title" else {}
    return [RESERVED_KEYS[i] if i < schema.NUM_ITEM_RESERVED else linked.get(i, f"{fingerprint}:{tokens[i]}")
            for i in range(len(tokens))]


def feature_keys(dataset, feature_table=None) -> list[str]:
    """The ``column=value`` key of each feature id of ``dataset.item_feature_table()`` (0 = none); pass that
    table when it is already built."""
    _, size, columns = feature_table or dataset.item_feature_table()
    keys = ["[none]"]
    for c in columns:
        keys += [f"{c}={t}" for t in dataset.feature_vocab("item", c).tokens[schema.NUM_FEATURE_RESERVED:]]
    if len(keys) != size:
        raise TfrecError(f"the item features of {dataset.path} do not add up ({len(keys)} keys, {size} ids)")
    return keys


@dataclasses.dataclass
class Corpus:
    """Datasets pooled into one item and feature space; dataset 0 is the target pretraining validates on."""

    link: str
    fingerprints: list[str]
    keys: list[str]  # pooled item keys, index = pooled item index
    item_maps: list[np.ndarray]  # per dataset: its item index -> pooled index
    feature_keys: list[str]
    feature_table: np.ndarray  # [pooled items, width] pooled feature ids (0 = none)

    @property
    def linked_items(self) -> int:
        """Pooled items that more than one dataset holds."""
        counts = np.bincount(np.concatenate([m[schema.NUM_ITEM_RESERVED:] for m in self.item_maps]),
                             minlength=len(self.keys))
        return int((counts > 1).sum())

    def record(self) -> dict:
        """What a fine-tuning needs to map its items onto this corpus (kept in the pretrained model)."""
        return {"link": self.link, "fingerprints": self.fingerprints, "item_keys": self.keys,
                "feature_keys": self.feature_keys, "linked_items": self.linked_items}


def pool(datasets: list, fingerprints: list[str], link: str, features: bool) -> Corpus:
    """Pools `datasets` (PreparedDataset objects); `features`: build the pooled item feature table."""
    if len(set(fingerprints)) < len(fingerprints):
        raise TfrecError("the same prepared dataset is named twice among --data")
    keys, index = list(RESERVED_KEYS), {k: i for i, k in enumerate(RESERVED_KEYS)}
    maps = []
    for ds, fp in zip(datasets, fingerprints):
        mine = item_keys(ds, fp, link)
        for k in mine:
            if k not in index:
                index[k] = len(keys)
                keys.append(k)
        maps.append(np.asarray([index[k] for k in mine], np.int32))
    fkeys, table = ["[none]"], np.zeros((len(keys), 0), np.int32)
    if features:
        findex, blocks = {"[none]": 0}, []
        for ds, item_map in zip(datasets, maps):
            built = ds.item_feature_table()
            local, _, columns = built
            if not columns:
                continue
            local_keys = feature_keys(ds, built)
            fmap = np.zeros(len(local_keys), np.int32)
            for j, k in enumerate(local_keys[1:], start=1):
                if k not in findex:
                    findex[k] = len(fkeys)
                    fkeys.append(k)
                fmap[j] = findex[k]
            block = np.zeros((len(keys), local.shape[1]), np.int32)
            block[item_map] = fmap[local]
            blocks.append(block)
        if blocks:
            width = max(b.shape[1] for b in blocks)
            table = np.zeros((len(keys), width), np.int32)
            for b in blocks:  # a linked item takes the features of the last dataset that has any for it
                rows = b.any(axis=1)
                table[rows] = 0
                table[rows, :b.shape[1]] = b[rows]
    return Corpus(link, list(fingerprints), keys, maps, fkeys, table)


def item_map(record: dict, dataset, fingerprint: str) -> np.ndarray:
    """For each item index of `dataset`: its pooled index in the corpus `record`, or -1 (a new item, or one
    the pretraining never trained: in no pretraining sequence, as the target's own items are with
    ``pretrain.with_target: false`` unless another dataset links them)."""
    untrained = set(record.get("untrained_items", ()))
    index = {k: i for i, k in enumerate(record["item_keys"]) if i not in untrained}
    return np.asarray([index.get(k, -1) for k in item_keys(dataset, fingerprint, record["link"])], np.int64)


def feature_map(record: dict, dataset) -> np.ndarray:
    """For each item feature id of `dataset`: its pooled feature id in `record`, or -1 (a new feature)."""
    index = {k: i for i, k in enumerate(record["feature_keys"])}
    return np.asarray([index.get(k, -1) for k in feature_keys(dataset)], np.int64)
