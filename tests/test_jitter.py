"""Jitter buffer: unwrapping, frame assembly, loss accounting and playout (RFC 3550 sec. 5.1)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mjpeg_rtsp.jitter import JitterBuffer, MediaFrame, starts_jpeg_frame
from mjpeg_rtsp.rtp import RtpPacket, SequenceUnwrapper

RATE = 90000
STEP = 3600  # 25 fps at 90 kHz
PERIOD = STEP / RATE  # 0.04 s


def pkt(seq: int, ts: int, payload: bytes = b"", marker: bool = False) -> RtpPacket:
    return RtpPacket(26, seq & 0xFFFF, ts & 0xFFFFFFFF, 0x1234, payload, marker)


def make_frames(
    counts: list[int], seq0: int = 0, ts0: int = 0, step: int = STEP
) -> list[list[RtpPacket]]:
    """Frames of ``counts[i]`` packets; payload b"f<i>p<j>" so content is checkable."""
    frames = []
    seq = seq0
    for index, count in enumerate(counts):
        ts = ts0 + index * step
        frame = []
        for part in range(count):
            frame.append(pkt(seq, ts, f"f{index}p{part}".encode(), part == count - 1))
            seq += 1
        frames.append(frame)
    return frames


def payloads(frame: list[RtpPacket]) -> list[bytes]:
    return [p.payload for p in frame]


def counters(jb: JitterBuffer) -> dict[str, int]:
    names = (
        "frames_out",
        "frames_lost",
        "packets_received",
        "packets_duplicate",
        "packets_late",
        "packets_reordered",
    )
    return {name: getattr(jb, name) for name in names}


def feed_paced(jb: JitterBuffer, frames: list[list[RtpPacket]], t0: float = 10.0) -> None:
    """Push frame i's packets at t0 + i * PERIOD (perfect pacing, zero transit jitter)."""
    for index, frame in enumerate(frames):
        for packet in frame:
            jb.push(packet, t0 + index * PERIOD)


# -- SequenceUnwrapper ------------------------------------------------------------------------


def test_unwrap_in_order_across_wrap() -> None:
    u = SequenceUnwrapper()
    assert [u.unwrap(s) for s in (65533, 65534, 65535, 0, 1, 2)] == [
        65533,
        65534,
        65535,
        65536,
        65537,
        65538,
    ]
    assert u.highest == 65538


def test_unwrap_reordered_around_wrap() -> None:
    u = SequenceUnwrapper()
    got = [u.unwrap(s) for s in (65534, 0, 65535, 2, 1, 65533, 3)]
    assert got == [65534, 65536, 65535, 65538, 65537, 65533, 65539]
    assert u.highest == 65539


def test_unwrap_reordered_before_first_is_negative() -> None:
    u = SequenceUnwrapper()
    assert u.unwrap(0) == 0
    assert u.unwrap(65535) == -1
    assert u.unwrap(1) == 1


def test_unwrap_far_jumps() -> None:
    u = SequenceUnwrapper()
    assert u.unwrap(100) == 100
    assert u.unwrap(100 + 32767) == 32867  # just under half the range: forward
    assert u.unwrap(100) == 100  # back by 32767: still backward, same cycle
    # 32867 + 32768 wraps to 100 + 65535 = 99; exactly half the range away reads as backward
    assert u.unwrap((32867 + 32768) & 0xFFFF) == 32867 - 32768
    assert u.unwrap(40000) == 40000
    assert u.unwrap(5000) == 65536 + 5000  # forward by 30536 across the wrap


def test_unwrap_peek_does_not_record_and_reset() -> None:
    u = SequenceUnwrapper()
    u.unwrap(65535)
    assert u.peek(0) == 65536
    assert u.highest == 65535
    u.reset()
    assert u.highest is None
    assert u.unwrap(7) == 7


def test_unwrap_32bit_timestamps() -> None:
    u = SequenceUnwrapper(32)
    assert u.unwrap(0xFFFFF000) == 0xFFFFF000
    assert u.unwrap(0x00000E10) == (1 << 32) + 0xE10
    with pytest.raises(ValueError, match="out of range"):
        u.unwrap(1 << 32)


def test_unwrap_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"value 65536 out of range 0\.\.65535"):
        SequenceUnwrapper().unwrap(65536)


# -- JitterBuffer: timing ---------------------------------------------------------------------


