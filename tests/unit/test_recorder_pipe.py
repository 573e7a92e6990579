"""The service's end of the recorder pipe never blocks: groups and replies cross it in parts."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import pickle
import select
import socket
from collections.abc import Iterator

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
