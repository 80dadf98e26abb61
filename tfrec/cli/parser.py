"""The argument parser of every command, and the reference of it that docs/cli.md holds."""

from __future__ import annotations

import argparse

from tfrec import __version__, contract
from tfrec.data import schema
from tfrec.cli.common import DATA_DIR_ENV, Parser, flag_bool
from tfrec.cli.data_commands import cmd_data_forget, cmd_data_prepare, cmd_data_stats
from tfrec.cli.serve_commands import cmd_export, cmd_push, cmd_query, cmd_serve
from tfrec.cli.pipeline_commands import QUICKSTART_PIPELINE, QUICKSTART_RUN_CONFIG, cmd_pipeline, cmd_quickstart
from tfrec.cli.train_commands import cmd_ensemble, cmd_evaluate, cmd_finetune, cmd_pretrain, cmd_tune


def _training_options(p: argparse.ArgumentParser, several_datasets: bool = False) -> None:
    if several_datasets:
        p.add_argument("--data", required=True, action="append",
                       help="prepared dataset folder (tfrec data prepare); repeated, the datasets' sequences are "
                            "pooled and the run validates on the first")
        p.add_argument("--link", default="title", choices=("title", "none"),
                       help="with several --data: items of the same title and year are one item (default), or none")
    else:
        p.add_argument("--data", required=True, help="prepared dataset folder (tfrec data prepare), local or a store's "
                       "URI (s3://, gs://, hdfs://)")
    p.add_argument("--out", required=True, help="run folder; started again with the same command, a run resumes")
    p.add_argument("--config", help="YAML or JSON run config (sections model, pretrain, finetune, tasks); see configs/")
    p.add_argument("--split", help="loo (default), random (80/20 rows) or cold (10%% of items held out); "
                   "a task's pretraining must use the task's split")
    p.add_argument("--epochs", type=int, help="most epochs (early stopping on validation NDCG@10 may end sooner)")
    p.add_argument("--batch-size", type=int, help="sequences per batch")
    p.add_argument("--learning-rate", type=float, help="Adam learning rate")
    p.add_argument("--seed", type=int, help="seed of weights, batches and masks")
    p.add_argument("--strategy", help="tf.distribute strategy: mirrored (default), default, one-device, "
                                      "multi-worker (the cluster in TF_CONFIG)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any config setting, e.g. --set pretrain.mask_rate=0.3 --set model.hidden_dim=128")
    p.add_argument("--preprocessor", help="a preprocessor artifact (tfrec pipeline's transform step): the run is "
                                          "refused unless it matches --data and the model's length, and records it")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or different run in --out")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), help="Keras progress: 1 bars, 2 a line per epoch")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tfrec", description="Pretrain once, fine-tune per task, ship to TensorFlow Serving.")
    parser.add_argument("--version", action="version", version=f"tfrec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    data = sub.add_parser("data", help="prepare datasets and show their statistics")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", parser_class=Parser)
    prep = data_sub.add_parser("prepare", help="load, clean, split a dataset and write a dataset folder")
    prep.add_argument("source", help="movielens-100k, movielens-1m, movielens-latest-small, amazon-s3rec, csv or parquet")
    prep.add_argument("--path", help="local folder of the original files (or the interactions file for csv/parquet); "
                      f"default: ${DATA_DIR_ENV}/<folder> when present, else the cache, downloading on first use")
    prep.add_argument("--out", required=True, help="dataset folder to write (replaced atomically), or a folder on a store pyarrow opens: s3://bucket/path (also s3a://), gs://, hdfs://; options in the query, e.g. ?endpoint_override=host:port (docs/scaling.md)")
    prep.add_argument("--name", help="amazon-s3rec: which <Name>.txt (Beauty, Sports_and_Outdoors, Toys_and_Games...)")
    prep.add_argument("--columns", help="csv/parquet: canonical=source column pairs, e.g. user_id=userId,item_id=movieId")
    prep.add_argument("--items", help="csv/parquet: item feature table")
    prep.add_argument("--users", help="csv/parquet: user feature table")
    prep.add_argument("--list-columns", help="csv/parquet: comma-separated feature columns holding |-separated lists")
    prep.add_argument("--sep", default=",", help="csv: field separator (default ',')")
    prep.add_argument("--order-as-time", action="store_true", help="csv/parquet: no timestamp column; row order is time")
    prep.add_argument("--rating-threshold", type=float, help="keep interactions rated at least this (implicit feedback)")
    prep.add_argument("--min-user-interactions", type=int, default=1, help="iterated k-core bound for users (default 1: off)")
    prep.add_argument("--min-item-interactions", type=int, default=1, help="iterated k-core bound for items (default 1: off)")
    prep.add_argument("--dedupe", choices=("exact", "user_item"), default="exact",
                      help="drop identical rows (exact) or repeated (user, item) pairs, keeping the first")
    prep.add_argument("--loo-min-length", type=int, default=3, help="shorter users stay wholly in train (default 3)")
    prep.add_argument("--test-fraction", type=float, default=0.2, help="test share of the random and temporal splits")
    prep.add_argument("--seed", type=int, default=42, help="seed of the random split")
    prep.add_argument("--format", choices=schema.FORMATS, default="parquet",
                      help="tfrecord: also write each user's leave-one-out sequence to sharded TFRecord files, "
                           "which training then reads, interleaved (default parquet: the tables only)")
    prep.add_argument("--shards", type=int, default=1, help="number of TFRecord files of --format tfrecord (default 1)")
    prep.add_argument("--engine", choices=schema.ENGINES, default="pandas",
                      help="pandas (default: fastest on one machine) or spark: the same dataset computed on Apache "
                           "Spark, for logs beyond one machine's memory (needs PySpark and Java)")
    prep.add_argument("--spark-master",
                      help="--engine spark: local[N], spark://HOST:PORT, yarn... (default local[*]: this machine)")
    prep.add_argument("--spark-conf", action="append", metavar="KEY=VALUE",
                      help="--engine spark: a Spark setting, e.g. spark.driver.memory=8g (repeatable)")
    prep.set_defaults(func=cmd_data_prepare)
    fg = data_sub.add_parser("forget", help="remove users from a prepared dataset (prepared again without them) "
                             "and list the runs and exports trained on it, to retrain")
    fg.add_argument("dir", help="prepared dataset folder (replaced atomically)")
    fg.add_argument("--user", action="append", required=True, metavar="ID",
                    help="a user id of the source data (repeatable)")
    fg.add_argument("--search", action="append", metavar="FOLDER",
                    help="where to look for runs and exports trained on the dataset (repeatable; default: the "
                         "dataset's parent folder)")
    fg.set_defaults(func=cmd_data_forget)
    st = data_sub.add_parser("stats", help="print the statistics of a prepared dataset")
    st.add_argument("dir", help="prepared dataset folder")
    st.add_argument("--json", action="store_true", help="print stats.json instead of a table")
    st.set_defaults(func=cmd_data_stats)

    pre = sub.add_parser("pretrain", help="pretrain a sequence backbone with the masked-item objective")
    _training_options(pre, several_datasets=True)
    pre.set_defaults(func=cmd_pretrain)
    ft = sub.add_parser("finetune", help="fine-tune a pretrained backbone into a task")
    ft.add_argument("--task", default=contract.NEXT_ITEM,
                    help="next-item (default), retrieval, ranking, cold-start or multitask")
    ft.add_argument("--pretrained", help="pretraining run folder (or its model/ folder)")
    ft.add_argument("--from-scratch", action="store_true", help="start from fresh weights instead of --pretrained")
    ft.add_argument("--teacher", help="next-item: a trained next-item model or ensemble (run or model/ folder) to "
                    "distil from (finetune.teacher; finetune.distill_* settings)")
    ft.add_argument("--federated", action="store_true",
                    help="next-item: federated fine-tuning on Flower, the users split across simulated clients that "
                         "train locally (federated.* settings; needs pip install 'tfrec[federated]')")
    _training_options(ft)
    ft.set_defaults(func=cmd_finetune)
    en = sub.add_parser("ensemble", help="combine next-item models into one that averages their log-probabilities")
    en.add_argument("--models", nargs="+", required=True, metavar="DIR",
                    help="two or more next-item run folders (or model/ folders) trained on the same prepared dataset")
    en.add_argument("--out", required=True, help="output folder: the ensemble goes to OUT/model")
    en.add_argument("--weights", nargs="+", type=float, metavar="W",
                    help="one positive weight per model (default: equal)")
    en.add_argument("--data", help="prepared dataset folder for the validation figures (default: the models' own)")
    en.add_argument("--search", action="store_true",
                    help="choose members and weights among --models on the validation split (greedy forward "
                         "selection on NDCG@10); writes OUT/search.json")
    en.add_argument("--max-rounds", type=int, default=10, help="--search: most members added after the first "
                                                                "(default 10)")
    en.add_argument("--overwrite", action="store_true", help="replace an ensemble already in OUT")
    en.set_defaults(func=cmd_ensemble)
    ex = sub.add_parser("export", help="export a trained model as a versioned SavedModel for TensorFlow Serving")
    ex.add_argument("--model", required=True, help="run folder or saved model folder")
    ex.add_argument("--serving-root", required=True, help="model base folder root: the export goes to ROOT/NAME/VERSION")
    ex.add_argument("--name", required=True, help="model name (the folder under the serving root)")
    ex.add_argument("--version", type=int, help="version number (default: one more than the largest present)")
    ex.add_argument("--top-k", type=int, default=100, help="items a recommendation request returns (default 100)")
    ex.add_argument("--data", help="prepared dataset folder (default: the one the model was trained on)")
    ex.add_argument("--preprocessor", help="a preprocessor artifact (tfrec pipeline's transform step) whose "
                                           "vocabularies the signatures read (default: the dataset's)")
    ex.add_argument("--explain-window", type=int, default=contract.EXPLAIN_WINDOW,
                    help="the explain signature leaves out each of the last N history items in turn, one forward "
                         f"pass each (0: every item; default {contract.EXPLAIN_WINDOW})")
    ex.set_defaults(func=cmd_export)
    pu = sub.add_parser("push", help="push an export as the next served version if it is not worse than the current")
    pu.add_argument("--candidate", required=True, help="an export folder (a version folder written by tfrec export)")
    pu.add_argument("--serving-root", required=True, help="the model base folder root the server reads")
    pu.add_argument("--name", required=True, help="model name under the serving root")
    pu.add_argument("--metric", default="ndcg@10", help="validation figure that decides (default ndcg@10; rmse for ranking)")
    pu.add_argument("--min-delta", type=float, default=0.0, help="how much worse the candidate may be (default 0)")
    pu.add_argument("--keep", type=int, default=3, help="versions kept after the push (default 3)")
    pu.add_argument("--data", help="prepared dataset folder (default: the one in the export's metadata)")
    pu.set_defaults(func=cmd_push)
    sv = sub.add_parser("serve", help="serve exports over TensorFlow Serving's gRPC and REST APIs")
    flag = dict(type=flag_bool, nargs="?", const=True)  # --flag, --flag=true, --flag=false, as TF Serving takes them
    sv.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500; 0: none, with --grpc_socket_path)")
    sv.add_argument("--grpc_socket_path", help="also listen for gRPC on this UNIX socket")
    sv.add_argument("--rest_api_port", type=int, default=0, help="REST port (default 0: no REST, as TF Serving)")
    sv.add_argument("--rest_api_num_threads", type=int, help="threads answering REST requests (default 4 per core)")
    sv.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                    help="time a REST request may take to arrive and to run (default 30000)")
    sv.add_argument("--model_name", default="default", help="name of the model served from --model_base_path")
    sv.add_argument("--model_base_path", help="folder of integer version folders")
    sv.add_argument("--model_config_file", help="ModelServerConfig text proto (several models, version policies, labels)")
    sv.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0,
                    help="seconds between reads of --model_config_file for changes (default 0: read once)")
    sv.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                    help="seconds between looks for new and removed versions (0: load once)")
    sv.add_argument("--max_num_load_retries", type=int, default=5,
                    help="retries of a version that failed to load (default 5)")
    sv.add_argument("--load_retry_interval_micros", type=int, default=60_000_000,
                    help="pause between load retries in microseconds (default 60000000)")
    sv.add_argument("--allow_version_labels_for_unavailable_models", default=False, **flag,
                    help="let version_labels name versions not yet AVAILABLE (default false)")
    sv.add_argument("--enable_model_warmup", default=True, **flag,
                    help="replay assets.extra/tf_serving_warmup_requests at load (default true)")
    sv.add_argument("--enable_batching", default=False, **flag, help="server-side dynamic batching (default false)")
    sv.add_argument("--batching_parameters_file", help="BatchingParameters text proto (max_batch_size, "
                    "batch_timeout_micros, num_batch_threads, max_enqueued_batches, allowed_batch_sizes...)")
    sv.add_argument("--monitoring_config_file", help="MonitoringConfig text proto: Prometheus metrics on the REST port")
    sv.add_argument("--ssl_config_file", help="SSLConfig text proto (server_key, server_cert, custom_ca, "
                    "client_verify): TLS for gRPC")
    sv.add_argument("--enable_grpc_healthcheck_service", default=False, **flag,
                    help="serve grpc.health.v1 (default false, as TF Serving)")
    sv.add_argument("--grpc_max_threads", type=int, help="threads answering gRPC calls (default 4 per core)")
    sv.add_argument("--grpc_max_concurrent_rpcs", type=int,
                    help="gRPC calls running or waiting at once; more are RESOURCE_EXHAUSTED (default 4 per thread)")
    sv.add_argument("--max_request_rows", type=int, default=10_000,
                    help="rows one request may carry (default 10000; more: RESOURCE_EXHAUSTED)")
    sv.add_argument("--max_tensor_elements", type=int, default=10_000_000,
                    help="elements one input tensor may have (default 10000000)")
    sv.add_argument("--max_history_length", type=int, default=10_000,
                    help="longest dimension after the first, such as a history (default 10000)")
    sv.add_argument("--rest_api_max_body_bytes", type=int, help="largest REST body (default 16 MiB; more: 413)")
    sv.add_argument("--model_base_path_roots", help="comma-separated folders every base_path must lie in "
                    "(startup, config file and reload requests alike; default: anywhere)")
    sv.add_argument("--enable_reload_config_request", default=True, **flag,
                    help="accept HandleReloadConfigRequest (default true; false: UNIMPLEMENTED)")
    sv.add_argument("--access_log_file", help="append one line per request to this file (-: standard output)")
    sv.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                    help="threads one op may use (default 0: TensorFlow's choice; 1 suits many small requests)")
    sv.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                    help="ops run at once (default 0: TensorFlow's choice)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sv.set_defaults(func=cmd_serve)
    qu = sub.add_parser("query", help="ask a TensorFlow Serving (or tfrec serve) server for recommendations")
    qu.add_argument("--server", default="localhost:8500", help="gRPC address (default localhost:8500)")
    qu.add_argument("--model", required=True, help="model name")
    qu.add_argument("--history", required=True, help="item ids, oldest first, comma-separated")
    qu.add_argument("--user", help="user id, for exports that take one (ranking, and retrieval models that "
                                   "embed user ids)")
    qu.add_argument("--user-features", metavar="COLUMN=VALUE,...",
                    help="the user's own features, for retrieval exports that take them instead of a user id "
                         "(e.g. gender=F,age=25,occupation=writer; a new user's demographics)")
    qu.add_argument("-k", type=int, default=10, help="items to show (default 10)")
    qu.add_argument("--data", help="prepared dataset folder, to show item titles")
    qu.add_argument("--timeout", type=float, default=5.0, help="deadline of the call in seconds (default 5)")
    qu.add_argument("--explain", action="store_true",
                    help="say why: the history items each recommendation depends on most (the explain signature)")
    qu.add_argument("--diversity", type=float, help="re-rank for diversity, 0..1 (the rerank signature: MMR)")
    qu.add_argument("--popularity-penalty", type=float,
                    help="re-rank towards the history's popularity level, >= 0 (the rerank signature)")
    qu.set_defaults(func=cmd_query)
    ev = sub.add_parser("evaluate", help="leave-one-out full-ranking evaluation of a model or a baseline")
    ev.add_argument("--model", help="run folder or saved model folder: a next-item or pretrained model, or a "
                                    "retrieval model trained on the leave-one-out split")
    ev.add_argument("--baseline", help="popularity: rank items by their training count; popularity-by-group: by "
                                       "their count among users of the same gender and age band")
    ev.add_argument("--history-length", type=int, metavar="N",
                    help="cut each history to its last N items (0: none), to judge new users")
    ev.add_argument("--data", required=True, help="prepared dataset folder")
    ev.add_argument("--split", default="valid", choices=("valid", "test"), help="valid (default) or test")
    ev.add_argument("--per-user", action="store_true", help="also write each user's target and rank (CSV)")
    ev.add_argument("--include-history", action="store_true", help="rank the history's items too (default: excluded)")
    ev.add_argument("--rerank", nargs="+", metavar="KNOB=VALUE",
                    help="re-rank the model's lists as its export's rerank signature does: diversity=λ (MMR, 0..1) "
                         "and/or popularity_penalty=p (lowers items above the history's popularity level, >= 0)")
    ev.add_argument("--out", help="output prefix of the .json/.md files (default: <model>/eval_<split>)")
    ev.set_defaults(func=cmd_evaluate)

    tu = sub.add_parser("tune", help="search settings on the validation split (Optuna): trials fine-tune the base "
                                     "config with settings from a search space; writes best.yaml")
    tu.add_argument("--task", default=contract.NEXT_ITEM, help="next-item (default), retrieval, ranking, cold-start "
                                                             "or multitask")
    tu.add_argument("--data", required=True, help="prepared dataset folder (tfrec data prepare)")
    tu.add_argument("--config", help="base run config; the search space's keys are set on top of it")
    tu.add_argument("--space", required=True, help="search space YAML: dotted key -> {low, high[, log, step]} or "
                                                   "{choices: [...]}")
    tu.add_argument("--trials", type=int, required=True, help="finished trials (completed or pruned) the study "
                                                              "should hold at the end")
    tu.add_argument("--study", required=True, help="a folder (the study in its SQLite file, trials' runs beside it; "
                                                   "started again, the search resumes) or an SQLAlchemy URL")
    tu.add_argument("--study-name", help="name of the study in the storage (default tfrec-<task>)")
    tu.add_argument("--workdir", help="where the trials' runs, best.yaml and tuning.json go (default: the --study "
                                      "folder; needed with a URL)")
    tu.add_argument("--pretrained", help="pretraining run every trial fine-tunes from (default: from scratch)")
    tu.add_argument("--sampler", default="tpe", choices=("tpe", "random"), help="Optuna sampler (default tpe)")
    tu.add_argument("--pruner", default="median", choices=("median", "hyperband", "none"),
                    help="stops trials trailing the others on the per-epoch validation figure (default median)")
    tu.add_argument("--set", action="append", metavar="KEY=VALUE", help="a setting on top of the base config")
    tu.set_defaults(func=cmd_tune)

    qs = sub.add_parser("quickstart", help="run the main job end to end on MovieLens-100K: the quickstart pipeline, "
                                           "then a query to the model it pushed")
    qs.add_argument("--data-dir", help=f"folder with u.data, u.item, u.user (or its parent); default ${DATA_DIR_ENV}")
    qs.add_argument("--workdir", default="artifacts/quickstart", help="where outputs go (default artifacts/quickstart)")
    qs.add_argument("--pipeline", default=QUICKSTART_PIPELINE,
                    help="pipeline config (default: the packaged tfrec/configs/quickstart-pipeline.yaml)")
    qs.add_argument("--config", default=QUICKSTART_RUN_CONFIG,
                    help="run config, in place of the pipeline config's (default: the short run of "
                         "tfrec/configs/quickstart.yaml)")
    qs.set_defaults(func=cmd_quickstart)

    pl = sub.add_parser("pipeline", help="run a pipeline (ingest, transform, pretrain, finetune, evaluate, export, "
                                         "push), each unchanged step skipped")
    from tfrec.pipeline import runner

    runner.add_arguments(pl)
    pl.set_defaults(func=cmd_pipeline)
    return parser


