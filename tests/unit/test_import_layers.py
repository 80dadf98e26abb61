"""Imports run one way: contract <- data <- models <- evaluation <- training <- export <- pipeline <- cli,
serving apart; no module reaches into another's private names."""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(REPO, "tfrec")
# The layer of each part (a module may import its own layer and those below).
LAYERS = {"contract": 0, "errors": 0, "fileio": 0, "allocator": 0, "data": 1, "models": 2, "evaluation": 3,
          "training": 4, "export": 5, "notebook": 6, "pipeline": 6, "cli": 7, "__main__": 8, "__init__": 8}
SERVING_MAY_IMPORT = {"contract", "errors", "serving"}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else "__init__"


def _modules():
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                yield (rel[:-len(".__init__")] if rel.endswith(".__init__") else rel), path


def _imports(path: str):
    """(imported tfrec module, names) of every import in a file, at any depth."""
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfrec"):
            yield node.module, [a.name for a in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("tfrec"):
                    yield a.name, [], node.lineno


def test_no_module_imports_a_layer_above_its_own_and_serving_stays_apart():
    wrong = []
    for module, path in _modules():
        part = _part(module)
        for imported, names, line in _imports(path):
            targets = [f"tfrec.{n}" for n in names] if imported == "tfrec" else [imported]
            for target in targets:
                other = _part(target)
                if part == "serving":
                    if other not in SERVING_MAY_IMPORT:
                        wrong.append(f"{module}:{line} imports {target} (serving imports TensorFlow and the protos only)")
                    continue
                if other == "serving":
                    continue  # the CLI and notebooks start the server
                if part in LAYERS and other in LAYERS and LAYERS[other] > LAYERS[part]:
                    wrong.append(f"{module}:{line} imports {target}, a layer above it")
    assert not wrong, "\n".join(wrong)


def test_no_module_uses_another_modules_private_names():
    wrong = []
    for module, path in _modules():
        tree = ast.parse(open(path, encoding="utf-8").read())
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfrec"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        wrong.append(f"{module}:{node.lineno} imports {node.module}.{a.name}")
                    aliases.add(a.asname or a.name)
            elif isinstance(node, ast.Import):
                aliases.update((a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("tfrec"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                    and node.attr.startswith("_") and not node.attr.startswith("__"):
                wrong.append(f"{module}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not wrong, "\n".join(wrong)
