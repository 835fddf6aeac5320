"""Open one file, detect its format, and extract its rows (runs in worker processes)."""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass

from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from astra_lake.errors import IngestError
from astra_lake.ingest.apogee import read_apstar, read_apvisit
from astra_lake.ingest.boss_mwm import detect, read_astra_summary, read_boss_spec, read_mwm
from astra_lake.ingest.extract import Extracted

FORMATS = ("apStar", "apVisit", "bossSpec", "mwmStar", "mwmVisit", "astraAllStar", "astraAllVisit")


@dataclass(frozen=True)
class FileId:
    """What identifies a file's content for idempotent re-ingest."""

    path: str
    size: int
    mtime: float
    sha256: str


def file_id(path: str) -> FileId:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    st = os.stat(path)
    return FileId(os.path.abspath(path), st.st_size, st.st_mtime, h.hexdigest())


def read_file(path: str, fmt: str | None = None) -> Extracted:
    """Extract a file's rows; any problem becomes an :class:`IngestError` naming the file."""
    guess = fmt or "unknown"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
                hdul.verify("silentfix")
                guess = fmt or detect(hdul)
                if guess == "apStar":
                    return read_apstar(hdul, path)
                if guess == "apVisit":
                    return read_apvisit(hdul, path)
                if guess == "bossSpec":
                    return read_boss_spec(hdul, path)
                if guess in ("mwmStar", "mwmVisit"):
                    return read_mwm(hdul, path, guess)
                if guess in ("astraAllStar", "astraAllVisit"):
                    return read_astra_summary(hdul, path, guess)
                raise IngestError(f"{path}: unknown format {guess!r}; choose one of {', '.join(FORMATS)}")
    except IngestError as exc:
        msg = str(exc)
        err = IngestError(msg if msg.startswith(path) else f"{path}: {msg}")
    except Exception as exc:  # astropy/numpy raise many types for corrupt files; all mean "cannot read"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        err = IngestError(f"{path}: cannot read as {guess}: {type(exc).__name__}: {first}")
    err.format_guess = guess
    raise err
