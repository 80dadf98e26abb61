"""The ``tfrec`` command line.

User mistakes (a missing file, a wrong column, a bad flag value) print one
sentence to stderr and exit with status 2; an interrupt exits with 130 and
leaves no partial output behind.

Split by what the commands do: :mod:`.data_commands`, :mod:`.train_commands`, :mod:`.serve_commands`;
:mod:`.parser` builds the parser and the reference in docs/cli.md; :mod:`.common` holds what they share.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from tfrec.cli.common import EXIT_INTERRUPTED, EXIT_USER_ERROR, TfrecError, format_table, stats_rows  # noqa: F401
from tfrec.cli.parser import build_parser, cli_reference, write_cli_reference  # noqa: F401

__all__ = ["EXIT_INTERRUPTED", "EXIT_USER_ERROR", "build_parser", "cli_reference", "format_table", "main",
           "stats_rows", "write_cli_reference"]


def main(argv: Sequence[str] | None = None) -> int:
    from tfrec.allocator import keep_freed_memory

    keep_freed_memory()  # before TensorFlow allocates anything: see tfrec/allocator.py
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USER_ERROR
    try:
        return int(func(args) or 0)
    except TfrecError as e:
        print(f"tfrec: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("tfrec: interrupted; nothing partial was left behind", file=sys.stderr)
        return EXIT_INTERRUPTED
