"""The tfrec pipeline as data: ``create_pipeline(config)`` returns its steps, runs nothing.

Each step is a pure description (name, upstream steps, settings, the function that
does the work); :mod:`tfrec.pipeline.runner` executes them with caching.  A step's run id is a
hash of its settings, its upstream steps' run ids and, for ingest, the content of the
raw files, so an unchanged step is found by its id and skipped, as TFX caching does.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from tfrec import contract
from tfrec.pipeline import steps

STEP_NAMES = ("ingest", "transform", "pretrain", "finetune", "evaluate", "export", "push")


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    fn: Callable[..., dict]
    upstream: tuple[str, ...]
    settings: dict


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """What a pipeline config file holds (see ``pipelines/configs/``).

    data: ``source`` (a tfrec loader), ``path`` (relative to the data dir), ``options``
    (loader arguments), ``prepare`` (PrepareConfig fields), ``engine`` (``pandas``, the default, or
    ``spark``) and ``spark`` (``master``, ``conf``: the Spark engine's session).  run_config: a run config
    file (relative to the repository) or a mapping; overrides: dotted settings on top.
    tasks: the fine-tuning tasks; export: ``task``, ``name``, ``top_k``, ``explain_window``; push:
    ``metric``, ``min_delta``, ``keep``.
    """

    name: str
    data: dict
    run_config: dict
    tasks: tuple[str, ...]
    export: dict
    push: dict
    data_dir: str | None
    pipeline_root: str
    serving_root: str


def create_pipeline(config: PipelineConfig) -> list[Step]:
    """The steps of `config`, in order.  Pure: reads and writes nothing."""
    raw_path = config.data.get("path")
    if raw_path and not os.path.isabs(raw_path):
        if not config.data_dir:
            from tfrec.errors import TfrecError

            raise TfrecError(f"pipeline {config.name}: data.path {raw_path} is relative; pass --data-dir or set "
                             "TFREC_DATA_DIR")
        raw_path = os.path.join(config.data_dir, raw_path)
    export_task = config.export.get("task", config.tasks[0])
    return [
        Step("ingest", steps.ingest, (), {"source": config.data["source"], "path": raw_path,
                                          "options": config.data.get("options", {}),
                                          "prepare": config.data.get("prepare", {}),
                                          # the engine only where one is named: the default keeps the step's id
                                          **{k: config.data[k] for k in ("engine", "spark") if k in config.data}}),
        Step("transform", steps.transform, ("ingest",), {"max_len": config.run_config["model"]["max_len"]}),
        Step("pretrain", steps.pretrain, ("ingest", "transform"), {"run_config": config.run_config}),
        Step("finetune", steps.finetune, ("ingest", "transform", "pretrain"), {"run_config": config.run_config,
                                                                               "tasks": list(config.tasks)}),
        Step("evaluate", steps.evaluate, ("ingest", "finetune"), {"tasks": list(config.tasks)}),
        Step("export", steps.export, ("ingest", "transform", "finetune"),
             {"task": export_task, "name": config.export["name"], "top_k": config.export.get("top_k", 100),
              "explain_window": config.export.get("explain_window", contract.EXPLAIN_WINDOW)}),
        Step("push", steps.push, ("ingest", "export"), {"name": config.export["name"],
                                                         "serving_root": config.serving_root, **config.push}),
    ]
