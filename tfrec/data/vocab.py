"""Vocabularies: string ids <-> integer indices, with reserved entries first."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from tfrec.data import schema
from tfrec.errors import TfrecError


class Vocabulary:
    """An ordered token list; the index of a token is its position.

    Args:
        tokens: the real tokens, in index order (reserved tokens are added in front).
        reserved: the reserved tokens, e.g. ``("[PAD]", "[MASK]", "[OOV]")``.
        oov_token: the reserved token unknown strings map to.

    A vocabulary file holds one token per line, reserved tokens first, so that
    ``tf.lookup.TextFileInitializer`` and stock TensorFlow Serving can read it.
    """

    def __init__(self, tokens: Sequence[str], reserved: Sequence[str], oov_token: str):
        self.reserved = tuple(reserved)
        if oov_token not in self.reserved:
            raise ValueError(f"oov_token {oov_token!r} must be one of the reserved tokens {self.reserved}")
        self.oov_token = oov_token
        self.tokens = list(self.reserved) + [str(t) for t in tokens]
        self._index = {t: i for i, t in enumerate(self.tokens)}
        if len(self._index) != len(self.tokens):
            seen: set[str] = set()
            dup = next(t for t in self.tokens if t in seen or seen.add(t))
            raise TfrecError(f"vocabulary token {dup!r} appears twice")
        self.oov_id = self._index[oov_token]

    @classmethod
    def for_items(cls, tokens: Sequence[str]) -> "Vocabulary":
        return cls(tokens, (schema.PAD_TOKEN, schema.MASK_TOKEN, schema.OOV_TOKEN), schema.OOV_TOKEN)

    @classmethod
    def for_features(cls, tokens: Sequence[str]) -> "Vocabulary":
        return cls(tokens, (schema.PAD_TOKEN, schema.OOV_TOKEN), schema.OOV_TOKEN)

    @classmethod
    def by_frequency(cls, values: Iterable[str], kind: str = "feature") -> "Vocabulary":
        """Tokens ordered by count, most frequent first; ties by token string."""
        counts = pd.Series(list(values), dtype=object).value_counts(sort=False)
        order = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
        tokens = [str(k) for k, _ in order]
        return cls.for_items(tokens) if kind == "item" else cls.for_features(tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def num_reserved(self) -> int:
        return len(self.reserved)

    def lookup(self, values: Iterable[str]) -> np.ndarray:
        """Maps strings to int32 indices; unknown strings map to the OOV index."""
        get = self._index.get
        oov = self.oov_id
        return np.fromiter((get(str(v), oov) for v in values), dtype=np.int32)

    def index(self, token: str) -> int:
        return self._index.get(str(token), self.oov_id)

    def __contains__(self, token: object) -> bool:
        return str(token) in self._index

    def token(self, index: int) -> str:
        return self.tokens[int(index)]

    def save(self, path: str) -> None:
        for t in self.tokens:
            if "\n" in t or "\r" in t:
                raise TfrecError(f"vocabulary token {t!r} contains a line break and cannot be written to {path}")
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(self.tokens) + "\n")

    @classmethod
    def load(cls, path: str, kind: str = "feature") -> "Vocabulary":
        if not os.path.exists(path):
            raise TfrecError(f"vocabulary file {path} does not exist")
        with open(path, encoding="utf-8") as f:
            return cls.from_text(f.read(), path, kind)

    @classmethod
    def from_text(cls, text: str, path: str, kind: str = "feature") -> "Vocabulary":
        """A vocabulary from the text of its file (`path` names it in messages)."""
        tokens = text.split("\n")[:-1]
        reserved = (
            (schema.PAD_TOKEN, schema.MASK_TOKEN, schema.OOV_TOKEN)
            if kind == "item"
            else (schema.PAD_TOKEN, schema.OOV_TOKEN)
        )
        if tuple(tokens[: len(reserved)]) != reserved:
            raise TfrecError(f"vocabulary file {path} does not start with the reserved tokens {reserved}")
        return cls(tokens[len(reserved):], reserved, schema.OOV_TOKEN)