def test_in_order_frames_released_at_playout_time() -> None:
    jb = JitterBuffer(latency=0.2)
    frames = make_frames([3, 2, 4])
    feed_paced(jb, frames, t0=10.0)
    assert jb.next_due() == pytest.approx(10.2)
    assert jb.pop(10.2 - 1e-9) == []
    out = jb.pop(10.2)
    assert len(out) == 1
    frame = out[0]
    assert frame == MediaFrame(0, payloads(frames[0]), 0, 2, 10.0, pytest.approx(10.2))
    assert jb.next_due() == pytest.approx(10.24)
    assert jb.pop(10.2399) == []
    assert [f.payloads for f in jb.pop(10.24)] == [payloads(frames[1])]
    [last] = jb.pop(100.0)
    assert (last.first_seq, last.last_seq, last.timestamp) == (5, 8, 2 * STEP)
    assert last.playout == pytest.approx(10.28)
    assert jb.next_due() is None
    assert jb.pop(200.0) == []
    assert counters(jb) == {
        "frames_out": 3,
        "frames_lost": 0,
        "packets_received": 9,
        "packets_duplicate": 0,
        "packets_late": 0,
        "packets_reordered": 0,
    }


def test_pop_releases_several_due_frames_in_order() -> None:
    jb = JitterBuffer(latency=0.1)
    frames = make_frames([2, 2, 2, 2])
    feed_paced(jb, frames, t0=0.0)
    out = jb.pop(0.1 + 2 * PERIOD)
    assert [f.payloads for f in out] == [payloads(f) for f in frames[:3]]
    assert [f.playout for f in out] == pytest.approx([0.1, 0.14, 0.18])


def test_base_moves_earlier_for_faster_packet() -> None:
    jb = JitterBuffer(latency=0.1)
    frames = make_frames([1, 1, 1])
    jb.push(frames[0][0], 1.05)  # delayed by 50 ms
    assert jb.next_due() == pytest.approx(1.15)
    jb.push(frames[1][0], 1.04)  # on time: transit 50 ms smaller
    assert jb.next_due() == pytest.approx(1.10)  # frame 0 is now due 50 ms earlier
    jb.push(frames[2][0], 1.10)  # late by 20 ms: base stays
    out = jb.pop(1.10)
    assert [f.timestamp for f in out] == [0]
    assert out[0].arrival == 1.05
    assert jb.next_due() == pytest.approx(1.14)


def test_timestamp_jump_rebases() -> None:
    jb = JitterBuffer(latency=0.1)
    jb.push(pkt(0, 0, b"a", True), 5.0)
    jb.push(pkt(1, 10 * RATE, b"b", True), 5.04)  # 10 s ahead on the RTP clock: a seek
    assert jb.next_due() == pytest.approx(5.1)
    out = jb.pop(5.14)
    assert [f.payloads for f in out] == [[b"a"], [b"b"]]
    assert [f.playout for f in out] == pytest.approx([5.1, 5.14])
    jb.push(pkt(2, 10 * RATE + STEP, b"c", True), 5.08)
    assert jb.next_due() == pytest.approx(5.18)
    # the sender stalled for 3 s, its clock did not: a timeline jump the other way
    jb.push(pkt(3, 10 * RATE + 2 * STEP, b"d", True), 8.2)
    assert jb.next_due() == pytest.approx(5.18)  # pending frame keeps its time
    assert [f.payloads for f in jb.pop(5.18)] == [[b"c"]]
    assert jb.next_due() == pytest.approx(8.3)
    assert counters(jb)["frames_lost"] == 0


def test_timestamp_wrap_at_2_32() -> None:
    jb = JitterBuffer(latency=0.1)
    ts0 = (1 << 32) - 2 * STEP
    frames = make_frames([2, 2, 2, 2], ts0=ts0)
    feed_paced(jb, frames, t0=0.0)
    out = jb.pop(0.1 + 3 * PERIOD - 1e-9)
    assert [f.timestamp for f in out] == [ts0, ts0 + STEP, 0]
    assert [f.playout for f in out] == pytest.approx([0.1, 0.14, 0.18])
    [last] = jb.pop(1.0)
    assert last.timestamp == STEP and last.playout == pytest.approx(0.22)


# -- JitterBuffer: reordering, loss, duplicates ------------------------------------------------