def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            names = ", ".join(f"`{o}`" for o in action.option_strings)
            if action.nargs != 0:
                value = "{" + ",".join(map(str, action.choices)) + "}" if action.choices else (action.metavar or action.dest.upper())
                names += f" `{value}`"
        else:
            names = f"`{action.metavar or action.dest}`"
        need = "yes" if action.required or not action.option_strings else ""
        text = (action.help or "").replace("|", "\\|")
        rows.append(f"| {names} | {need} | {text} |")
    return rows


def cli_reference() -> str:
    """Markdown reference of every command and flag, generated from the parser (docs/cli.md holds it)."""
    import functools

    lines = []

    def walk(parser, path: list[str], help_text: str) -> None:
        subs = list(_subcommands(parser))
        if path and not subs:
            parser.formatter_class = functools.partial(argparse.HelpFormatter, width=100)
            usage = parser.format_usage().replace("usage: ", "", 1).strip()
            lines.extend([f"### `{' '.join(path)}`", "", help_text[:1].upper() + help_text[1:] + ".", "",
                          "```", usage, "```", "", "| argument | required | meaning |", "|---|---|---|",
                          *_option_rows(parser), ""])
        for name, text, sub in subs:
            walk(sub, path + [name], text)

    walk(build_parser(), ["tfrec"], "")
    return "\n".join(lines)


REFERENCE_BEGIN = "<!-- begin: generated by tfrec.cli.cli_reference(); do not edit by hand -->"


REFERENCE_END = "<!-- end: generated -->"


def write_cli_reference(path: str) -> None:
    """Replaces the generated part of `path` (docs/cli.md) with :func:`cli_reference`."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    head, _, rest = text.partition(REFERENCE_BEGIN)
    _, _, tail = rest.partition(REFERENCE_END)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{head}{REFERENCE_BEGIN}\n\n{cli_reference()}\n{REFERENCE_END}{tail}")
