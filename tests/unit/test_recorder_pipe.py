"""The service's end of the recorder pipe never blocks: groups and replies cross it in parts."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import pickle
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving import recorder as rec
from serving.recorder import Outcome, RecorderProcess


@pytest.fixture
def wired() -> Iterator[tuple[RecorderProcess, int]]:
    """A recorder whose pipe's far end is the test's, not a process's."""
    ours, theirs = multiprocessing.Pipe()
    process = RecorderProcess("sqlite://")
    os.set_blocking(ours.fileno(), False)
    process._pipe = ours
    yield process, theirs.fileno()
    ours.close()
    theirs.close()


def test_a_reply_that_comes_in_parts_is_taken_when_whole(
    wired: tuple[RecorderProcess, int],
) -> None:
    process, far = wired
    reply = Outcome(frozenset({"r1"}), {f"r{i}": "x" * 1000 for i in range(2, 60)})
    frame = rec._frame(reply)
    cuts = [0, 3, rec._HEADER.size + 10, len(frame) // 2, len(frame)]
    for start, end in itertools.pairwise(cuts):
        assert process.receive() is None
        os.write(far, frame[start:end])
    assert process.receive() == reply
    assert process.receive() is None  # nothing more has come, and the pipe is still open


def test_a_closed_pipe_is_an_end_of_file(wired: tuple[RecorderProcess, int]) -> None:
    process, far = wired
    with socket.socket(fileno=os.dup(far)) as end:
        end.shutdown(socket.SHUT_WR)
    with pytest.raises(EOFError):
        process.receive()


def test_a_group_larger_than_the_buffer_is_written_as_the_pipe_drains(
    wired: tuple[RecorderProcess, int],
) -> None:
    process, far = wired
    rows = [{"refund_id": f"r{i}", "response": f"{i:04d}" * 500} for i in range(1000)]
    refunds = [{"refund_id": f"r{i}"} for i in range(1000)]
    assert process.send(rows, refunds) is False  # nobody reads: the buffer fills, no blocking
    assert process.sending
    received = bytearray()
    while process.sending or len(received) < rec._HEADER.size:
        select.select([far], [], [], 1.0)
        received += os.read(far, 1 << 16)
        process.write()
    (size,) = rec._HEADER.unpack_from(received)
    while len(received) < rec._HEADER.size + size:
        received += os.read(far, 1 << 16)
    assert pickle.loads(received[rec._HEADER.size :]) == (rows, refunds)


def _dies(recorder: RecorderProcess) -> None:
    """Hand the recorder a group; it must die before replying (on a busy machine it may be
    gone before the group is even written)."""
    with pytest.raises((EOFError, OSError)):
        recorder.send([], [])
        recorder.finish(timeout=30)
    assert recorder.pid is not None, "a process was started and died, not refused a start"
    recorder.discard()


def test_a_recorder_that_keeps_dying_is_restarted_after_longer_and_longer_pauses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rec, "RESTART_PAUSE_SECONDS", 0.2)
    recorder = RecorderProcess("nosuchdatabase://")  # every process dies at once
    _dies(recorder)
    assert recorder.restarts_in == 0  # one death may be bad luck: the next starts at once
    _dies(recorder)
    assert 0.1 < recorder.restarts_in <= 0.2
    with pytest.raises(OSError, match="died 2 times in a row"):
        recorder.send([], [])  # no process is started meanwhile
    assert not recorder.running
    time.sleep(recorder.restarts_in)
    _dies(recorder)
    assert 0.3 < recorder.restarts_in <= 0.4  # doubled
    # Once mended, a process that replies (even with a refusal) ends the series.
    recorder.url = f"sqlite:///{tmp_path / 'log.db'}"
    time.sleep(recorder.restarts_in)
    recorder.send([], [])
    assert recorder.finish(timeout=30) == Outcome(frozenset(), {})
    recorder.stop()
    recorder.url = "nosuchdatabase://"
    _dies(recorder)
    assert recorder.restarts_in == 0


def test_the_pause_stays_at_its_longest_however_many_deaths() -> None:
    recorder = RecorderProcess("nosuchdatabase://")
    recorder._deaths = 5000  # a recorder dying every 5 s for about a week
    _dies(recorder)
    assert (
        rec.RESTART_PAUSE_MOST_SECONDS - 1 < recorder.restarts_in <= rec.RESTART_PAUSE_MOST_SECONDS
    )
