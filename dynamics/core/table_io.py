"""Shard-table bytes straight from numpy arrays: the scale stage's fast writer.

A table file is an ``.npz`` (uncompressed zip) of ``version``, ``keys`` (fixed-width UTF-8 bytes, width =
the shard's longest key), ``probs`` (float32) and optionally ``clusters`` (int32). :func:`table_bytes`
builds it from a slice of Arrow-style ``offsets``/``data`` buffers without creating one Python object
per key, which is what made per-shard table writing ~97% of the scale stage. The zip entries carry a
fixed timestamp so the same table always has the same bytes (``np.savez`` stamps the wall clock).
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
from numpy.lib import format as npy_format

TABLE_FORMAT_VERSION = 1
# The earliest time a zip entry can carry: any fixed value makes the bytes reproducible.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """``np.savez`` layout (stored, zip64 entries named ``<name>.npy``) with reproducible bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_STORED
            with zf.open(info, "w", force_zip64=True) as fid:
                npy_format.write_array(fid, np.asanyarray(arr), allow_pickle=False)
    return buf.getvalue()


def fixed_width_keys(offsets: np.ndarray, data: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` of a variable-length byte column as one ``S<width>`` array (NUL padded).

    ``offsets`` (n + 1 ints) and ``data`` (uint8) are an Arrow binary/string column's buffers; the
    width is the slice's longest key (at least 1, as ``np.array(list_of_bytes, dtype=np.bytes_)``).
    """
    bounds = np.asarray(offsets[lo:hi + 1], dtype=np.int64)
    lengths = np.diff(bounds)
    n = hi - lo
    width = max(1, int(lengths.max()) if n else 1)
    flat = data[int(bounds[0]):int(bounds[-1])] if n else data[:0]
    if n and int(lengths.min()) == width:
        # All keys one length (the usual webdataset key): the bytes already are the fixed-width rows.
        return flat.view(f"S{width}").copy()
    out = np.zeros((n, width), dtype=np.uint8)
    # A row-major boolean mask visits each row's first ``length`` cells in the byte stream's order.
    out[np.arange(width) < lengths[:, None]] = flat
    return out.view(f"S{width}").reshape(n)


def table_bytes(keys: np.ndarray, probs: np.ndarray, clusters: np.ndarray | None = None) -> bytes:
    """A shard table file from fixed-width key bytes, probabilities and optional cluster ids."""
    arrays = {
        "version": np.array(TABLE_FORMAT_VERSION, dtype=np.int32),
        "keys": keys,
        "probs": np.ascontiguousarray(probs, dtype=np.float32),
    }
    if clusters is not None:
        arrays["clusters"] = np.ascontiguousarray(clusters, dtype=np.int32)
    return npz_bytes(arrays)
