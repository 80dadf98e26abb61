"""``tfrec pipeline`` and ``tfrec quickstart`` (the pipeline of the packaged quickstart config, then a query
to the model it pushed)."""

from __future__ import annotations

import dataclasses
import json
import os

from tfrec.cli.common import format_table, stats_rows
from tfrec.pipeline.runner import PACKAGED_CONFIGS

QUICKSTART_PIPELINE = os.path.join(PACKAGED_CONFIGS, "quickstart-pipeline.yaml")
QUICKSTART_RUN_CONFIG = os.path.join(PACKAGED_CONFIGS, "quickstart.yaml")


def cmd_pipeline(args) -> int:
    from tfrec.pipeline import runner

    return runner.run(args)


def cmd_quickstart(args) -> int:
    """The main job end to end on MovieLens-100K, as a pipeline run: ingest, transform, pretrain, fine-tune
    next-item and ranking, evaluate, export, push; then the pushed model is served and queried over gRPC."""
    from tfrec.data import loaders
    from tfrec.pipeline import runner
    from tfrec.training import task_trainer
    from tfrec.evaluation import sequential

    path = args.data_dir
    if path is not None and os.path.isdir(os.path.join(path, "ml-100k")):
        path = os.path.join(path, "ml-100k")
    path = path or loaders.local_copy("movielens-100k")
    workdir = os.path.abspath(args.workdir)
    config = runner.load_config(args.pipeline, None, os.path.join(workdir, "pipeline"),
                                os.path.join(workdir, "serving"), run_config_file=args.config)
    config = dataclasses.replace(config, data=dict(config.data, path=os.path.abspath(path) if path else None))
    print(f"pipeline {config.name} ({args.pipeline}), MovieLens-100K from "
          f"{path or 'the cache (downloading on first use)'}, artifacts under {workdir}", flush=True)
    manifest = runner.execute(config, log=lambda m: print(m, flush=True))
    steps = {s["step"]: s for s in manifest["steps"]}
    print(format_table(stats_rows(steps["ingest"]["outputs"]["stats"]), ("statistic", "value")), flush=True)
    with open(steps["evaluate"]["outputs"]["evaluation"]) as f:
        evaluation = json.load(f)
    print("test split (leave-one-out, full ranking, history excluded):")
    print(sequential.markdown_table([("popularity", evaluation["next-item"]["popularity"]),
                                     ("pretrained + fine-tuned", evaluation["next-item"]["test"])]), end="")
    if "ranking" in evaluation:
        with open(os.path.join(steps["finetune"]["output_dir"], "ranking", "run.json")) as f:
            print(task_trainer.summary_table(json.load(f)["summary"]), end="", flush=True)
    decision = steps["push"]["outputs"]["decision"]
    print(f"push: {json.dumps(decision, default=str)}", flush=True)
    _quickstart_query(config.serving_root, config.export["name"], steps["ingest"]["outputs"]["data"])
    return 0


def _quickstart_query(serving_root: str, name: str, data: str) -> None:
    """Serves what the pipeline pushed with the embedded server and asks it for one user's top 10 over gRPC."""
    import socket

    import numpy as np

    from tfrec.data import inputs, schema
    from tfrec.data.dataset import PreparedDataset
    from tfrec.serving import Client
    from tfrec.serving.models import ModelManager, single_model_config
    from tfrec.serving.server import Server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = ModelManager(single_model_config(name, os.path.join(serving_root, name)), poll_seconds=0, warmup=True,
                           log=lambda m: print(f"server: {m}", flush=True))
    server = Server(manager, port=port, rest_api_port=None)
    server.start()
    print(f"serving {os.path.join(serving_root, name)} on 127.0.0.1:{port} (TensorFlow Serving's gRPC API); "
          "asking it for a sample user", flush=True)
    try:
        ds = PreparedDataset(data)
        seqs = inputs.loo_sequences(ds, schema.TEST)
        lengths = np.array([len(h) for h in seqs.histories])
        user = int(np.argmin(np.abs(lengths - np.median(lengths))))  # a typical user: the median history length
        history = [ds.item_vocab.token(int(i)) for i in seqs.histories[user]]
        titles = dict(zip(ds.items["item_id"].astype(str), ds.items["title"].astype(str))) if ds.items is not None \
            else {}
        client = Client(f"127.0.0.1:{port}", timeout=30)
        recs = client.recommend(name, [history], k=10)[0]
        client.close()
        uid = ds.user_vocab.token(int(seqs.user_indices[user]))
        print(f"user {uid}: the last 5 of {len(history)} movies watched")
        print(format_table([(i, titles.get(i, "")) for i in history[-5:]], ("item", "title")))
        print(f"top 10 recommendations for user {uid}, from the server")
        print(format_table([(str(r), i, f"{sc:.3f}", titles.get(i, "")) for r, (i, sc) in enumerate(recs, 1)],
                           ("rank", "item", "score", "title")), flush=True)
    finally:
        server.stop(grace=2)
        print("server stopped", flush=True)
