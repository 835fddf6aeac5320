"""OS faults (read-only file system, disk full, permission denied) as one-line errors naming path and cause.

Some libraries lose the cause on the way (deltalake reports "Generic LocalFileSystem error"); the file
system of the path is then asked directly."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from astra_lake.errors import StorageError

CAUSES = {
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def cause(exc: BaseException, path: Path) -> str:
    """Why writing under ``path`` failed, in a few words."""
    code = getattr(exc, "errno", None)
    if code in CAUSES:
        return CAUSES[code]
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        fs = os.statvfs(probe)
    except OSError:
        fs = None
    if fs is not None and fs.f_flag & os.ST_RDONLY:
        return "read-only file system"
    if fs is not None and fs.f_bavail == 0:
        return "no space left on device"
    if not os.access(probe, os.W_OK):
        return "permission denied"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0].lower()


def storage_error(exc: BaseException, path: Path, doing: str = "cannot write") -> StorageError:
    """``<path>: <doing> (<cause>)``, with the path the error names when it names one."""
    where = Path(getattr(exc, "filename", None) or path)
    return StorageError(f"{where}: {doing} ({cause(exc, where)})")
