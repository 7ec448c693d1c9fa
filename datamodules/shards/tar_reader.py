"""Tar shards -> raw samples: the members of one WebDataset sample grouped by key, bytes undecoded.

Shards are opened with webdataset's `gopen` (local paths, 'pipe:...', URLs) and read with Python's `tarfile` in
stream mode (gzip detected from the bytes), as webdataset's own tar iterator does, with one difference: plain
`tarfile` ends the member list silently at a header it cannot read (a shard cut at a member boundary, a cut or
corrupt header), so the rest of the shard would vanish without a word. Here such a header raises
`tarfile.ReadError` (`StrictTarInfo`) and the reader counts the shard as `truncated`.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

import webdataset as wds

from g2vlm.datamodules.shards.schema import REASON_SCHEMA, REASON_TRUNCATED, SampleError
from g2vlm.datamodules.shards.skip_log import SkipLog

Parsed = TypeVar("Parsed")


@dataclass
class RawSample:
    """The members of one sample as read from the tar: suffix ('meta.json', '000.jpg', ...) -> bytes."""

    key: str
    url: str
    members: dict[str, bytes]


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset grouping: the key is the path up to the first dot of the base name; the suffix (lower-cased)
    is the rest. 'dir/clip.007.depth.png' -> ('dir/clip', '007.depth.png')."""
    if "/" not in name:  # the usual flat layout
        stem, _, suffix = name.partition(".")
        return stem, suffix.lower()
    directory, base = os.path.split(name)
    stem, _, suffix = base.partition(".")
    return (os.path.join(directory, stem) if directory else stem), suffix.lower()


class StrictTarInfo(tarfile.TarInfo):
    """A tar member header that refuses what `tarfile` would take for the end of the archive: a missing
    end-of-archive block (the shard was cut at a member boundary), a cut header or a bad checksum."""

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        try:
            return super().frombuf(buf, encoding, errors)
        except tarfile.EOFHeaderError:  # the all-zero end-of-archive block: a complete tar
            raise
        except tarfile.EmptyHeaderError:
            raise tarfile.ReadError("no end-of-archive block") from None
        except tarfile.HeaderError as error:
            raise tarfile.ReadError(f"bad member header ({error})") from None


def iter_tar_members(stream: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """(name, data) of the regular files of a tar stream (plain or gzip), in order; directories and links are
    passed over. Raises `tarfile.ReadError` for a cut or corrupt archive, also for one cut at a member boundary."""
    archive = tarfile.open(fileobj=stream, mode="r|*", tarinfo=StrictTarInfo)
    while (info := archive.next()) is not None:
        archive.members.clear()  # a stream is read once: keep no index of the members passed
        if info.isreg():
            data = archive.fileobj.read(info.size)
            if len(data) != info.size:
                raise tarfile.ReadError(f"member {info.name}: {len(data)} of {info.size} bytes")
            yield info.name, data


def iter_raw_samples(url: str, skips: SkipLog) -> Iterator[RawSample]:
    """Group the members of one shard into samples. A truncated shard is counted once as `truncated`, its
    incomplete last sample is dropped and reading stops there. A repeated member ends the sample as `schema`.
    A shard cut at a member boundary is truncated too (`iter_tar_members`)."""
    key: str | None = None
    members: dict[str, bytes] = {}
    broken = False
    try:
        with wds.gopen(url, "rb") as raw:
            for name, data in iter_tar_members(raw):
                member_key, suffix = split_member_name(name)
                if member_key != key:
                    if key is not None and not broken:
                        yield RawSample(key, url, members)
                    key, members, broken = member_key, {}, False
                if suffix in members and not broken:
                    skips.record(SampleError(REASON_SCHEMA, f"{key}: member '{suffix}' appears twice"), url)
                    broken = True
                members[suffix] = data
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        skips.record(SampleError(REASON_TRUNCATED, f"{key or 'first sample'}: shard ends early ({error})"), url)
        return
    if key is not None and not broken:
        yield RawSample(key, url, members)


def iter_parsed_samples(urls: Iterable[str], skips: SkipLog, parse: Callable[[RawSample], Parsed]) -> Iterator[Parsed]:
    """`parse(raw)` of every sample of the shards, in order; a sample that raises SampleError is skipped into
    `skips`."""
    for url in urls:
        for raw in iter_raw_samples(url, skips):
            try:
                yield parse(raw)
            except SampleError as error:
                skips.record(error, url)