def test_reordering_within_latency_gives_complete_frames() -> None:
    jb = JitterBuffer(latency=0.2)
    frames = make_frames([3, 3, 3])
    order = [frames[0][2], frames[0][0], frames[1][1], frames[0][1], frames[1][0]]
    order += [frames[2][2], frames[1][2], frames[2][0], frames[2][1]]
    for index, packet in enumerate(order):
        jb.push(packet, index * 0.01)
    out = jb.pop(10.0)
    assert [f.payloads for f in out] == [payloads(f) for f in frames]
    assert [(f.first_seq, f.last_seq) for f in out] == [(0, 2), (3, 5), (6, 8)]
    assert jb.packets_reordered == 6  # 0, 1, 3, 5, 6, 7 came after a higher number
    assert (jb.frames_out, jb.frames_lost) == (3, 0)


def test_lost_fragment_drops_only_that_frame() -> None:
    jb = JitterBuffer(latency=0.1)
    frames = make_frames([3, 3, 3])
    del frames[1][1]
    feed_paced(jb, frames)
    out = jb.pop(100.0)
    assert [f.payloads for f in out] == [payloads(frames[0]), payloads(frames[2])]
    assert (jb.frames_out, jb.frames_lost) == (2, 1)


def test_lost_first_fragment_never_gives_partial_frame() -> None:
    jb = JitterBuffer(latency=0.1)
    frames = make_frames([3, 3, 3])
    del frames[1][0]
    feed_paced(jb, frames)
    out = jb.pop(100.0)
    assert [f.timestamp for f in out] == [0, 2 * STEP]
    assert (jb.frames_out, jb.frames_lost) == (2, 1)


def test_lost_marker_packet() -> None:
    jb = JitterBuffer(latency=0.1)
    frames = make_frames([3, 3, 3])
    del frames[1][2]  # frame 1's marker: frame 2's start can no longer be verified
    feed_paced(jb, frames)
    out = jb.pop(100.0)
    assert [f.timestamp for f in out] == [0]
    assert (jb.frames_out, jb.frames_lost) == (1, 2)


def test_lost_marker_packet_with_frame_start_hook() -> None:
    jb = JitterBuffer(latency=0.1, frame_start=lambda p: p.payload.endswith(b"p0"))
    frames = make_frames([3, 3, 3])
    del frames[1][2]
    feed_paced(jb, frames)
    out = jb.pop(100.0)
    assert [f.payloads for f in out] == [payloads(frames[0]), payloads(frames[2])]
    assert (jb.frames_out, jb.frames_lost) == (2, 1)


def test_whole_frame_lost_counted_from_timestamp_gap() -> None:
    jb = JitterBuffer(latency=0.1, frame_start=lambda p: p.payload.endswith(b"p0"))
    frames = make_frames([2, 2, 2, 2, 2, 2])
    del frames[2:4]  # two whole frames vanish
    feed_paced(jb, frames)
    out = jb.pop(100.0)
    assert [f.timestamp for f in out] == [0, STEP, 4 * STEP, 5 * STEP]
    assert (jb.frames_out, jb.frames_lost) == (4, 2)


def test_whole_frame_lost_without_hook_also_loses_next_frame() -> None:
    jb = JitterBuffer(latency=0.1)
    frames = make_frames([2, 2, 2, 2, 2])
    del frames[2]
    feed_paced(jb, frames)
    out = jb.pop(100.0)
    # frame 3's start cannot be verified (its first packet might be missing): dropped too
    assert [f.timestamp for f in out] == [0, STEP, 4 * STEP]
    assert (jb.frames_out, jb.frames_lost) == (3, 2)


def test_whole_frame_lost_is_at_least_one_when_unclaimed() -> None:
    # no adjacent pair seen yet, so no interval estimate: the gap still counts one frame
    jb = JitterBuffer(latency=0.1, frame_start=lambda p: p.payload.endswith(b"p0"))
    frames = make_frames([2, 2, 2])
    del frames[1]
    feed_paced(jb, frames)
    assert len(jb.pop(100.0)) == 2
    assert (jb.frames_out, jb.frames_lost) == (2, 1)


