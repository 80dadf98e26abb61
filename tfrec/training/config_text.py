"""``configs/default.yaml`` written from the dataclasses of :mod:`tfrec.training.config`: every setting,
its default, and the comment above it in the source."""

from __future__ import annotations

import dataclasses

from tfrec.training.config import RunConfig


DEFAULTS_HEADER = """\
# tfrec's defaults, written out: every setting, with its default and what it does.
# Generated from tfrec/training/config.py; do not edit by hand (tests/unit/test_training_config.py checks it):
#   python -c "from tfrec.training.config import write_defaults; write_defaults('configs/default.yaml')"
# A starting point for a dataset of your own:
#   tfrec pretrain --data DIR --out runs/pre --config configs/default.yaml
#   tfrec finetune --data DIR --pretrained runs/pre --out runs/ft --config configs/default.yaml
"""


def _field_comments(cls) -> dict[str, list[str]]:
    """The comment lines written above (or beside) each field in the source of `cls` and its bases."""
    import inspect
    import re

    out: dict[str, list[str]] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        pending: list[str] = []
        for line in inspect.getsource(klass).splitlines():
            text = line.strip()
            if text.startswith("#"):
                pending.append(text[1:].strip())
                continue
            match = re.match(r"(\w+)\s*:\s*[^=]+=(.*)$", text)
            if match and not text.startswith(("def ", "class ")):
                beside = match.group(2).split("  # ", 1)
                comments = pending + ([beside[1].strip()] if len(beside) > 1 else [])
                if comments:
                    out[match.group(1)] = comments
            pending = []
    return out


def _yaml_value(value) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text[:-4].strip() if text.endswith("\n...") else text


def defaults_text() -> str:
    """``configs/default.yaml``: every setting of :class:`RunConfig` with its default and its comment."""
    lines = [DEFAULTS_HEADER.rstrip("\n")]

    def emit(cls, obj, indent: str, skip=()):
        comments = _field_comments(cls)
        for f in dataclasses.fields(obj):
            if f.name in skip:
                continue
            value = getattr(obj, f.name)
            lines.extend(f"{indent}# {c}" if c else f"{indent}#" for c in comments.get(f.name, []))
            if dataclasses.is_dataclass(value):
                lines.append(f"{indent}{f.name}:")
                emit(type(value), value, indent + "  ", getattr(type(value), "UNREAD", ()))
            else:
                lines.append(f"{indent}{f.name}: {_yaml_value(value)}")

    emit(RunConfig, RunConfig(), "")
    return "\n".join(lines) + "\n"


def write_defaults(path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(defaults_text())
