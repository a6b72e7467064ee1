"""Small file helpers every stage uses: the sha256 of a file, and writes a reader never sees half done."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

_HASH_CHUNK = 1 << 20  # 1 MiB reads: the official .bin is 556 MB, never hold it whole just to hash it


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes | None = None, *,
                 write: Callable[[Path], Any] | None = None) -> Path:
    """Write ``data`` (or let ``write(tmp_path)`` write) to a temporary file beside ``path``, then rename.

    A reader never sees half a file, and an interrupted write leaves only the old file (or none).
    The file gets the usual permissions (0666 less the umask), not a temporary file's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if data is not None:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        if write is not None:
            write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
