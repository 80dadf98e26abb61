"""Where a prepared dataset lives: a local folder, or a folder on a store named by a URI that one of
pyarrow's file systems opens (``s3://bucket/path`` on S3 or an S3-compatible store, ``gs://`` on Google
Cloud Storage, ``hdfs://namenode:port/path`` on HDFS with libhdfs, ``file:///path``).

``s3a://`` and ``s3n://`` (Hadoop's names, which Spark users write) mean ``s3://``.  Settings travel in
the URI's query as pyarrow reads them (``s3://bucket/ds?endpoint_override=host:9000&scheme=http``), and
credentials come from the store's usual places (``AWS_ACCESS_KEY_ID`` …, instance roles).  A
:class:`Store` pickles with its file system, so Spark's executors write through the driver's.

A local dataset is written into a staging folder renamed into place when complete
(:func:`tfrec.fileio.atomic_dir`).  An object store cannot rename a folder, so there
:func:`dataset_output` writes in place and ``dataset.json`` last: a reader takes a folder for a
dataset only once that file is there, and a failed preparation deletes what it wrote.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

from tfrec.data import schema
from tfrec.errors import TfrecError
from tfrec.fileio import atomic_dir

SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3"}


def is_remote(location: str) -> bool:
    """True for a URI other than ``file://``: a location this machine's file functions cannot open."""
    scheme, sep, _ = str(location).partition("://")
    return bool(sep) and scheme.lower() != "file" and scheme.isidentifier()


def display(location: str) -> str:
    """`location` as runs, exports and messages record it: a remote URI without its query and credentials."""
    if not is_remote(location):
        return location
    scheme, _, rest = str(location).split("?", 1)[0].partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"


def _local_path(location: str) -> str:
    return location[len("file://"):] if str(location).lower().startswith("file://") else location


class Store:
    """A folder on a local disk or a remote store, with the few operations a prepared dataset needs."""

    def __init__(self, location: str):
        import pyarrow.fs as pafs

        self.location = str(location)
        self.remote = is_remote(self.location)
        if self.remote:
            scheme, _, rest = self.location.partition("://")
            uri = f"{SCHEME_ALIASES.get(scheme.lower(), scheme)}://{rest}"
            try:
                self.fs, root = pafs.FileSystem.from_uri(uri)
            except Exception as e:  # an unknown scheme, a store pyarrow was built without, libhdfs missing
                detail = _first_line(e).replace(uri, display(uri)).replace(self.location, display(self.location))
                raise TfrecError(f"cannot open {display(self.location)}: {detail}") from None
            self.root = root.rstrip("/")
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(_local_path(self.location))

    def path(self, *parts: str) -> str:
        """The file system's path of a file or folder under this one."""
        return "/".join([self.root, *parts]) if self.remote else os.path.join(self.root, *parts)

    def name(self, *parts: str) -> str:
        """How messages and records name it: the URI for a remote store, without its query or credentials."""
        return "/".join([display(self.location).rstrip("/"), *parts]) if self.remote else self.path(*parts)

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except FileNotFoundError:
            raise
        except OSError as e:  # refused credentials, an unreachable store, a full disk
            raise TfrecError(f"cannot {what}: {_first_line(e)}") from None

    def kind(self, *parts: str) -> str:
        """``file``, ``dir`` or ``missing``."""
        import pyarrow.fs as pafs

        info = self._call(f"read {self.name(*parts)}", self.fs.get_file_info, self.path(*parts))
        return {pafs.FileType.File: "file", pafs.FileType.Directory: "dir"}.get(info.type, "missing")

    def exists(self, *parts: str) -> bool:
        return self.kind(*parts) != "missing"

    def listdir(self, *parts: str) -> list[str]:
        """Names in a folder, sorted; empty when it does not exist."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        infos = self._call(f"list {self.name(*parts)}", self.fs.get_file_info, selector)
        return sorted(info.base_name for info in infos)

    def read_bytes(self, *parts: str) -> bytes:
        with self.open_input(*parts) as f:
            return f.read()

    def read_text(self, *parts: str) -> str:
        return self.read_bytes(*parts).decode("utf-8")

    def open_input(self, *parts: str):
        try:
            return self._call(f"read {self.name(*parts)}", self.fs.open_input_stream, self.path(*parts))
        except FileNotFoundError:
            raise TfrecError(f"{self.name(*parts)} does not exist") from None

    def open_output(self, *parts: str):
        """A binary stream writing the file (a local file's folder made first; stores make their own)."""
        if not self.remote:
            os.makedirs(os.path.dirname(self.path(*parts)), exist_ok=True)
        return self._call(f"write {self.name(*parts)}", self.fs.open_output_stream, self.path(*parts))

    def read_parquet(self, *parts: str):
        """A Parquet file, or a folder of part files read in name order, as a DataFrame."""
        import pandas as pd

        if not self.remote:
            return pd.read_parquet(self.path(*parts))
        return self._call(f"read {self.name(*parts)}", lambda: pd.read_parquet(self.path(*parts), filesystem=self.fs))

    def upload(self, local_dir: str, last: tuple[str, ...] = ()) -> None:
        """Copies every file under `local_dir` into this folder, the names in `last` after the rest."""
        files = []
        for folder, _, names in os.walk(local_dir):
            for name in names:
                files.append(os.path.relpath(os.path.join(folder, name), local_dir))
        for rel in sorted(files, key=lambda r: (r in last, r)):
            with open(os.path.join(local_dir, rel), "rb") as src, self.open_output(*rel.split(os.sep)) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)

    def delete(self, *parts: str) -> None:
        """Deletes one file."""
        self._call(f"delete {self.name(*parts)}", self.fs.delete_file, self.path(*parts))

    def delete_contents(self) -> None:
        self._call(f"delete {self.name()}", lambda: self.fs.delete_dir_contents(self.path(), missing_dir_ok=True))


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


@contextlib.contextmanager
def dataset_output(out: str) -> Iterator[tuple[Store, str]]:
    """Where a preparation writes: ``(store, staging)``.  Large files go straight to `store` (Spark's
    executors write them there); the driver's own files go to the local folder `staging`.

    Local `out`: both are one staging folder beside `out`, renamed into place when complete.  Remote
    `out`: an earlier dataset there is deleted first (``dataset.json`` before the rest); a folder that
    holds anything else is refused; the staging folder is uploaded at the end with ``dataset.json``
    last; a failure deletes what was written."""
    if not is_remote(out):
        with atomic_dir(_local_path(out)) as staging:
            yield Store(staging), staging
        return
    store = Store(out)
    names = store.listdir()
    if names and schema.DATASET_JSON not in names:
        raise TfrecError(f"{store.name()} holds files that are not a prepared dataset ({', '.join(names[:3])}"
                         f"{' …' if len(names) > 3 else ''}); choose an empty folder")
    if names:
        store.delete(schema.DATASET_JSON)
        store.delete_contents()
    staging = tempfile.mkdtemp(prefix="tfrec-prepare-")
    try:
        yield store, staging
        store.upload(staging, last=(schema.DATASET_JSON,))
    except BaseException:
        with contextlib.suppress(Exception):
            store.delete_contents()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
