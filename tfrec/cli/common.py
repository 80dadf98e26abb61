"""What the commands share: exit codes, the argument parser class, tables, run configs from flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from tfrec.errors import TfrecError


DATA_DIR_ENV = "TFREC_DATA_DIR"


EXIT_USER_ERROR = 2


EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse with errors as one sentence and exit status 2 (its own convention)."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"tfrec: error: {message} (see `{self.prog} --help`)\n")


def column_map(text: str | None) -> dict[str, str]:
    mapping = {}
    for part in filter(None, (text or "").split(",")):
        if "=" not in part:
            raise TfrecError(f"--columns takes canonical=source pairs such as user_id=userId, not {part!r}")
        key, value = (s.strip() for s in part.split("=", 1))
        mapping[key] = value
    return mapping


def format_table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A Markdown table with aligned columns."""
    cells = [[str(h) for h in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])


def stats_rows(stats: dict) -> list[tuple[str, str]]:
    seq = stats["sequence_length"]
    rows = [
        ("users", f"{stats['num_users']:,}"),
        ("items", f"{stats['num_items']:,}"),
        ("interactions", f"{stats['num_interactions']:,}"),
        ("density", f"{stats['density']:.4%}"),
        ("sequence length min / median / mean / max", f"{seq['min']} / {seq['p50']:g} / {seq['mean']:.2f} / {seq['max']}"),
        ("sequence length p90 / p99", f"{seq['p90']:.1f} / {seq['p99']:.1f}"),
    ]
    for scheme, parts in stats.get("splits", {}).items():
        ordered = sorted(parts.items(), key=lambda kv: ("train", "valid", "test").index(kv[0]))
        rows.append((f"split {scheme}", " / ".join(f"{k} {v:,}" for k, v in ordered)))
    if "ratings" in stats:
        rows.append(("mean rating", f"{stats['ratings']['mean']:.3f}"))
    for table in ("item_features", "user_features"):
        if stats.get(table):
            rows.append((table.replace("_", " "), ", ".join(
                f"{k} ({v:.0%})" if v is not None else k for k, v in stats[table].items())))
    return rows


def flag_bool(text: str) -> bool:
    """A boolean flag value as tensorflow_model_server takes it: true/false or 1/0."""
    value = str(text).strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def run_config_from_args(args, stage: str):
    """The run config of a training command: --config file, then flags, then --set overrides."""
    import yaml

    from tfrec.training.config import RunConfig

    config = RunConfig.from_file(args.config) if args.config else RunConfig()
    overrides = {f"{stage}.epochs": args.epochs, f"{stage}.batch_size": args.batch_size,
                 f"{stage}.learning_rate": args.learning_rate, "seed": args.seed, "strategy": args.strategy,
                 "split": args.split}
    for item in args.set or []:
        if "=" not in item:
            raise TfrecError(f"--set takes KEY=VALUE such as pretrain.mask_rate=0.3, not {item!r}")
        key, value = item.split("=", 1)
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise TfrecError(f"--set {item}: the value cannot be parsed") from None
    for key in overrides:
        section = RunConfig().to_dict()
        for part in key.split("."):
            if not isinstance(section, dict) or part not in section:
                raise TfrecError(f"--set: unknown setting {key!r}")
            section = section[part]
    return config.updated(overrides, where="command-line settings")


def print_summary(record: dict, out: str) -> None:
    summary = record.get("summary", {})
    valid = summary.get("valid", {})
    if valid:
        from tfrec.evaluation.sequential import markdown_table

        print(f"best epoch {summary.get('best_epoch')} of {summary.get('epochs_run')}"
              f"{' (stopped early)' if summary.get('stopped_early') else ''}; validation split:")
        print(markdown_table([(os.path.join(out, "model"), valid)]), end="")
