"""`make bench-data` (`python -m g2vlm.benchmarks.speed.data_throughput`) runs end to end on a few rendered clips, with a
real loader worker, and reports every case. Not speed: no rate is asserted beyond being positive and finite."""

from __future__ import annotations

import json
import math

from g2vlm.benchmarks.speed.data_throughput import CASES, main


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_bench_data_reports_every_case(tmp_path, capsys):
    out = tmp_path / "data.json"
    argv = ["--workers", "1", "--clips", "2", "--batches", "1", "--repeats", "1",
            "--data-dir", str(tmp_path / "shards"), "--json", str(out)]
    assert main(argv) == 0
    results = json.loads(out.read_text())
    assert [(row["stored"], row["output"]) for row in results] == [(list(s), list(o)) for s, o in CASES]
    for row in results:
        assert _positive(row["raw_decode"]["frames_per_s"]) and _positive(row["raw_decode"]["cpu_ms_per_frame"])
        one = row["pipeline"]["1 worker(s)"]
        for key in ("frames_per_s", "clips_per_s", "wall_ratio", "worker_cpu_ms_per_frame", "cpu_ratio"):
            assert _positive(one[key]), (row["case"], key, one[key])
        stages = row["stage_cpu_ms_per_frame"]  # the assembly's share is a difference of two timings: finite
        assert _positive(stages["decode_ms"]) and all(math.isfinite(value) for value in stages.values())
    printed = capsys.readouterr().out
    for row in results:
        assert f"{row['case']}: pipeline (1 worker) at" in printed
    assert sorted(path.name for path in (tmp_path / "shards").iterdir()) == [
        "bench-224x224", "bench-392x518", "bench-480x640"]  # the two 480x640 cases share one rendering
