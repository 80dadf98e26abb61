import os
import subprocess
import sys

from tests.conftest import REPO


def _python(code: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_import_sets_legacy_keras_and_stays_light():
    r = _python(
        "import os, sys, tfrec\n"
        "print(os.environ['TF_USE_LEGACY_KERAS'])\n"
        "print(sorted(m for m in ('tensorflow', 'pandas', 'keras_nlp', 'tensorflow_recommenders') if m in sys.modules))\n"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["1", "[]"]


def test_tf_keras_is_keras_2_after_import():
    r = _python("import tfrec, tensorflow as tf\nprint(tf.keras.layers.Dense.__module__.split('.')[0])")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("tf_keras")


def test_tensorflow_bound_to_keras_3_first_raises_one_clear_error():
    r = _python("import tensorflow as tf\ntf.keras.layers\nimport tfrec")
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: tfrec needs Keras 2")
    assert "import tfrec before tensorflow" in last and "TF_USE_LEGACY_KERAS=1" in last


def test_tensorflow_imported_first_but_not_yet_bound_is_fine():
    r = _python("import tensorflow as tf\nimport tfrec\nprint(tf.keras.layers.Dense.__module__.split('.')[0])")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("tf_keras")


def test_lazy_public_names():
    import tfrec

    assert tfrec.Vocabulary.__name__ == "Vocabulary"
    assert "prepare" in dir(tfrec)
    try:
        tfrec.no_such_name
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("unknown attribute did not raise")
