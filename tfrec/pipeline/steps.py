"""The work of each pipeline step.  ``fn(inputs, out, settings) -> outputs``: `inputs` maps
upstream step names to their output folders, `out` is this step's (empty) folder."""

from __future__ import annotations

import json
import os
import shutil

from tfrec import contract
from tfrec.errors import TfrecError


def _json(path: str, data) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def _data(inputs: dict) -> str:
    return os.path.join(inputs["ingest"], "data")


def _run_config(settings: dict, split: str | None = None):
    from tfrec.training.config import RunConfig

    config = RunConfig.from_dict(settings["run_config"], where="pipeline run_config")
    return config.updated({"split": split}) if split else config


def ingest(inputs: dict, out: str, settings: dict) -> dict:
    """Load the raw files, clean, order and split them (tfrec data prepare)."""
    from tfrec.data import dataset, loaders, preprocess, schema

    config = preprocess.PrepareConfig(**settings["prepare"])
    engine = settings.get("engine", "pandas")
    if engine not in schema.ENGINES:
        raise TfrecError(f"data.engine must be {' or '.join(schema.ENGINES)}, not {engine!r}")
    if engine == "spark":  # data.engine: spark, data.spark: {master, conf}
        from tfrec.data import spark_engine

        spark = settings.get("spark") or {}
        conf = {str(k): str(v) for k, v in (spark.get("conf") or {}).items()}
        prepared = spark_engine.prepare_source(settings["source"], settings["path"], settings["options"],
                                               os.path.join(out, "data"), config, spark.get("master"), conf)
    else:
        raw = loaders.load(settings["source"], settings["path"], **settings["options"])
        prepared = dataset.prepare(raw, os.path.join(out, "data"), config)
    return {"data": os.path.join(out, "data"), "stats": prepared.stats}


def _preprocessor(inputs: dict) -> str:
    return os.path.join(inputs["transform"], "preprocessor")


def transform(inputs: dict, out: str, settings: dict) -> dict:
    """The preprocessor (string ids to model features: a SavedModel in core ops, its vocabularies as
    assets), which training checks it matches and the export's signatures read their vocabularies from;
    and the vocabulary and feature statistics the models' lookups and feature tables are built from."""
    from tfrec.data import preprocessor
    from tfrec.data.dataset import PreparedDataset

    spec = preprocessor.save_artifact(_data(inputs), settings["max_len"], os.path.join(out, "preprocessor"))
    ds = PreparedDataset(_data(inputs))
    shutil.copytree(os.path.join(ds.path, "vocab"), os.path.join(out, "vocab"))
    item_table, item_ids, item_columns = ds.feature_table("item") if ds.items is not None else (None, 0, [])
    user_table, user_ids, user_columns = ds.feature_table("user") if ds.users is not None else (None, 0, [])
    statistics = {"items": len(ds.item_vocab), "users": len(ds.user_vocab), "has_ratings": ds.has_ratings,
                  "item_features": ds.item_features, "user_features": ds.user_features,
                  "item_feature_table": {"columns": item_columns, "id_space": int(item_ids),
                                         "width": 0 if item_table is None else int(item_table.shape[1])},
                  "user_feature_table": {"columns": user_columns, "id_space": int(user_ids),
                                         "width": 0 if user_table is None else int(user_table.shape[1])},
                  "interactions": ds.stats}
    _json(os.path.join(out, "statistics.json"), statistics)
    return {"preprocessor": os.path.join(out, "preprocessor"), "preprocessor_spec": spec,
            "vocab": os.path.join(out, "vocab"), "statistics": os.path.join(out, "statistics.json")}


def pretrain(inputs: dict, out: str, settings: dict) -> dict:
    from tfrec.training import trainer

    record = trainer.pretrain(_data(inputs), os.path.join(out, "run"), _run_config(settings), verbose=2,
                              preprocessor=_preprocessor(inputs))
    return {"run": os.path.join(out, "run"), "valid": record["summary"]["valid"]}


def finetune(inputs: dict, out: str, settings: dict) -> dict:
    """Each task the config names, from the pretrained backbone."""
    from tfrec.training.finetuning import finetune as finetune_task

    outputs = {}
    for task in settings["tasks"]:
        run = os.path.join(out, task)
        record = finetune_task(_data(inputs), run, _run_config(settings),
                               pretrained=os.path.join(inputs["pretrain"], "run"), task=task, verbose=2,
                               preprocessor=_preprocessor(inputs))
        outputs[task] = {"run": run, "valid": record["summary"]["valid"]}
    return outputs


def evaluate(inputs: dict, out: str, settings: dict) -> dict:
    """Test figures of each fine-tuned task (next-item: leave-one-out full ranking; the others:
    the figures their run wrote once, at its end), beside the popularity baseline."""
    from tfrec.evaluation import sequential

    report = {}
    for task in settings["tasks"]:
        run = os.path.join(inputs["finetune"], task)
        if task == contract.NEXT_ITEM:
            model_report, _, _ = sequential.evaluate_saved(run, _data(inputs), "test")
            base, _, _ = sequential.evaluate_saved(None, _data(inputs), "test", baseline="popularity")
            report[task] = {"test": model_report["metrics"], "popularity": base["metrics"]}
        else:
            with open(os.path.join(run, "metrics.json")) as f:
                summary = json.load(f)
            report[task] = {"test": summary["test"], "baselines": summary["baselines"], "valid": summary["valid"]}
    _json(os.path.join(out, "evaluation.json"), report)
    return {"evaluation": os.path.join(out, "evaluation.json")}


def export(inputs: dict, out: str, settings: dict) -> dict:
    from tfrec.export import exporter

    path = exporter.export(os.path.join(inputs["finetune"], settings["task"]), os.path.join(out, "serving"),
                           settings["name"], version=1, k=settings["top_k"], data_dir=_data(inputs),
                           preprocessor=_preprocessor(inputs), explain_window=settings["explain_window"])
    return {"export": path}


def push(inputs: dict, out: str, settings: dict) -> dict:
    from tfrec.export import push as pusher

    if not settings.get("serving_root"):
        raise TfrecError("the push step needs a serving root: pass --serving-root")
    decision = pusher.push(os.path.join(inputs["export"], "serving", settings["name"], "1"), settings["serving_root"],
                           settings["name"], metric=settings.get("metric", "ndcg@10"),
                           min_delta=settings.get("min_delta", 0.0), keep=settings.get("keep", 3),
                           data_dir=_data(inputs))
    _json(os.path.join(out, "decision.json"), decision)
    return {"decision": decision}
