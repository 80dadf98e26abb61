"""``tfrec data prepare`` and ``tfrec data stats``."""

from __future__ import annotations

import json
import sys

from tfrec.cli.common import column_map, format_table, stats_rows
from tfrec.data.store import display
from tfrec.errors import TfrecError


def cmd_data_prepare(args) -> int:
    from tfrec.data import dataset, loaders, preprocess

    path = args.path
    if path is None and args.source not in loaders.TABLE_SOURCES:
        path = loaders.local_copy(args.source)
    kwargs = {}
    if args.source == "amazon-s3rec" and args.name:
        kwargs["name"] = args.name
    if args.source in loaders.TABLE_SOURCES:
        kwargs.update(columns=column_map(args.columns), items=args.items, users=args.users,
                      list_columns=tuple(filter(None, (args.list_columns or "").split(","))),
                      sep=args.sep, order_as_time=args.order_as_time)
    config = preprocess.PrepareConfig(
        rating_threshold=args.rating_threshold, min_user_interactions=args.min_user_interactions,
        min_item_interactions=args.min_item_interactions, dedupe=args.dedupe,
        loo_min_length=args.loo_min_length, random_test_fraction=args.test_fraction,
        temporal_test_fraction=args.test_fraction, seed=args.seed, format=args.format, shards=args.shards,
    )
    if args.engine == "spark":
        from tfrec.data import spark_engine, spark_source

        prepared = spark_engine.prepare_source(
            args.source, path, kwargs, args.out, config, args.spark_master, spark_source.parse_conf(args.spark_conf),
            log=lambda message: print(f"tfrec: {message}", file=sys.stderr))
    else:
        if args.spark_conf or args.spark_master:
            raise TfrecError("--spark-master and --spark-conf apply to --engine spark only")
        print(f"tfrec: loading {args.source}" + (f" from {path}" if path else " (cache or download)"), file=sys.stderr)
        raw = loaders.load(args.source, path, **kwargs)
        prepared = dataset.prepare(raw, args.out, config)
    print(f"tfrec: wrote {display(args.out)}", file=sys.stderr)
    print(format_table(stats_rows(prepared.stats), ("statistic", "value")))
    return 0


def cmd_data_forget(args) -> int:
    import os

    from tfrec.data import forget

    roots = args.search or [os.path.dirname(os.path.abspath(args.dir))]
    prepared, fingerprint, removed = forget.forget(args.dir, args.user)
    users = len(dict.fromkeys(args.user))
    print(f"tfrec: removed {removed:,} interactions of {users} user{'s' * (users != 1)} from {args.dir}",
          file=sys.stderr)
    print(format_table(stats_rows(prepared.stats), ("statistic", "value")))
    found = forget.trained_on(fingerprint, roots)
    if found:
        print("\ntrained on the data before (retrain them, and remove the old exports):")
        print(format_table([(kind, folder) for kind, folder in found], ("kind", "folder")))
    else:
        print(f"\nno run or export under {', '.join(roots)} was trained on the data before")
    return 0


def cmd_data_stats(args) -> int:
    from tfrec.data.dataset import PreparedDataset

    from tfrec.evaluation import test_reads

    prepared = PreparedDataset(args.dir)
    reads = test_reads.summary(args.dir)
    if args.json:
        print(json.dumps(dict(prepared.stats, test_reads=reads), indent=2, sort_keys=True))
    else:
        print(f"{prepared.meta['source']} ({args.dir})")
        rows = stats_rows(prepared.stats) + [
            ("test split reads", f"{reads['reads']} (by {reads['configs']} distinct configs, "
                                 f"{reads['scored']} models or baselines; {test_reads.FILE})")]
        print(format_table(rows, ("statistic", "value")))
    return 0
