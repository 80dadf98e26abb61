"""tfrec: pretrain once, fine-tune per task, ship to TensorFlow Serving.

Importing this package pins TensorFlow to Keras 2 (``tf_keras``) by setting
``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported, because
tensorflow-recommenders and keras-nlp 0.12 live in Keras 2.  The import itself
is light: public names are resolved lazily, so ``import tfrec`` loads neither
TensorFlow nor pandas until something needs them.
"""

from __future__ import annotations

import importlib
import os
import sys

__version__ = "0.1.0"

_LEGACY_KERAS_VAR = "TF_USE_LEGACY_KERAS"


def _pin_keras_2() -> None:
    """Sets ``TF_USE_LEGACY_KERAS=1``; refuses a TensorFlow already bound to Keras 3."""
    os.environ[_LEGACY_KERAS_VAR] = "1"
    tf_module = sys.modules.get("tensorflow")
    if tf_module is None:
        return
    # TensorFlow binds `tf.keras` lazily, on first attribute access, from the
    # variable.  Once it has bound Keras 3, nothing set now can change it.
    loader = tf_module.__dict__.get("keras")
    try:
        initialized = object.__getattribute__(loader, "_tfll_initialized")
        bound = object.__getattribute__(loader, "_tfll_keras_version") if initialized else None
    except AttributeError:  # not TensorFlow's lazy loader: a module already imported
        bound = "keras_3" if getattr(loader, "__name__", "").startswith("keras.") else None
    if bound == "keras_3":
        raise ImportError(
            "tfrec needs Keras 2 (tf_keras), but TensorFlow was imported before tfrec and "
            "has already bound tf.keras to Keras 3; import tfrec before tensorflow, or set "
            "TF_USE_LEGACY_KERAS=1 in the environment before Python starts."
        )


_pin_keras_2()

# Public names, resolved on first use so that `import tfrec` stays light.
_LAZY = {
    "TfrecError": "tfrec.errors",
    "load": "tfrec.data.loaders",
    "prepare": "tfrec.data.dataset",
    "PreparedDataset": "tfrec.data.dataset",
    "PrepareConfig": "tfrec.data.preprocess",
    "Vocabulary": "tfrec.data.vocab",
    "generate_synthetic": "tfrec.data.synthetic",
}


def __getattr__(name: str):
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'tfrec' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
