"""The lean tar reader against Python's tarfile: same members, same verdict, on every cut and damage."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynamics.storage import shards
from dynamics.storage.tarstream import BLOCK, TarRead, iter_tar


def _archive(fmt: int) -> bytes:
    """A shard-like tar in ``fmt`` with long and non-ASCII names, a directory, a link, empty and exact-block members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        def add(name: str, data: bytes, kind: bytes = tarfile.REGTYPE) -> None:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add("000001.jpg", bytes(range(256)) * 3)
        add("000001.txt", b"a caption")
        add("dir", b"", tarfile.DIRTYPE)
        add("d" * 120, b"", tarfile.DIRTYPE)  # a long name for a member without data (GNU L, pax path)
        add("000002.jpg", b"x" * BLOCK)  # exactly one block: no padding
        add("000002.txt", b"")
        add("link.txt", b"", tarfile.SYMTYPE)
        add("a/" + "long-prefix-" * 12 + "/000003.jpg", b"\xff\xd8" + b"y" * 700)  # ustar prefix, GNU L, pax path
        if fmt != tarfile.USTAR_FORMAT:
            add("caf\u00e9/000004.txt", "d\u00e9j\u00e0 vu".encode())  # non-ASCII: a pax header in PAX format
    return buf.getvalue()


def _reference(data: bytes) -> tuple[list[tuple[str, bytes]], bool]:
    """What tarfile's stream mode yields, and whether the end-of-archive block is where it stopped."""
    out: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
            for info in tar:
                if info.isreg():
                    member = tar.extractfile(info)
                    assert member is not None
                    out.append((info.name, member.read()))
            complete = data[tar.offset : tar.offset + BLOCK] == bytes(BLOCK)
    except (tarfile.TarError, EOFError):
        complete = False
    return out, complete


def _lean(data: bytes) -> tuple[list[tuple[str, bytes]], bool, TarRead]:
    read = TarRead()
    members = list(iter_tar(io.BytesIO(data), read))
    return members, read.complete, read


FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}


@pytest.mark.parametrize("fmt", FORMATS)
def test_whole_archive_reads_like_tarfile(fmt: str) -> None:
    raw = _archive(FORMATS[fmt])
    members, complete, read = _lean(raw)
    assert (members, complete) == _reference(raw)
    assert complete and read.total == len(raw) and read.head == raw[:BLOCK]
    assert any(name.endswith("/000003.jpg") and len(name) > 100 for name, _ in members)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_cut_reads_like_tarfile(fmt: str) -> None:
    raw = _archive(FORMATS[fmt]).rstrip(b"\0")  # tarfile pads to a record; cuts inside the padding are alike
    raw += bytes(2 * BLOCK)
    for cut in sorted({*range(0, len(raw) + 1, 61), *range(0, len(raw) + 1, BLOCK)}):
        members, complete, _ = _lean(raw[:cut])
        assert (members, complete) == _reference(raw[:cut]), cut


@pytest.mark.parametrize("fmt", FORMATS)
def test_damaged_headers_read_like_tarfile(fmt: str) -> None:
    raw = _archive(FORMATS[fmt])
    headers = [0, *(i for i in range(BLOCK, len(raw), BLOCK) if raw[i + 257 : i + 262] == b"ustar")]
    for start in headers:
        for offset in (0, 100, 124, 130, 148, 156, 300, 345):  # name, mode, size, checksum, type, uname, prefix
            damaged = bytearray(raw)
            damaged[start + offset] ^= 0x5A
            members, complete, _ = _lean(bytes(damaged))
            assert (members, complete) == _reference(bytes(damaged)), (start, offset)


def test_empty_and_zero_streams() -> None:
    assert _lean(b"")[:2] == ([], False)
    assert _lean(bytes(4 * BLOCK))[:2] == _reference(bytes(4 * BLOCK)) == ([], True)


def test_big_members_cross_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dynamics.storage.tarstream.CHUNK", 1000)  # members span many refills
    raw = _archive(tarfile.PAX_FORMAT)
    assert _lean(raw)[:2] == _reference(raw)


def test_shard_reader_still_takes_compressed_shards() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for key in ("k1", "k2"):
            for ext, data in (("jpg", b"\xff\xd8image"), ("txt", f"caption {key}".encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    packed = gzip.compress(buf.getvalue())
    stats = shards.SkipStats()
    captions = [s.caption for s in shards.iter_stream("s.tar.gz", io.BytesIO(packed), stats)]
    assert captions == ["caption k1", "caption k2"]
    assert not stats.counts
    cut = shards.SkipStats()
    list(shards.iter_stream("s.tar.gz", io.BytesIO(packed[: len(packed) // 2]), cut))
    assert cut.counts[str(shards.SkipReason.TRUNCATED_SHARD)] == 1


@given(st.lists(st.sampled_from(["a", "b", ".", "/", "_", "x1", "é"]), max_size=12).map("".join))
def test_keys_split_as_webdataset_does(name: str) -> None:
    from webdataset.tariterators import base_plus_ext

    key, ext = base_plus_ext(name)
    assert shards._split_key(name) == (None if key is None else (key, ext.lower()))


@pytest.mark.parametrize("fmt", ["gnu", "oldgnu", "posix"])
def test_archives_of_gnu_tar_read_like_tarfile(fmt: str, tmp_path: Path) -> None:
    tar_cli = shutil.which("tar")
    if tar_cli is None:
        pytest.skip("GNU tar is not installed")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / ("x" * 120)).mkdir()
    for i in range(1, 4):
        (src / "sub" / f"0000{i}.jpg").write_bytes(bytes(range(256)) * i * 3)
        (src / "sub" / f"0000{i}.txt").write_text(f"caption {i}")
    (src / ("x" * 120) / "00009.txt").write_text("a long path")
    out = tmp_path / "t.tar"
    subprocess.run([tar_cli, f"--format={fmt}", "-cf", str(out), "-C", str(src), "."], check=True)
    raw = out.read_bytes()
    assert len(_lean(raw)[0]) == 7 and _lean(raw)[1]
    for cut in range(0, len(raw) + 1, 97):
        assert _lean(raw[:cut])[:2] == _reference(raw[:cut]), cut
