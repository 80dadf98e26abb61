"""docs/cli.md holds the reference generated from the parser: every command and flag, current."""

import os

from tests.conftest import REPO
from tfrec import cli
from tfrec.cli import parser as cli_parser


def test_docs_cli_matches_the_parser():
    text = open(os.path.join(REPO, "docs", "cli.md"), encoding="utf-8").read()
    assert cli_parser.REFERENCE_BEGIN in text and cli_parser.REFERENCE_END in text
    committed = text.split(cli_parser.REFERENCE_BEGIN, 1)[1].split(cli_parser.REFERENCE_END, 1)[0].strip()
    assert committed == cli.cli_reference().strip(), (
        "docs/cli.md is out of date; regenerate it with "
        "python -c \"from tfrec.cli import write_cli_reference; write_cli_reference('docs/cli.md')\"")


def test_reference_names_every_command_and_flag():
    reference = cli.cli_reference()
    parser = cli.build_parser()
    commands = [(path, sub) for name, _, p in cli_parser._subcommands(parser)
                for path, sub in ([(f"tfrec {name} {n}", s) for n, _, s in cli_parser._subcommands(p)] or [(f"tfrec {name}", p)])]
    assert {c for c, _ in commands} >= {"tfrec data prepare", "tfrec data stats", "tfrec pretrain", "tfrec finetune",
                                         "tfrec evaluate", "tfrec export", "tfrec push", "tfrec serve", "tfrec query",
                                         "tfrec quickstart"}
    for path, sub in commands:
        section = reference.split(f"### `{path}`", 1)[1].split("\n### ", 1)[0]
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}`" in section, f"{path}: {flag} is missing from the reference"
