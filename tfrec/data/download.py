"""Downloads of the public originals into a local cache (``~/.cache/tfrec``)."""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile

from tfrec.errors import TfrecError

CACHE_ENV = "TFREC_CACHE_DIR"


def cache_root() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "tfrec")


def _fetch(url: str, dest: str, timeout: float = 60.0) -> None:
    """Downloads `url` to `dest` through a temporary file, so a failed download leaves nothing."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=".download-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def ensure_files(
    name: str,
    urls: dict[str, str],
    required: list[str],
    archive_subdir: str | None = None,
    hint: str = "",
) -> str:
    """Returns a cache folder holding `required` files, downloading them when missing.

    Args:
        name: the cache sub-folder, e.g. ``movielens-100k``.
        urls: file name -> URL; a ``.zip`` is unpacked and its ``archive_subdir`` kept.
        required: files that must exist in the folder afterwards.
        hint: what to pass instead when the machine is offline.
    """
    folder = os.path.join(cache_root(), name)
    if all(os.path.exists(os.path.join(folder, f)) for f in required):
        return folder
    staging = tempfile.mkdtemp(prefix=f".{name}-", dir=os.path.dirname(folder) if os.path.isdir(os.path.dirname(folder)) else None)
    try:
        for fname, url in urls.items():
            target = os.path.join(staging, fname)
            try:
                _fetch(url, target)
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                reason = getattr(e, "reason", e)
                raise TfrecError(
                    f"{name} is not in the cache ({folder}) and could not be downloaded from {url} "
                    f"({reason}); on a machine without network, {hint or 'pass --path DIR with a local copy'}"
                ) from None
            if fname.endswith(".zip"):
                with zipfile.ZipFile(target) as zf:
                    zf.extractall(staging)
                os.remove(target)
        src = os.path.join(staging, archive_subdir) if archive_subdir else staging
        missing = [f for f in required if not os.path.exists(os.path.join(src, f))]
        if missing:
            raise TfrecError(f"the download of {name} lacks {', '.join(missing)}; the upstream files may have moved")
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        if os.path.exists(folder):
            shutil.rmtree(folder)
        os.replace(src, folder)
        return folder
    finally:
        shutil.rmtree(staging, ignore_errors=True)
