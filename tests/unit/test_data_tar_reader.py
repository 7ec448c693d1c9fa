"""`iter_tar_members` reads what Python's tarfile writes (ustar, GNU long names, pax paths and sizes, directories
and links passed over, gzip) exactly as tarfile reads it back, and refuses corrupt archives."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from g2vlm.datamodules.shards.skip_log import SkipLog
from g2vlm.datamodules.shards.tar_reader import iter_raw_samples, iter_tar_members

LONG_DIR = "d" * 120
MEMBERS = [
    ("clip.000.jpg", b"\xff\xd8 jpeg bytes"),
    ("clip.000.depth.png", bytes(range(256)) * 3),  # 768 bytes: padding to the next block
    ("clip.meta.json", b""),  # empty member
    (f"{LONG_DIR}/clip2.000.jpg", b"x" * 512),  # > 100 characters: long-name headers; exactly one block
    ("sc\u00e8ne/clip3.000.jpg", b"non-ascii path"),
]


def archive(tar_format: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as tar:
        directory = tarfile.TarInfo("somedir")
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        for name, data in MEMBERS[:2]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("a-link")
        link.type, link.linkname = tarfile.SYMTYPE, "l" * 150
        tar.addfile(link)
        for name, data in MEMBERS[2:]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_members_read_like_tarfile(tar_format):
    data = archive(tar_format)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        expected = [(info.name, tar.extractfile(info).read()) for info in tar if info.isfile()]
    assert expected == MEMBERS
    assert list(iter_tar_members(io.BytesIO(data))) == expected


def test_ustar_prefix_paths_and_gzip_shards(tmp_path):
    name = "p" * 90 + "/" + "q" * 40 + "/clip.000.jpg"  # fits ustar only as prefix + name
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    assert list(iter_tar_members(io.BytesIO(buffer.getvalue()))) == [(name, b"abc")]
    path = tmp_path / "shard-000000.tar.gz"
    path.write_bytes(gzip.compress(archive(tarfile.PAX_FORMAT)))
    samples = list(iter_raw_samples(str(path), SkipLog()))
    assert [sample.key for sample in samples] == ["clip", f"{LONG_DIR}/clip2", "sc\u00e8ne/clip3"]
    assert samples[0].members == {"000.jpg": MEMBERS[0][1], "000.depth.png": MEMBERS[1][1], "meta.json": b""}


@pytest.mark.parametrize("cut", ["flipped header byte", "inside a member", "at a member boundary", "inside a header"])
def test_corrupt_or_cut_archives_are_refused(cut):
    data = archive(tarfile.PAX_FORMAT)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        third = tar.getmembers()[2]  # the depth PNG: its header follows the JPEG's padded data
    broken = {
        "flipped header byte": data[:third.offset + 10] + bytes([data[third.offset + 10] ^ 0xFF])
        + data[third.offset + 11:],
        "inside a member": data[:third.offset - 300],
        "at a member boundary": data[:third.offset],
        "inside a header": data[:third.offset + 100],
    }[cut]
    with pytest.raises(tarfile.ReadError):
        list(iter_tar_members(io.BytesIO(broken)))
    assert len(list(iter_tar_members(io.BytesIO(data)))) == len(MEMBERS)


def test_an_unreadable_shard_is_counted_as_truncated():
    skips = SkipLog()
    assert list(iter_raw_samples("/nonexistent/shard.tar", skips)) == [] and skips.counts["truncated"] == 1
