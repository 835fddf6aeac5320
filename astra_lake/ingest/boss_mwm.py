"""BOSS spec / specFull / spec-lite and mwmStar / mwmVisit readers; the format of any supported file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from astra_lake.errors import IngestError
from astra_lake.ingest.extract import SOURCE_REF, SPECTRUM_REF, Extracted, finite_or_none, require_position
from astra_lake.schema.loader import load_schema
from astra_lake.schema.versions import version_to_int

BOSS_NPIX = load_schema().grids["boss_native"].npix  # the spec-file COADD grid (data_schema/common.yaml grids)
MWM_HDUS = {"BOSS/APO": "boss", "BOSS/LCO": "boss", "APOGEE/APO": "apogee", "APOGEE/LCO": "apogee"}


def _col(table: Any, *names: str) -> np.ndarray | None:
    lower = {n.lower(): n for n in table.columns.names}
    for n in names:
        if n.lower() in lower:
            return np.asarray(table[lower[n.lower()]])
    return None


def read_boss_spec(hdul: fits.HDUList, path: str) -> Extracted:
    """COADD + SPALL of a spec / specFull / spec-lite file -> one boss_visit row on its native grid."""
    hdr = hdul[0].header
    coadd = hdul["COADD"].data
    loglam, flux, ivar = (_col(coadd, n) for n in ("loglam", "flux", "ivar"))
    if loglam is None or flux is None or ivar is None:
        raise IngestError(f"{path}: COADD lacks loglam/flux/ivar columns")
    n = len(loglam)
    if n > BOSS_NPIX or n == 0:
        raise IngestError(f"{path}: COADD has {n} pixels; expected 1..{BOSS_NPIX}")
    if not np.all(np.isfinite(ivar)):
        raise IngestError(
            f"{path}: COADD ivar has non-finite values (first at pixel {int(np.flatnonzero(~np.isfinite(ivar))[0])})"
        )
    if np.any(ivar < 0):
        raise IngestError(f"{path}: COADD ivar is negative at pixel {int(np.flatnonzero(ivar < 0)[0])}; expected >= 0")
    if np.any(np.diff(loglam) <= 0):
        raise IngestError(f"{path}: COADD loglam is not increasing")
    spall = hdul["SPALL"].data if "SPALL" in hdul else None

    def meta(*names: str) -> Any:
        if spall is not None:
            v = _col(spall, *names)
            if v is not None and len(v):
                return v[0]
        for name in names:
            if name in hdr:
                return hdr[name]
        return None

    plate, mjd, fiber = meta("PLATE", "FIELD", "PLATEID"), meta("MJD"), meta("FIBERID")
    run2d = str(meta("RUN2D") or "").strip()
    ra, dec = require_position(path, meta("PLUG_RA", "RACAT", "RA"), meta("PLUG_DEC", "DECCAT", "DEC"))
    sdss_id, catalogid = meta("SDSS_ID"), meta("CATALOGID")
    key = (
        f"sdss_id:{sdss_id}"
        if sdss_id not in (None, -1)
        else f"catalogid:{catalogid}"
        if catalogid not in (None, -1, 0)
        else f"sdss_boss:{plate}-{mjd}-{fiber}"
    )
    ext = Extracted(path, "bossSpec")
    ext.add(
        "source",
        {
            "source_key": key,
            "sdss_id": None if sdss_id in (None, -1) else sdss_id,
            "ra": ra,
            "dec": dec,
            "catalogid": None if catalogid in (None, -1, 0) else catalogid,
        },
        hdu=2 if spall is not None else 0,
        hdu_row=0 if spall is not None else None,
    )
    f = np.asarray(flux, dtype=np.float32)
    iv = np.asarray(ivar, dtype=np.float32).copy()
    iv[~np.isfinite(f)] = 0
    f = np.where(np.isfinite(f), f, 0).astype(np.float32)
    pad = BOSS_NPIX - n
    or_mask = _col(coadd, "or_mask")
    ext.add(
        "boss_visit",
        {
            "release": "sdss4" if run2d.startswith("v5") else "sdss5",
            "filetype": "specFull" if len(hdul) > 4 else "specLite",
            "run2d": run2d,
            "mjd": int(mjd),
            "fieldid": int(plate),
            "fiberid": int(fiber),
            "catalogid": None if catalogid in (None, -1, 0) else catalogid,
            "spec_file": Path(path).name,
            "n_exp": meta("NEXP"),
            "exptime": finite_or_none(meta("EXPTIME")),
            "plateid": int(plate),
            "cartid": meta("CARTID"),
            "mapid": meta("MAPID"),
            "psfsky": meta("PSFSKY"),
            "preject": finite_or_none(meta("PREJECT")),
            "n_std": meta("NSTD"),
            "lowrej": meta("LOWREJ"),
            "highrej": meta("HIGHREJ"),
            "scatpoly": meta("SCATPOLY"),
            "proftype": meta("PROFTYPE"),
            "nfitpoly": meta("NFITPOLY"),
            "skychi2": finite_or_none(meta("SKYCHI2")),
            "schi2min": finite_or_none(meta("SCHI2MIN")),
            "schi2max": finite_or_none(meta("SCHI2MAX")),
            "airmass": finite_or_none(meta("AIRMASS")),
            "snr": finite_or_none(meta("SN_MEDIAN_ALL")),
            "zwarning_flags": int(meta("ZWARNING") or 0),
            "xcsao_v_rad": finite_or_none(meta("XCSAO_RV")),
            "xcsao_e_v_rad": finite_or_none(meta("XCSAO_ERV")),
            "xcsao_teff": finite_or_none(meta("XCSAO_TEFF")),
            "xcsao_logg": finite_or_none(meta("XCSAO_LOGG")),
            "xcsao_fe_h": finite_or_none(meta("XCSAO_FEH")),
            "xcsao_rxc": finite_or_none(meta("XCSAO_RXC")),
            "wavelength": np.r_[10.0 ** np.asarray(loglam, dtype=np.float64), np.full(pad, np.nan)],
            "flux": np.r_[f, np.zeros(pad, np.float32)],
            "ivar": np.r_[iv, np.zeros(pad, np.float32)],
            "pixel_flags": np.r_[
                np.asarray(or_mask if or_mask is not None else np.zeros(n), dtype=np.int32), np.zeros(pad, np.int32)
            ],
            SOURCE_REF: key,
        },
        hdu=1,
    )
    return ext


def _source_from_primary(ext: Extracted, hdr: fits.Header, path: str) -> str:
    ra, dec = require_position(path, hdr.get("RA"), hdr.get("DEC"))
    sdss_id = hdr.get("SDSS_ID")
    if sdss_id in (None, "", -1):
        raise IngestError(f"{path}: primary header has no SDSS_ID")
    key = f"sdss_id:{int(sdss_id)}"
    aliases = {
        "cat_id": "catalogid",
        "gaia3_id": "gaia_dr3_source_id",
        "gaia2_id": "gaia_dr2_source_id",
        "apogeeid": "sdss4_apogee_id",
        "tic_id": "tic_v8_id",
    }
    row: dict[str, Any] = {"source_key": key, "sdss_id": int(sdss_id), "ra": ra, "dec": dec}
    source_cols = set(load_schema().table("source").column_names) - {"created", "modified", "source_pk", "_healpix_29"}
    for card, value in hdr.items():
        name = aliases.get(card.lower(), card.lower())
        if name in source_cols and name not in row and value not in ("NaN", ""):
            row[name] = value
    ext.add("source", row, hdu=0)
    return key


def _table_rows(data: Any, table: str, extra: dict[str, Any], path: str) -> list[dict[str, Any]]:
    tbl = load_schema().table(table)
    names = {n.lower(): n for n in data.columns.names}
    rows = []
    for i in range(len(data)):
        row: dict[str, Any] = dict(extra)
        for c in tbl.columns:
            if c.name in names and c.name not in ("spectrum_pk", "source_pk", "task_pk", "created", "modified", "wavelength"):
                v = data[names[c.name]][i]
                if c.name == "v_astra" and isinstance(v, str | bytes):
                    text = (v.decode() if isinstance(v, bytes) else v).strip()
                    v = version_to_int(text) if text.count(".") >= 1 else extra.get("v_astra")
                if c.type.startswith("fixed<"):
                    width = int(c.type.split(",")[1].rstrip(">"))
                    v = np.asarray(v)
                    if v.size != width:
                        raise IngestError(f"{path}: {table}.{c.name} row {i} has {v.size} pixels, expected {width}")
                    if c.name == "ivar" and np.any(np.asarray(v, dtype=np.float64) < 0):
                        raise IngestError(f"{path}: {table}.ivar row {i} is negative; expected >= 0")
                if c.name == "sdss5_target_flags":
                    v = _target_bytes(v)
                row[c.name] = v
        rows.append(row)
    return rows


def _target_bytes(v: Any) -> bytes:
    arr = np.asarray(v)
    if arr.dtype == bool:
        return np.packbits(arr, bitorder="little").tobytes()
    return arr.astype(np.uint8).tobytes()


def read_mwm(hdul: fits.HDUList, path: str, kind: str) -> Extracted:
    """mwmStar (-> *_combined) or mwmVisit (-> *_rest_frame_visit); empty telescope HDUs are skipped."""
    ext = Extracted(path, kind)
    key = _source_from_primary(ext, hdul[0].header, path)
    v_astra = version_to_int(str(hdul[0].header.get("V_ASTRA", "0.0.0")))
    for index, hdu in enumerate(hdul):
        instrument = MWM_HDUS.get(hdu.name)
        if instrument is None or hdu.header.get("NAXIS2", 0) == 0:
            continue
        table = f"{instrument}_combined" if kind == "mwmStar" else f"{instrument}_rest_frame_visit"
        for i, row in enumerate(_table_rows(hdu.data, table, {"v_astra": v_astra, SOURCE_REF: key}, path)):
            row.setdefault("sdss_id", int(key.split(":")[1]))
            ext.add(table, row, hdu=index, hdu_row=i)
            _add_nmf_model(ext, hdu.data, (index, i), table, f"model_{instrument}", row, path)
    return ext


NMF = "nmf_rectify"


def _add_nmf_model(
    ext: Extracted, data: Any, at: tuple[int, int], table: str, model_table: str, spectrum: dict[str, Any], path: str
) -> None:
    """The NMF continuum (and, in mwmStar, the rectified model) of row ``at`` = (HDU, row), as an
    ``nmf_rectify`` result with its model spectrum in ``model_<instrument>`` (linked to that result's
    task_pk on ingest). Rows whose continuum is absent or entirely non-finite have no model."""
    hdu, i = at
    continuum = _col(data, "continuum")
    if continuum is None or not np.isfinite(continuum[i]).any():
        return
    schema = load_schema()
    grid = schema.table(model_table).grid
    assert grid is not None
    arrays = {"continuum": np.asarray(continuum[i], np.float32)}
    model = _col(data, "nmf_rectified_model_flux")
    arrays["model_flux"] = np.full(grid.npix, np.nan, np.float32) if model is None else np.asarray(model[i], np.float32)
    for name, values in arrays.items():
        if values.size != grid.npix:
            raise IngestError(f"{path}: {table} row {i} {name} has {values.size} pixels, expected {grid.npix}")
    rchi2, flags = _col(data, "nmf_rchi2"), _col(data, "nmf_flags")
    ref = {SPECTRUM_REF: table, **{f"_sk_{k}": spectrum.get(k) for k in schema.table(table).upsert_key}}
    ext.add(
        NMF,
        {
            "v_astra": spectrum["v_astra"],
            "rchi2": None if rchi2 is None else finite_or_none(rchi2[i]),
            "nmf_flags": 0 if flags is None else int(flags[i]),
            **ref,
        },
        hdu=hdu,
        hdu_row=i,
    )
    ext.add(model_table, {"pipeline": NMF, "v_astra": spectrum["v_astra"], **arrays, **ref}, hdu=hdu, hdu_row=i)


def detect(hdul: fits.HDUList) -> str:
    """The format of an open FITS file, from its header and HDU structure (never its name)."""
    hdr = hdul[0].header
    names = [h.name for h in hdul]
    tables = [h for h in hdul[1:3] if isinstance(h, fits.BinTableHDU)]
    cols = {c.lower() for h in tables for c in h.columns.names}
    per_star = "min_mjd" in cols or "n_visits" in cols
    if "PIPELINE" in hdr and tables:
        return "astraAllStar" if per_star else "astraAllVisit"
    mwm = [h for h in hdul[1:] if h.name in MWM_HDUS]
    if mwm:
        cols = {c.lower() for h in mwm if isinstance(h, fits.BinTableHDU) for c in h.columns.names}
        return "mwmVisit" if ("in_stack" in cols or "drp_spectrum_pk" in cols or "mjd" in cols) else "mwmStar"
    if "COADD" in names:
        return "bossSpec"
    if "NWAVE" in hdr and "CRVAL1" in hdr:
        return "apStar"
    if "FIBERID" in hdr and "PLATE" in hdr and "MJD5" in hdr:
        return "apVisit"
    if len(tables) == 2 and "sdss_id" in cols and "V_ASTRA" in hdr:
        return "mwmAllStar" if per_star else "mwmAllVisit"
    known = "apStar, apVisit, BOSS spec, mwmStar, mwmVisit, astraAllStar, astraAllVisit, mwmAllStar or mwmAllVisit"
    raise IngestError(f"unknown layout: not {known}")
