"""Local processes: live output shows each log line once; a failure summary names the real exception."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamics.constants import Stage
from dynamics.local.procs import Proc, StageRun, first_exception
from dynamics.local.progress import PlainReporter

TORCHRUN_LOG = """\
2026-01-01T00:00:00 INFO dynamics.train: phase res32: 40 steps
Traceback (most recent call last):
  File "/x/loop.py", line 10, in step
    raise ValueError("batch of 0 samples")
[rank0]: ValueError: batch of 0 samples
E0101 00:00:01 torch/distributed/elastic/multiprocessing/api.py:869] failed (exitcode: 1) local_rank: 0
Traceback (most recent call last):
  File "/venv/bin/torchrun", line 8, in <module>
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
"""


def test_first_exception_skips_torchrun_boilerplate() -> None:
    assert first_exception(TORCHRUN_LOG.splitlines()) == "ValueError: batch of 0 samples"
    assert first_exception(["x", "error: shard pattern 'a/{0..1}.tar' matches no existing shards"]) == (
        "error: shard pattern 'a/{0..1}.tar' matches no existing shards")
    assert first_exception(["all good", "  raise KeyError(k)"]) is None


def test_live_output_shows_each_line_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "p.log"
    proc = Proc("embed-0", ["true"], {}, log)
    run = StageRun(Stage.EMBED, [proc], 1)
    reporter = PlainReporter()
    log.write_text("2026-01-01T00:00:00 INFO dynamics.embed: one\ntwo\npart")
    reporter.tick(run, [proc])
    with log.open("a") as fh:
        fh.write("ial three\nfour\n")
    reporter.last_tick = 0.0
    reporter.tick(run, [proc])
    reporter.tick(run, [proc])  # nothing new, nothing repeated
    proc.started = 0.0
    with log.open("a") as fh:
        fh.write("last\n")
    reporter.proc_done(run, proc)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["  [embed-0] one", "  [embed-0] two", "  [embed-0] partial three", "  [embed-0] four",
                     "  [embed-0] last"]
