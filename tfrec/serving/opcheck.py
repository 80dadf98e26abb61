"""Load-time safety: the ops a SavedModel could run, checked against a deny-list before it loads.

A SavedModel is a program: a graph with ``ReadFile``, ``WriteFile`` or ``PyFunc`` ops would read,
write or run whatever its author chose as soon as a request (or its warmup, or a resource
initialiser at load) reaches them.  TensorFlow Serving does not look; the embedded server does,
before ``tf.saved_model.load`` runs anything: every node of the graph and of every function the
graph can call is read from ``saved_model.pb`` and refused when its op is on the list below.

The functions ``tf.saved_model.save`` writes for its own checkpoint saver (``SaveV2``,
``RestoreV2``...) are the one exception: they hang off the ``saver_def``'s save and restore
nodes, which nothing else calls and which ``tf.saved_model.load`` never runs (it restores the
variables itself).  Every other function, called from a signature or not, is checked.
"""

from __future__ import annotations

from tensorflow.core.protobuf import saved_model_pb2

# Ops that touch the file system, run Python, or write outside the graph's own outputs.
DENIED_OPS = frozenset({
    # files
    "ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst", "FixedLengthRecordReader",
    "FixedLengthRecordReaderV2", "TFRecordReader", "TFRecordReaderV2", "TextLineReader", "TextLineReaderV2",
    "WholeFileReader", "WholeFileReaderV2", "IdentityReader", "IdentityReaderV2", "LMDBReader",
    "TFRecordDataset", "TFRecordDatasetV2", "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2",
    "TextLineDataset", "LMDBDataset", "ExperimentalLMDBDataset", "SaveDataset", "SaveDatasetV2",
    "LoadDataset", "ExperimentalSaveDataset", "DatasetToTFRecord", "ExperimentalDatasetToTFRecord",
    "CacheDataset", "CacheDatasetV2", "SnapshotDataset", "SnapshotDatasetV2", "SnapshotDatasetReader",
    "LoadAndRemapMatrix",
    "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice", "MergeV2Checkpoints",
    "WriteFileSummary", "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary", "WriteScalarSummary",
    "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary", "WriteGraphSummary", "WriteRawProtoSummary",
    "ImportEvent", "FlushSummaryWriter", "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount",
    "DebugNumericSummary", "DebugNumericSummaryV2", "FileSystemSetConfiguration",
    # Python and other code from outside the graph
    "PyFunc", "PyFuncStateless", "EagerPyFunc",
})

# Allowed when their file name comes from the model's assets, refused when it is a constant path.
TEXT_FILE_TABLES = frozenset({"InitializeTableFromTextFile", "InitializeTableFromTextFileV2"})


class ForbiddenOpsError(Exception):
    """A SavedModel holds denied ops; the message names them and where they are."""


def _saver_nodes(meta_graph) -> set[str]:
    saver = meta_graph.saver_def
    return {name.split(":")[0] for name in (saver.save_tensor_name, saver.restore_op_name) if name}


def _called(node) -> list[str]:
    """Names of the functions a node calls (``f``, ``then_branch``, ``body``... attributes)."""
    names = []
    for attr in node.attr.values():
        if attr.HasField("func"):
            names.append(attr.func.name)
        names.extend(f.name for f in attr.list.func)
    if node.op not in ("Placeholder", "Const") and not node.op[0].islower():
        names.append(node.op)  # a node may call a library function by using its name as the op
    return names


def denied_ops(proto: saved_model_pb2.SavedModel) -> dict[str, list[str]]:
    """Denied op -> where it is (``graph`` or ``function NAME``), over the graph and the functions it can call."""
    found: dict[str, list[str]] = {}
    for meta_graph in proto.meta_graphs:
        functions = {f.signature.name: f for f in meta_graph.graph_def.library.function}
        saver = _saver_nodes(meta_graph)
        # The saver's own functions: reachable from its save/restore nodes and from nothing else.
        saver_only = _reachable([n for n in meta_graph.graph_def.node if n.name in saver], functions)
        others = _reachable([n for n in meta_graph.graph_def.node if n.name not in saver], functions)
        graph = [n for n in meta_graph.graph_def.node if n.name not in saver]
        for op in _denied_in(graph):
            found.setdefault(op, []).append("graph")
        for name, function in functions.items():
            if name in saver_only and name not in others:
                continue
            for op in _denied_in(function.node_def):
                found.setdefault(op, []).append(f"function {name}")
    return found


def _denied_in(nodes) -> list[str]:
    """The denied ops among `nodes` (one graph or function body).

    A vocabulary table read from a file (``InitializeTableFromTextFileV2``) is how SavedModels ship
    their id lookups: the file is an asset of the model, handed to the initialiser as an argument.
    It is refused only when the file name is a constant written into the graph, which points the
    table at a file of the author's choosing rather than at the model's own asset.
    """
    producers = {n.name: n.op for n in nodes}
    denied = []
    for node in nodes:
        if node.op in TEXT_FILE_TABLES:
            source = node.input[1].lstrip("^").split(":")[0] if len(node.input) > 1 else ""
            if producers.get(source) == "Const":
                denied.append(node.op)
        elif node.op in DENIED_OPS:
            denied.append(node.op)
    return denied


def _reachable(nodes, functions: dict) -> set[str]:
    seen: set[str] = set()
    stack = [name for node in nodes for name in _called(node)]
    while stack:
        name = stack.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        stack.extend(called for node in functions[name].node_def for called in _called(node))
    return seen


def check_saved_model(path: str, proto: saved_model_pb2.SavedModel) -> None:
    """Raises :class:`ForbiddenOpsError` when the SavedModel at `path` holds a denied op."""
    found = denied_ops(proto)
    if found:
        where = "; ".join(f"{op} (in {', '.join(sorted(set(places))[:3])})" for op, places in sorted(found.items()))
        raise ForbiddenOpsError(f"{path} holds ops the server refuses to run (file access or Python): {where}")
