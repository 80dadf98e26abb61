"""What the notebooks under ``notebooks/`` record, and how the tests read it back.

A notebook calls :func:`record` with the figures it wants checked; each call shows
them in the notebook and stores them in the cell's output under :data:`MIME_TYPE`.
:func:`recorded` collects them from an executed notebook (an ``nbformat`` object or
a path), the way the notebook tests assert them.
"""

from __future__ import annotations

import json
import math

MIME_TYPE = "application/vnd.tfrec.metrics+json"


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"a recorded figure must be finite, got {value}")
    return value


def record(**figures) -> None:
    """Shows `figures` (name=value, JSON-able) and records them in the cell's output."""
    from IPython.display import display

    figures = _plain(figures)
    text = "\n".join(f"{k}: {json.dumps(v)}" for k, v in figures.items())
    display({MIME_TYPE: figures, "text/plain": text}, raw=True)


def recorded(notebook) -> dict:
    """Every figure an executed notebook recorded (later records of a name win)."""
    if isinstance(notebook, str):
        import nbformat

        notebook = nbformat.read(notebook, as_version=4)
    out = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if MIME_TYPE in data:
                value = data[MIME_TYPE]
                out.update(json.loads(value) if isinstance(value, str) else value)
    return out
