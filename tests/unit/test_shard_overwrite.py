"""`g2vlm shard synthetic` into a folder that already holds shards: refused unless --overwrite, never a mixture of
old and new clips, and an index that always lists exactly the shards in the folder, even after a kill -9."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import textwrap

from tests.conftest import REPO_ROOT, run_console_script


def shard_sizes(folder) -> dict[str, set[tuple[int, int]]]:
    """{shard name: {(width, height) of its clips}} read from the tars themselves."""
    sizes = {}
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path) as tar:
            metas = [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith("meta.json")]
        sizes[path.name] = {(meta["width"], meta["height"]) for meta in metas}
    return sizes


def indexed(folder, prefix: str = "synthetic-train") -> list[str]:
    return [shard["name"] for shard in json.loads((folder / f"{prefix}-index.json").read_text())["shards"]]


def shard(out: str, *args: str, cwd) -> subprocess.CompletedProcess:
    return run_console_script("g2vlm", "shard", "synthetic", "--out", out, "--clips-per-shard", "2", "--no-progress",
                              *args, cwd=cwd)


def test_writing_into_a_folder_with_other_shards_is_refused_unless_overwrite(tmp_path):
    assert shard("data", "--scenes", "6", "--size", "64x64", cwd=tmp_path).returncode == 0
    before = {path.name: path.read_bytes() for path in (tmp_path / "data").iterdir()}
    refused = shard("data", "--scenes", "2", "--size", "32x32", cwd=tmp_path)
    assert refused.returncode == 2
    assert "--overwrite" in refused.stderr and "Traceback" not in refused.stderr
    assert {path.name: path.read_bytes() for path in (tmp_path / "data").iterdir()} == before  # untouched

    replaced = shard("data", "--scenes", "2", "--size", "32x32", "--overwrite", cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr
    assert shard_sizes(tmp_path / "data") == {"synthetic-train-000000.tar": {(32, 32)}}  # no stale 64x64 shard left
    assert indexed(tmp_path / "data") == ["synthetic-train-000000.tar"]

    # another split in the same folder is not touched by either
    assert shard("data", "--scenes", "2", "--size", "32x32", "--split", "val", cwd=tmp_path).returncode == 0
    assert shard("data", "--scenes", "2", "--size", "32x32", "--overwrite", cwd=tmp_path).returncode == 0
    assert indexed(tmp_path / "data", "synthetic-val") == ["synthetic-val-000000.tar"]
    assert (tmp_path / "data" / "synthetic-val-000000.tar").is_file()


def test_a_folder_of_shards_written_by_an_older_run_without_progress_record_is_refused(tmp_path):
    assert shard("data", "--scenes", "4", "--size", "32x32", cwd=tmp_path).returncode == 0
    (tmp_path / "data" / "synthetic-train-progress.json").unlink(missing_ok=True)  # as the suite wrote shards before
    refused = shard("data", "--scenes", "4", "--size", "32x32", cwd=tmp_path)
    assert refused.returncode == 2 and "did not record" in refused.stderr


KILLED_RUN = """
import os, sys
import g2vlm.datamodules.synthetic.shards as shards
render = shards.render_clip
def render_until_killed(index, **kwargs):
    if index == {kill_at}:
        os._exit(9)  # as kill -9 in the middle of the third shard
    return render(index, **kwargs)
shards.render_clip = render_until_killed
shards.write_synthetic_shards(sys.argv[1], scenes=7, views=2, height=32, width=32, clips_per_shard=2)
"""


def test_a_killed_run_leaves_an_index_that_agrees_with_its_shards_and_resumes_to_the_same_bytes(tmp_path):
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_RUN.format(kill_at=5)), str(tmp_path / "a")],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    finished = ["synthetic-train-000000.tar", "synthetic-train-000001.tar"]
    assert sorted(path.name for path in (tmp_path / "a").glob("*.tar")) == finished
    assert indexed(tmp_path / "a") == finished

    resumed = shard("a", "--scenes", "7", "--views", "2", "--size", "32x32", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert shard("b", "--scenes", "7", "--views", "2", "--size", "32x32", cwd=tmp_path).returncode == 0
    names = [f"synthetic-train-{number:06d}.tar" for number in range(4)]
    assert indexed(tmp_path / "a") == indexed(tmp_path / "b") == names
    for name in names:  # the resumed folder holds exactly the uninterrupted run's shards
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert not (tmp_path / "a" / ".partial").exists()


def test_with_the_progress_bar_every_scene_is_written(tmp_path):
    """The bar (on by default, as `make demo` runs it) wrapped the rendered clips in a tqdm whose own generator
    restarted for each shard, and the run ended after two shards: `make demo` trained on 200 of its 4,000 scenes."""
    written = run_console_script("g2vlm", "shard", "synthetic", "--out", "data", "--clips-per-shard", "2",
                                 "--scenes", "7", "--size", "32x32", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    index = json.loads((tmp_path / "data" / "synthetic-train-index.json").read_text())
    assert index["total_clips"] == 7 and len(index["shards"]) == 4
    clips = 0
    for path in (tmp_path / "data").glob("*.tar"):
        with tarfile.open(path) as tar:
            clips += sum(member.name.endswith("meta.json") for member in tar.getmembers())
    assert clips == 7
