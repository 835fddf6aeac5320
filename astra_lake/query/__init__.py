"""Read side: DuckDB connections and Polars scans pinned to one snapshot, spectra and cone lookups."""
