"""The demos' time budget as Lightning's `--trainer.max_time` ("DD:HH:MM:SS")."""

from g2vlm.demo import max_time_arg


def test_minutes_become_days_hours_minutes_seconds():
    assert max_time_arg(6.5) == "00:00:06:30"
    assert max_time_arg(6.9999) == "00:00:07:00"  # never ":60" seconds
    assert max_time_arg(90.25) == "00:01:30:15"  # hours, not 90 in the minutes field
