"""Open one file, check it is whole, detect its format and extract its rows (runs in worker processes).

A file is whole when every HDU's declared data fits inside the file, nothing but zero padding
follows the last HDU, and it has at least the HDUs its format declares (SDSS datamodel). Per-spectrum
files become :class:`Extracted` rows; summary files become a :class:`SummaryFile` layout that the
ingest runner streams column by column.
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from dataclasses import dataclass

from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from astra_lake.errors import IngestError
from astra_lake.ingest.apogee import read_apstar, read_apvisit
from astra_lake.ingest.boss_mwm import detect, read_boss_spec, read_mwm
from astra_lake.ingest.drp import DrpFile
from astra_lake.ingest.drp import detect as detect_drp
from astra_lake.ingest.drp import kinds as drp_kinds
from astra_lake.ingest.drp import plan as plan_drp
from astra_lake.ingest.extract import Extracted
from astra_lake.ingest.summary import SummaryFile, plan

# The fewest HDUs each format has (SDSS datamodel: apStar 10 since DR12, 11 in DR17; apVisit 12;
# spec-lite 4 (specFull more); mwmStar/mwmVisit 5; summary files 3).
MIN_HDUS = {
    "apStar": 10,
    "apVisit": 12,
    "bossSpec": 4,
    "mwmStar": 5,
    "mwmVisit": 5,
    "astraAllStar": 3,
    "astraAllVisit": 3,
    "mwmAllStar": 3,
    "mwmAllVisit": 3,
    **dict.fromkeys(drp_kinds(), 2),  # reduction-pipeline summaries (data_schema/products/drp/)
}
FORMATS = tuple(MIN_HDUS)
SUMMARIES = ("astraAllStar", "astraAllVisit", "mwmAllStar", "mwmAllVisit")


@dataclass(frozen=True)
class FileId:
    """What identifies a file's content for idempotent re-ingest."""

    path: str
    size: int
    mtime: float
    sha256: str


def regular_file(path: str) -> os.stat_result:
    """``os.stat`` of a regular file; anything else (FIFO, socket, device, folder) is refused, never opened."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise IngestError(f"{path}: cannot read file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "FIFO" if stat.S_ISFIFO(st.st_mode) else "folder" if stat.S_ISDIR(st.st_mode) else "special file"
        raise IngestError(f"{path}: not a regular file ({kind})")
    return st


def file_id(path: str) -> FileId:
    st = regular_file(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return FileId(os.path.abspath(path), st.st_size, st.st_mtime, h.hexdigest())


def read_file(path: str, fmt: str | None = None) -> Extracted | SummaryFile | DrpFile:
    """Extract a file's rows (or a summary file's layout); any problem becomes an :class:`IngestError`
    naming the file (and the HDU, row and column where known)."""
    guess = fmt or "unknown"
    try:
        size = regular_file(path).st_size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
                hdul.verify("silentfix")
                guess = fmt or _detect(hdul)
                if guess not in MIN_HDUS:
                    raise IngestError(f"unknown format {guess!r}; choose one of {', '.join(FORMATS)}")
                check_whole(hdul, path, size, guess)
                return _read(hdul, path, guess)
    except IngestError as exc:
        msg = str(exc)
        err = IngestError(msg if msg.startswith(path) else f"{path}: {msg}", hdu=exc.hdu, row=exc.row, column=exc.column)
    except Exception as exc:  # astropy/numpy raise many types for corrupt files; all mean "cannot read"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        err = IngestError(f"{path}: cannot read as {guess}: {type(exc).__name__}: {first}")
    err.format_guess = guess
    raise err


def _detect(hdul: fits.HDUList) -> str:
    """Per-spectrum and Astra summary formats first; then the declared DRP summaries."""
    try:
        return detect(hdul)
    except IngestError as exc:
        drp = detect_drp(hdul)
        if drp is None:
            raise IngestError(f"{exc}; nor a reduction-pipeline summary ({', '.join(drp_kinds())})") from None
        return drp


def _read(hdul: fits.HDUList, path: str, fmt: str) -> Extracted | SummaryFile | DrpFile:
    if fmt == "apStar":
        return read_apstar(hdul, path).freeze()
    if fmt == "apVisit":
        return read_apvisit(hdul, path).freeze()
    if fmt == "bossSpec":
        return read_boss_spec(hdul, path).freeze()
    if fmt in ("mwmStar", "mwmVisit"):
        return read_mwm(hdul, path, fmt).freeze()
    if fmt in SUMMARIES:
        return plan(hdul, path, fmt)
    return plan_drp(hdul, path, fmt)


def check_whole(hdul: fits.HDUList, path: str, size: int, fmt: str) -> None:
    """Refuse a truncated file: an HDU whose data runs past the end, bytes after the last HDU that are
    not zero padding, or fewer HDUs than the format has. (Compressed files: the decompressor checks.)"""
    if len(hdul) < MIN_HDUS[fmt]:
        least = MIN_HDUS[fmt]
        raise IngestError(f"{path}: {fmt} files have at least {least} HDUs, this one {len(hdul)} (truncated?)", hdu=len(hdul))
    if path.lower().endswith(".gz"):
        return
    for i, hdu in enumerate(hdul):
        info = hdu.fileinfo()
        end = info["datLoc"] + hdu.size
        if end > size:
            raise IngestError(
                f"{path}: HDU {i} declares {hdu.size:,} bytes of data from byte {info['datLoc']:,}, but the file ends at "
                f"byte {size:,} (truncated?)",
                hdu=i,
            )
    last = hdul[-1].fileinfo()
    tail = last["datLoc"] + last["datSpan"]
    if size > tail:
        with open(path, "rb") as fh:
            fh.seek(tail)
            if fh.read(1 << 20).strip(b"\0"):
                raise IngestError(
                    f"{path}: {size - tail:,} bytes after HDU {len(hdul) - 1} are not a complete HDU (truncated?)", hdu=len(hdul)
                )
