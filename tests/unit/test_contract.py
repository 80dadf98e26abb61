"""tfrec/contract.py: every key defined once, imported by the parts, and importing nothing itself."""

import ast
import os

from tfrec import contract

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _constants(path: str) -> dict[str, str]:
    """NAME -> string value of the module-level `NAME = "..."` assignments of a file."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id.isupper():
                    out[target.id] = node.value.value
    return out


def test_the_contract_imports_nothing_and_names_the_int_history_apart_from_string_ids():
    tree = ast.parse(open(contract.__file__, encoding="utf-8").read())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [n.module for n in imports if isinstance(n, ast.ImportFrom)] == ["__future__"]
    assert contract.ITEM_INDICES != contract.ITEM_IDS == "item_ids"
    values = [v for k, v in vars(contract).items() if k.isupper() and isinstance(v, str)]
    assert contract.TASKS == ("next-item", "retrieval", "ranking", "multitask", "cold-start")
    assert set(contract.RATED_TASKS) <= set(contract.TASKS) and contract.COLD_SPLIT in contract.TASK_SPLIT_SCHEMES
    assert len(values) > 40


def test_no_module_defines_a_contract_key_again():
    keys = {v: k for k, v in vars(contract).items() if k.isupper() and isinstance(v, str)}
    again = []
    for root, _, files in os.walk(os.path.join(REPO, "tfrec")):
        for name in files:
            path = os.path.join(root, name)
            if not name.endswith(".py") or path == contract.__file__:
                continue
            for const, value in _constants(path).items():
                if value in keys:
                    again.append(f"{os.path.relpath(path, REPO)}: {const} = {value!r} (contract.{keys[value]})")
    assert not again, "\n".join(again)
