"""apStar (DR17 and SDSS-V) and apVisit (DR16/DR17/DR19) readers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from astra_lake.errors import IngestError
from astra_lake.ingest.extract import (
    SOURCE_REF,
    Extracted,
    clean_flux,
    finite_or_none,
    require_position,
    sigma_to_ivar,
)
from astra_lake.schema.loader import load_schema

APOGEE_NPIX = load_schema().grids["apogee"].npix  # data_schema/common.yaml grids


def header_cards(table: str) -> dict[str, str]:
    """Column -> header card copied (as a finite float or null) into it: ``fits_card`` of data_schema/tables/."""
    return {c.name: c.fits_card for c in load_schema().table(table).columns if c.fits_card}


APSTAR_CARDS = header_cards("apogee_star")
APVISIT_CARDS = header_cards("apogee_visit")
_VISIT_NAME = re.compile(
    r"ap(?:Visit)-(?P<apred>[\w.]+)-(?:(?P<tel>apo25m|lco25m|apo1m)-)?(?P<plate>[\w]+)-(?P<mjd>\d+)-(?P<fiber>\d+)"
)


def _source(ext: Extracted, hdr: fits.Header, path: str) -> str:
    ra, dec = require_position(path, hdr.get("RA"), hdr.get("DEC"))
    apogee_id = str(hdr.get("OBJID") or "").strip() or None
    sdss_id = hdr.get("SDSS_ID")
    key = f"sdss_id:{sdss_id}" if sdss_id not in (None, "", -1) else f"apogee:{apogee_id}"
    if apogee_id is None and sdss_id in (None, "", -1):
        raise IngestError(f"{path}: header has neither SDSS_ID nor OBJID; cannot tell which source this is")
    ext.add(
        "source",
        {
            "source_key": key,
            "sdss_id": sdss_id if sdss_id not in ("", -1) else None,
            "sdss4_apogee_id": apogee_id,
            "ra": ra,
            "dec": dec,
            "j_mag": finite_or_none(hdr.get("J")),
            "e_j_mag": finite_or_none(hdr.get("J_ERR")),
            "h_mag": finite_or_none(hdr.get("H")),
            "e_h_mag": finite_or_none(hdr.get("H_ERR")),
            "k_mag": finite_or_none(hdr.get("K")),
            "e_k_mag": finite_or_none(hdr.get("K_ERR")),
        },
        hdu=0,
    )
    return key


def _cards(hdr: fits.Header, cards: dict[str, str]) -> dict[str, float | None]:
    return {col: finite_or_none(hdr.get(card)) for col, card in cards.items()}


def _image(hdul: fits.HDUList, i: int, path: str, what: str) -> np.ndarray:
    try:
        data = hdul[i].data
    except (IndexError, OSError, TypeError, ValueError) as exc:
        raise IngestError(f"{path}: HDU {i} ({what}) missing or unreadable: {exc}") from None
    if data is None:
        raise IngestError(f"{path}: HDU {i} ({what}) is empty")
    return np.atleast_2d(np.asarray(data))


def read_apstar(hdul: fits.HDUList, path: str) -> Extracted:
    """Coadd row -> apogee_star; one row per visit -> apogee_visit_in_apstar."""
    hdr = hdul[0].header
    name = Path(path).name
    release = "dr17" if "dr17" in name else str(hdr.get("APRED") or hdr.get("V_APRED") or "sdss5")
    apred = str(hdr.get("APRED") or (name.split("-")[1] if name.count("-") >= 2 else release))
    telescope = str(hdr.get("TELESCOP") or ("lco25m" if name.startswith("asStar") else "apo25m"))
    npix = int(hdr.get("NWAVE", 0))
    flux, sigma, mask = (_image(hdul, i, path, w) for i, w in ((1, "flux"), (2, "error"), (3, "mask")))
    for arr, what in ((flux, "flux"), (sigma, "error"), (mask, "mask")):
        if arr.shape[-1] != npix or npix != APOGEE_NPIX:
            raise IngestError(
                f"{path}: {what} image has {arr.shape[-1]} pixels per row, header NWAVE={npix}; expected {APOGEE_NPIX}"
            )
    crval, cdelt = float(hdr.get("CRVAL1", np.nan)), float(hdr.get("CDELT1", np.nan))
    if not (abs(crval - 4.179) < 1e-9 and abs(cdelt - 6e-6) < 1e-12):
        raise IngestError(f"{path}: wavelength grid CRVAL1={crval} CDELT1={cdelt} is not the APOGEE grid (4.179, 6e-6)")
    ext = Extracted(path, "apStar")
    key = _source(ext, hdr, path)
    n_visits = int(hdr.get("NVISITS", 0))
    n_rows = flux.shape[0]
    # Row 0 is the coadd; with more than two rows the visits start at row 2. A single-visit star
    # still has two coadd rows (the second all zeros) and its visit is the coadd itself.
    visit_rows = list(range(2, 2 + n_visits)) if n_rows > 2 else [0] * min(n_visits, 1)
    if n_rows > 2 and n_rows < 2 + n_visits:
        raise IngestError(f"{path}: NVISITS={n_visits} but the images have only {n_rows} rows")
    jds = [finite_or_none(hdr.get(f"JD{i + 1}")) for i in range(n_visits)]
    mjds = [int(jd - 2400000.5) for jd in jds if jd is not None]
    common = {
        "release": release,
        "apred": apred,
        "apstar": "stars",
        "obj": str(hdr.get("OBJID")).strip(),
        "telescope": telescope,
        "field": str(hdr.get("FIELD") or "").strip(),
        "filetype": "apStar",
        SOURCE_REF: key,
    }
    f0, iv0 = clean_flux(flux[0], sigma_to_ivar(sigma[0]))
    ext.add(
        "apogee_star",
        common
        | {
            "flux": f0,
            "ivar": iv0,
            "pixel_flags": mask[0].astype(np.int32),
            "n_visits": n_visits,
            "n_entries": n_rows,
            "min_mjd": min(mjds) if mjds else None,
            "max_mjd": max(mjds) if mjds else None,
            "spectrum_flags": int(hdr.get("STARFLAG", 0)),
            "n_components": hdr.get("N_COMP"),
        }
        | _cards(hdr, APSTAR_CARDS),
        hdu=1,
        hdu_row=0,
    )
    for i, row in enumerate(visit_rows):
        sfile = str(hdr.get(f"SFILE{i + 1}") or "")
        m = _VISIT_NAME.search(sfile)
        fv, iv = clean_flux(flux[row], sigma_to_ivar(sigma[row]))
        ext.add(
            "apogee_visit_in_apstar",
            {k: v for k, v in common.items() if k != "field"}
            | {
                "field": common["field"],
                "filetype": "apStar",
                "flux": fv,
                "ivar": iv,
                "pixel_flags": mask[row].astype(np.int32),
                "plate": m.group("plate") if m else str(i),
                "mjd": int(m.group("mjd")) if m else (mjds[i] if i < len(mjds) else None),
                "fiber": int(hdr.get(f"FIBER{i + 1}", m.group("fiber") if m else -1)),
            },
            hdu=1,
            hdu_row=row,
        )
    return ext


def read_apvisit(hdul: fits.HDUList, path: str) -> Extracted:
    """One visit on its native grid (chips and pixels re-ordered to ascending wavelength) -> apogee_visit."""
    hdr = hdul[0].header
    flux, sigma, mask, wave = (_image(hdul, i, path, w) for i, w in ((1, "flux"), (2, "error"), (3, "mask"), (4, "wavelength")))
    if not (flux.shape == sigma.shape == mask.shape == wave.shape) or flux.shape[0] != 3:
        raise IngestError(
            f"{path}: flux/error/mask/wavelength shapes {flux.shape}/{sigma.shape}/{mask.shape}/{wave.shape}; expected 3 x N each"
        )
    w = wave[::-1, ::-1].reshape(-1).astype(np.float64)
    if not np.all(np.isfinite(w)) or np.any(np.diff(w) <= 0):
        raise IngestError(f"{path}: wavelength HDU is not monotonic once chips are ordered")
    npix = 12288
    if w.size > npix:
        raise IngestError(f"{path}: {w.size} pixels, more than the {npix} the apogee_visit grid holds")
    pad = npix - w.size
    f, iv = clean_flux(flux[::-1, ::-1].reshape(-1), sigma_to_ivar(sigma[::-1, ::-1].reshape(-1)))
    ext = Extracted(path, "apVisit")
    key = _source(ext, hdr, path)
    name = Path(path).name
    m = _VISIT_NAME.search(name)
    apred = m.group("apred") if m else str(hdr.get("V_APRED") or "")
    row: dict[str, Any] = {
        "release": "dr16" if apred.startswith("r1") else ("dr17" if apred == "dr17" else "sdss5"),
        "filetype": "apVisit",
        "apred": apred,
        "plate": str(hdr.get("PLATE")).strip(),
        "telescope": str(hdr.get("TELESCOP") or "apo25m").strip(),
        "fiber": int(hdr.get("FIBERID")),
        "mjd": int(hdr.get("MJD5")),
        "field": str(hdr.get("FIELD") or hdr.get("LOCID") or "").strip(),
        "obj": str(hdr.get("OBJID") or "").strip(),
        "date_obs": None,
        "n_frames": hdr.get("NCOMBINE"),
        "spectrum_flags": int(hdr.get("STARFLAG", 0)),
        "wavelength": np.r_[w, np.full(pad, np.nan)],
        "flux": np.r_[f, np.zeros(pad, np.float32)],
        "ivar": np.r_[iv, np.zeros(pad, np.float32)],
        "pixel_flags": np.r_[mask[::-1, ::-1].reshape(-1).astype(np.int32), np.zeros(pad, np.int32)],
        SOURCE_REF: key,
    } | _cards(hdr, APVISIT_CARDS)
    ext.add("apogee_visit", row, hdu=1)
    return ext