def test_duplicates_ignored() -> None:
    jb = JitterBuffer(latency=0.1)
    frames = make_frames([2, 2])
    jb.push(frames[0][0], 0.0)
    jb.push(frames[0][0], 0.001)
    jb.push(frames[0][1], 0.002)
    jb.push(frames[1][0], 0.04)
    jb.push(frames[0][1], 0.041)
    jb.push(frames[1][1], 0.042)
    out = jb.pop(0.1)
    assert [f.payloads for f in out] == [payloads(frames[0])]
    jb.push(frames[0][0], 0.11)  # a copy of a released packet: still a duplicate
    assert [f.payloads for f in jb.pop(1.0)] == [payloads(frames[1])]
    assert counters(jb) == {
        "frames_out": 2,
        "frames_lost": 0,
        "packets_received": 7,
        "packets_duplicate": 3,
        "packets_late": 0,
        "packets_reordered": 0,
    }


def test_late_packets_ignored() -> None:
    jb = JitterBuffer(latency=0.1)
    frames = make_frames([2, 2, 2])
    jb.push(frames[0][0], 0.0)
    jb.push(frames[1][0], 0.04)
    jb.push(frames[1][1], 0.04)
    assert jb.pop(0.1) == []  # frame 0 is due without its marker: dropped
    assert jb.frames_lost == 1
    jb.push(frames[0][1], 0.12)  # its marker, too late
    jb.push(frames[2][0], 0.12)
    jb.push(frames[2][1], 0.12)
    out = jb.pop(1.0)
    # frame 1 followed a frame whose marker was missing when it was retired: unverifiable
    assert [f.timestamp for f in out] == [2 * STEP]
    assert jb.packets_late == 1
    assert jb.packets_reordered == 1
    assert (jb.frames_out, jb.frames_lost) == (1, 2)


def test_late_packet_of_dropped_frame_with_higher_seq() -> None:
    jb = JitterBuffer(latency=0.1)
    jb.push(pkt(0, 0, b"a"), 0.0)  # frame 0 fragment 1 of 3
    jb.push(pkt(1, 0, b"b"), 0.0)
    assert jb.pop(0.1) == []
    jb.push(pkt(2, 0, b"c", True), 0.2)  # the marker of the dropped frame
    assert jb.packets_late == 1
    assert jb.pop(1.0) == [] and jb.next_due() is None


def test_sequence_wrap_in_the_middle_of_a_frame() -> None:
    jb = JitterBuffer(latency=0.1)
    frames = make_frames([3, 4, 3], seq0=65533)
    packets = [p for f in frames for p in f]
    assert [p.sequence_number for p in frames[1]] == [0, 1, 2, 3]
    packets[3], packets[4] = packets[4], packets[3]
    for packet in packets:
        jb.push(packet, 0.0)
    out = jb.pop(1.0)
    assert [f.payloads for f in out] == [payloads(f) for f in frames]
    assert [(f.first_seq, f.last_seq) for f in out] == [
        (65533, 65535),
        (65536, 65539),
        (65540, 65542),
    ]


def test_sequence_wrap_in_the_middle_of_a_frame_split_across_wrap() -> None:
    jb = JitterBuffer(latency=0.1)
    frames = make_frames([2, 4, 2], seq0=65532)
    assert [p.sequence_number for p in frames[1]] == [65534, 65535, 0, 1]
    feed_paced(jb, frames)
    out = jb.pop(100.0)
    assert [f.payloads for f in out] == [payloads(f) for f in frames]
    assert out[1].first_seq == 65534 and out[1].last_seq == 65537


def test_reset_forgets_sequence_and_timing_keeps_counters() -> None:
    jb = JitterBuffer(latency=0.1)
    feed_paced(jb, make_frames([2, 2]), t0=0.0)
    jb.pop(0.1)
    jb.reset()
    assert jb.next_due() is None and jb.pending_packets == 0
    # a new PLAY: different sequence numbers and timestamps, later wall clock
    frames = make_frames([2, 2], seq0=40000, ts0=123456)
    feed_paced(jb, frames, t0=50.0)
    out = jb.pop(50.1 + PERIOD)
    assert [f.payloads for f in out] == [payloads(f) for f in frames]
    assert out[0].first_seq == 40000
    assert out[0].playout == pytest.approx(50.1)
    assert (jb.frames_out, jb.frames_lost, jb.packets_received) == (3, 0, 8)


