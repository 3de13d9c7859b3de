"""webdataset integration: ``s3://`` URLs for ``webdataset.WebDataset`` (and open_clip) through our storage layer.

Its own module so that stages which only read shards themselves (scale, assign) do not need webdataset.
"""

from __future__ import annotations

from typing import IO, Any

from dynamics.storage import objects as storage
from dynamics.storage.objects import StorageConfig


def register_s3_handler(cfg: StorageConfig | None = None) -> None:
    """Let ``webdataset.WebDataset`` (and open_clip) stream ``s3://`` URLs through boto3.

    Registers a ``gopen`` scheme handler returning the retrying GetObject stream of
    :func:`dynamics.storage.objects.open_stream`: no AWS CLI, no download to disk. Call it in every
    process that builds a WebDataset (spawned data-loader workers do not inherit it).
    """
    # "webdataset.gopen" the attribute is the gopen() function; the dict lives in the module.
    from webdataset.gopen import gopen_schemes

    def gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, **_kw: Any) -> IO[bytes]:
        if mode[0] != "r":
            raise ValueError(f"{url}: only reading is supported for s3:// in webdataset")
        return storage.open_stream(url, cfg)

    gopen_schemes["s3"] = gopen_s3
