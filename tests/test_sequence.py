"""RFC 3550 appendix A.1, once: the tracker's verdicts, and the jitter buffer and the
statistics agreeing on the cases where their two rules used to differ."""

from __future__ import annotations

import pytest

from mjpeg_rtsp.jitter import JitterBuffer
from mjpeg_rtsp.rtp import (
    MAX_DROPOUT,
    MAX_MISORDER,
    RtpPacket,
    SequenceTracker,
    SeqVerdict,
)
from mjpeg_rtsp.stats import ReceiverStats

V = SeqVerdict


def verdicts(*seqs: int) -> list[tuple[SeqVerdict, int | None]]:
    tracker = SequenceTracker()
    return [tracker.update(seq) for seq in seqs]


def test_in_order_wrap_and_reordering_across_the_wrap() -> None:
    assert verdicts(65534, 65535, 0, 65535, 1) == [
        (V.FIRST, 65534), (V.AHEAD, 65535), (V.AHEAD, 65536), (V.BEHIND, 65535),
        (V.AHEAD, 65537)]


def test_gap_just_under_max_dropout_is_loss_at_it_a_jump() -> None:
    assert verdicts(10, 10 + MAX_DROPOUT - 1)[1] == (V.AHEAD, 10 + MAX_DROPOUT - 1)
    assert verdicts(10, 10 + MAX_DROPOUT)[1] == (V.JUMP, None)


def test_behind_by_less_than_max_misorder_is_reordering_further_a_jump() -> None:
    assert verdicts(1000, 1000 - MAX_MISORDER + 1)[1] == (V.BEHIND, 1000 - MAX_MISORDER + 1)
    assert verdicts(1000, 1000 - MAX_MISORDER)[1] == (V.JUMP, None)


def test_a_jump_confirmed_by_the_next_packet_restarts_the_numbering() -> None:
    assert verdicts(100, 9000, 9001, 9002) == [
        (V.FIRST, 100), (V.JUMP, None), (V.RESTART, 9001), (V.AHEAD, 9002)]


def test_a_lone_jump_is_forgotten() -> None:
    assert verdicts(100, 9000, 101, 102) == [
        (V.FIRST, 100), (V.JUMP, None), (V.AHEAD, 101), (V.AHEAD, 102)]


def test_out_of_range_numbers_are_refused() -> None:
    with pytest.raises(ValueError, match="sequence number 65536 out of range"):
        SequenceTracker().update(65536)


# --- the cases where the jitter buffer and the statistics disagreed before ---------------

def feed(seqs: list[int]) -> tuple[JitterBuffer, ReceiverStats]:
    """One packet per frame (the textbook layout), 20 ms apart."""
    jitter = JitterBuffer(0.0, frame_per_packet=True)
    stats = ReceiverStats()
    for i, seq in enumerate(seqs):
        t = i * 0.02
        packet = RtpPacket(payload_type=26, sequence_number=seq, timestamp=i * 1800, ssrc=1,
                           payload=b"\xff\xd8x\xff\xd9")
        jitter.push(packet, t)
        stats.on_packet(seq, i * 1800, t, 5)
    jitter.pop(len(seqs))
    return jitter, stats


def test_forward_jump_then_sequential_is_a_restart_for_both() -> None:
    # Before: the jitter buffer took a jump of 5000 as 4999 lost frames; A.1 as a restart.
    jitter, stats = feed([1, 2, 3, 5003, 5004, 5005])
    assert (jitter.frames_out, jitter.frames_lost) == (6, 0)
    assert (stats.packets_received, stats.packets_lost) == (2, 0)  # counts restart at 5004


def test_a_stray_packet_far_ahead_is_ignored_by_both() -> None:
    # Before: the jitter buffer moved its highest number to the stray one's.
    jitter, stats = feed([1, 2, 3, 40000, 4, 5, 6])
    assert (jitter.frames_out, jitter.frames_lost) == (6, 0)
    assert (stats.packets_received, stats.packets_lost) == (6, 0)


def test_a_packet_far_behind_is_ignored_by_both() -> None:
    # Before: 500 behind was reordering to the jitter buffer and a jump to A.1.
    jitter, stats = feed([1000, 1001, 1002, 502, 1003, 1004])
    assert (jitter.frames_out, jitter.frames_lost) == (5, 0)
    assert (stats.packets_received, stats.packets_lost) == (5, 0)