def test_sequence_restart_without_reset_resyncs() -> None:
    jb = JitterBuffer(latency=0.1)
    feed_paced(jb, make_frames([2, 2], seq0=20000), t0=0.0)
    assert len(jb.pop(1.0)) == 2
    frames = make_frames([2, 2, 2], seq0=5, ts0=STEP * 100)
    feed_paced(jb, frames, t0=1.0)
    out = jb.pop(5.0)
    assert [f.payloads for f in out] == [payloads(f) for f in frames]
    assert [f.first_seq for f in out] == [20004, 20006, 20008]
    assert (jb.frames_out, jb.frames_lost, jb.packets_late) == (5, 0, 0)


def test_stray_packet_far_behind_is_ignored() -> None:
    jb = JitterBuffer(latency=0.1)
    frames = make_frames([2, 2], seq0=20000)
    jb.push(frames[0][0], 0.0)
    jb.push(pkt(7, 99, b"junk", True), 0.0)
    jb.push(frames[0][1], 0.0)
    jb.push(frames[1][0], 0.04)
    jb.push(frames[1][1], 0.04)
    assert [f.payloads for f in jb.pop(1.0)] == [payloads(f) for f in frames]
    assert jb.frames_lost == 0


def test_frame_start_hook_for_jpeg() -> None:
    first = RtpPacket(26, 0, 0, 1, bytes(8) + b"x")
    later = RtpPacket(26, 1, 0, 1, b"\x00\x00\x05\x78" + bytes(4) + b"y")
    assert starts_jpeg_frame(first) is True
    assert starts_jpeg_frame(later) is False
    assert starts_jpeg_frame(RtpPacket(26, 2, 0, 1, b"\x00\x00")) is False


def test_bounded_memory_drops_oldest_frames() -> None:
    jb = JitterBuffer(latency=10.0, max_packets=5)
    frames = make_frames([2, 2, 2, 2])
    feed_paced(jb, frames, t0=0.0)
    assert jb.pending_packets <= 5
    assert jb.frames_lost == 2  # frames 0 and 1 pushed out by frames 2 and 3
    out = jb.pop(100.0)
    # frame 2 followed a dropped frame that did have its marker: verified and released
    assert [f.payloads for f in out] == [payloads(f) for f in frames[2:]]
    assert (jb.frames_out, jb.frames_lost) == (2, 2)


def test_bounded_memory_single_huge_frame() -> None:
    jb = JitterBuffer(latency=1.0, max_packets=3)
    [frame] = make_frames([5])
    for packet in frame:
        jb.push(packet, 0.0)
    assert jb.pending_packets <= 3
    assert jb.pop(100.0) == []
    assert jb.frames_lost == 1
    assert jb.packets_late == 1  # fragments after the drop belong to a retired frame


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="latency"):
        JitterBuffer(latency=-1)
    with pytest.raises(ValueError, match="clock rate"):
        JitterBuffer(latency=0.1, clock_rate=0)
    with pytest.raises(ValueError, match="max_packets"):
        JitterBuffer(latency=0.1, max_packets=0)


# -- frame_per_packet mode ---------------------------------------------------------------------


