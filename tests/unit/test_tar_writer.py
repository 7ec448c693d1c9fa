"""The rolling tar writer shared by the clip and QA shard writers: the index agrees with the tars it describes."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from g2vlm.datamodules.qa.shards import QAShardWriter
from g2vlm.datamodules.shards.tar_reader import split_member_name
from g2vlm.datamodules.shards.writer import ShardWriter
from g2vlm.datamodules.synthetic.qa import render_qa_samples
from g2vlm.datamodules.synthetic.shards import render_clip

SIZE = {"seed": 3, "views": 2, "height": 24, "width": 32}


def tar_contents(path: Path) -> tuple[list[str], int]:
    """(sample keys in order of first appearance, number of jpg members) of one shard; checks each sample's
    members are contiguous and every member has mode 0o644 and mtime 0."""
    keys: list[str] = []
    jpgs = 0
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            assert (member.mode, member.mtime) == (0o644, 0), member.name
            key, suffix = split_member_name(member.name)
            if not keys or keys[-1] != key:
                assert key not in keys, f"{member.name}: sample members not contiguous"
                keys.append(key)
            jpgs += suffix.endswith("jpg")
    return keys, jpgs


def assert_index_matches_tars(index: dict, out_dir: Path, sample_field: str, item_field: str) -> list[list[str]]:
    """Every shard's counts and bytes equal what its tar holds; the totals equal the sums. Returns the keys per
    shard."""
    assert index == json.loads((out_dir / f"{index['prefix']}-index.json").read_text())
    keys_per_shard = []
    for number, shard in enumerate(index["shards"]):
        assert shard["name"] == f"{index['prefix']}-{number:06d}.tar"
        path = out_dir / shard["name"]
        keys, jpgs = tar_contents(path)
        assert (shard[sample_field], shard[item_field], shard["bytes"]) == (len(keys), jpgs, path.stat().st_size)
        keys_per_shard.append(keys)
    assert index[f"total_{sample_field}"] == sum(len(keys) for keys in keys_per_shard)
    assert index[f"total_{item_field}"] == sum(s[item_field] for s in index["shards"])
    assert index["total_bytes"] == sum(s["bytes"] for s in index["shards"])
    assert sorted(p.name for p in out_dir.glob("*.tar")) == [s["name"] for s in index["shards"]]
    return keys_per_shard


def test_clip_writer_index_matches_tar_contents_when_rolled_by_count_and_size(tmp_path):
    clips = [render_clip(i, **SIZE) for i in range(5)]
    with ShardWriter(tmp_path / "count", "toy-train", max_clips_per_shard=2) as writer:
        for clip in clips:
            writer.write(*clip)
    keys = assert_index_matches_tars(writer.close(), tmp_path / "count", "clips", "frames")
    assert [len(k) for k in keys] == [2, 2, 1]
    assert [key for shard in keys for key in shard] == [key for key, _, _ in clips]  # order kept

    one_clip = sum(len(data) for data in clips[0][2][0].values()) * 2
    with ShardWriter(tmp_path / "size", "toy-train", max_shard_bytes=one_clip) as writer:  # under two clips
        for clip in clips:
            writer.write(*clip)
    keys = assert_index_matches_tars(writer.close(), tmp_path / "size", "clips", "frames")
    assert len(keys) > 1 and all(len(k) >= 1 for k in keys)  # rolled, and no shard left empty
    assert writer.close()["total_frames"] == 5 * SIZE["views"]


def test_qa_writer_index_matches_tar_contents_with_and_without_geometry(tmp_path):
    samples = render_qa_samples(0, questions_per_scene=3, **SIZE) + render_qa_samples(1, questions_per_scene=3, **SIZE)
    with QAShardWriter(tmp_path / "geometry", "qa-train", max_samples_per_shard=4) as writer:
        for key, record, images, meta, frames in samples:
            writer.write(key, record, images, meta=meta, frames=frames)
    keys = assert_index_matches_tars(writer.close(), tmp_path / "geometry", "samples", "images")
    assert [len(k) for k in keys] == [4, 2]

    with QAShardWriter(tmp_path / "plain", "qa-train", max_shard_bytes=3 * 4096) as writer:
        for key, record, images, _, _ in samples:
            writer.write(key, record, images)
    index = writer.close()
    keys = assert_index_matches_tars(index, tmp_path / "plain", "samples", "images")
    assert len(keys) > 1 and index["total_samples"] == len(samples)
    assert index["total_images"] == sum(record["num_images"] for _, record, _, _, _ in samples)
