"""What an ingest run reads: the FITS files under the given paths, and what could not be read there.

Nothing is opened here. A FIFO, socket or device (given by name or found in a folder), a broken
symbolic link and a folder that cannot be listed are problems to report, never files to open (opening a
FIFO would block). A path that does not exist is an error of the call.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from astra_lake.errors import IngestError

SUFFIXES = (".fits", ".fits.gz", ".fit", ".fts")


@dataclass(frozen=True)
class Problem:
    """A path that was named or found but cannot be read, and why (one line)."""

    path: str
    reason: str


@dataclass
class Inputs:
    files: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def scan_inputs(paths: Iterable[str | os.PathLike[str]]) -> Inputs:
    """FITS files under the given files/folders (sorted, absolute, each once) and the problems met."""
    out = Inputs()
    for p in map(Path, paths):
        if not os.path.lexists(p):
            raise IngestError(f"{p}: no such file or directory")
        if p.is_dir():
            _walk(p, out)
        else:
            _entry(p, out, named=True)
    out.files = sorted(dict.fromkeys(out.files))
    return out


def find_files(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Only the readable FITS files of :func:`scan_inputs`."""
    return scan_inputs(paths).files


def _walk(root: Path, out: Inputs) -> None:
    def unreadable(exc: OSError) -> None:
        out.problems.append(Problem(str(Path(exc.filename or root).absolute()), f"cannot list folder: {exc.strerror or exc}"))

    for folder, dirs, names in os.walk(root, onerror=unreadable):
        dirs.sort()
        for name in sorted(names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]):
            if name.lower().endswith(SUFFIXES):
                _entry(Path(folder) / name, out, named=False)


def _entry(path: Path, out: Inputs, *, named: bool) -> None:
    """A regular file becomes a file to read; anything else that looks like one is a problem."""
    if path.is_symlink() and not path.exists():
        out.problems.append(Problem(str(path.absolute()), f"broken symbolic link to {os.readlink(path)}"))
        return
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        out.problems.append(Problem(str(path.absolute()), f"cannot read file: {exc.strerror or exc}"))
        return
    if stat.S_ISREG(mode):
        out.files.append(str(path.resolve()))
    elif named or not stat.S_ISDIR(mode):
        kind = "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device or special file"
        out.problems.append(Problem(str(path.absolute()), f"not a regular file ({kind})"))