def textbook(seq: int) -> RtpPacket:
    # textbook servers: marker 0, timestamp in seconds (several frames share one)
    return RtpPacket(26, seq & 0xFFFF, seq // 20, 0, f"jpeg{seq}".encode(), False)


def test_frame_per_packet_in_order_timing() -> None:
    jb = JitterBuffer(latency=0.1, frame_per_packet=True)
    jb.push(textbook(1), 1.0)
    jb.push(textbook(2), 1.05)
    assert jb.next_due() == pytest.approx(1.1)
    assert jb.pop(1.09) == []
    [frame] = jb.pop(1.1)
    assert frame == MediaFrame(0, [b"jpeg1"], 1, 1, 1.0, pytest.approx(1.1))
    [frame] = jb.pop(1.16)
    assert frame.payloads == [b"jpeg2"]


def test_frame_per_packet_reordering_and_loss() -> None:
    jb = JitterBuffer(latency=0.1, frame_per_packet=True)
    arrivals = [(1, 0.0), (3, 0.05), (2, 0.06), (6, 0.07), (4, 0.08), (8, 0.09)]
    for seq, t in arrivals:
        jb.push(textbook(seq), t)
    out = jb.pop(0.2)
    assert [f.first_seq for f in out] == [1, 2, 3, 4, 6, 8]
    assert [f.payloads for f in out] == [[f"jpeg{s}".encode()] for s in (1, 2, 3, 4, 6, 8)]
    assert jb.frames_lost == 2  # 5 and 7
    jb.push(textbook(5), 0.21)  # arrives after 6 was shown
    assert jb.packets_late == 1
    assert jb.packets_reordered == 3
    assert jb.pop(1.0) == []


def test_frame_per_packet_later_packet_due_pulls_earlier_one() -> None:
    # 2 arrives after 3 but before 3 is due: both leave when 3 is due, in order
    jb = JitterBuffer(latency=0.1, frame_per_packet=True)
    jb.push(textbook(1), 0.0)
    jb.push(textbook(3), 0.01)
    jb.push(textbook(2), 0.05)
    assert [f.first_seq for f in jb.pop(0.1)] == [1]
    assert [f.first_seq for f in jb.pop(0.11)] == [2, 3]
    assert jb.frames_lost == 0


def test_frame_per_packet_wrap_and_duplicates() -> None:
    jb = JitterBuffer(latency=0.1, frame_per_packet=True)
    for seq in (65534, 65535, 65535, 1, 0):
        jb.push(textbook(seq), 0.0)
    out = jb.pop(1.0)
    assert [f.first_seq for f in out] == [65534, 65535, 65536, 65537]
    assert (jb.packets_duplicate, jb.packets_reordered, jb.frames_lost) == (1, 1, 0)


def test_frame_per_packet_bounded_memory() -> None:
    jb = JitterBuffer(latency=10.0, frame_per_packet=True, max_packets=4)
    for seq in range(10):
        jb.push(textbook(seq), 0.0)
    assert jb.pending_packets == 4
    assert jb.frames_lost == 6
    assert [f.first_seq for f in jb.pop(100.0)] == [6, 7, 8, 9]


# -- property ----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(1, 5), min_size=3, max_size=25),
    drop_seed=st.integers(0, 2**32 - 1),
    drop_rate=st.sampled_from([0.0, 0.05, 0.2, 0.5]),
    shuffle_window=st.integers(1, 6),
    seq0=st.integers(0, 65535),
    ts0=st.integers(0, 2**32 - 1),
    hook=st.booleans(),
)
def test_property_released_frames_are_exact(
    counts: list[int],
    drop_seed: int,
    drop_rate: float,
    shuffle_window: int,
    seq0: int,
    ts0: int,
    hook: bool,
) -> None:
    rng = random.Random(drop_seed)
    frames = make_frames(counts, seq0=seq0, ts0=ts0)
    packets: list[tuple[int, RtpPacket]] = []
    for index, frame in enumerate(frames):
        for packet in frame:
            # the first two frames (to learn the interval) and the last stay intact
            keep = index < 2 or index == len(frames) - 1 or rng.random() >= drop_rate
            if keep:
                packets.append((index, packet))
    # shuffle within a window: each packet is sent at its frame's time, arrives up to
    # `shuffle_window` slots later; latency (0.5 s) far exceeds the displacement
    slot = 0.004
    arrivals = sorted(
        (i * PERIOD + rng.randint(0, shuffle_window) * slot, n, p)
        for n, (i, p) in enumerate(packets)
    )
    jb = JitterBuffer(
        latency=0.5, frame_start=(lambda p: p.payload.endswith(b"p0")) if hook else None
    )
    released: list[MediaFrame] = []
    for t, _, packet in arrivals:
        released += jb.pop(t)
        jb.push(packet, t)
    released += jb.pop(1e9)
    by_ts = {frame[0].timestamp: payloads(frame) for frame in frames}
    for frame in released:
        assert frame.payloads == by_ts[frame.timestamp]
    assert [f.first_seq for f in released] == sorted(f.first_seq for f in released)
    assert jb.frames_out == len(released)
    assert jb.frames_out + jb.frames_lost == len(frames)
    assert jb.packets_late == 0
    kept = {id(p) for _, p in packets}
    intact = [all(id(p) in kept for p in frame) for frame in frames]
    marker_kept = [id(frame[-1]) in kept for frame in frames]
    if hook:  # every intact frame is recognised by its first packet
        expected = [i for i in range(len(frames)) if intact[i]]
    else:  # an intact frame also needs the previous frame's marker packet
        expected = [i for i in range(len(frames)) if intact[i] and (i == 0 or marker_kept[i - 1])]
    assert [f.timestamp for f in released] == [frames[i][0].timestamp for i in expected]
