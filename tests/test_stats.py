"""Receiver statistics (RFC 3550 section 6.4.1, appendices A.1, A.3 and A.8)."""

from __future__ import annotations

import pytest

from mjpeg_rtsp.rtcp import ReportBlock, ntp_from_unix
from mjpeg_rtsp.stats import ReceiverStats

RATE = 90000


def test_empty() -> None:
    stats = ReceiverStats()
    assert (stats.packets_received, stats.expected, stats.packets_lost) == (0, 0, 0)
    assert stats.loss_percent == 0.0 and stats.jitter_ms == 0.0
    assert stats.snapshot(0.0) == {
        "packets": 0,
        "packets_lost": 0,
        "loss_percent": 0.0,
        "jitter_ms": 0.0,
        "kbps": 0.0,
        "fps": 0.0,
    }
    assert stats.report_block(7, 0.0, None, None) == ReportBlock(7, 0, 0, 0, 0, 0, 0)


def test_jitter_hand_computed() -> None:
    # clock rate 1000 Hz so that one timestamp unit is one millisecond.
    # Packets sent every 20 units; transit times (ms) 10, 12, 9, 9, 15, 10.
    stats = ReceiverStats(clock_rate=1000)
    transits = [10, 12, 9, 9, 15, 10]
    # D_i = transit_i - transit_{i-1}: 2, -3, 0, 6, -5; J_i = J_{i-1} + (|D_i| - J_{i-1}) / 16:
    # J1 = 2/16 = 0.125
    # J2 = 0.125 + (3 - 0.125)/16 = 0.3046875
    # J3 = 0.3046875 * 15/16 = 0.28564453125
    # J4 = 0.28564453125 + (6 - 0.28564453125)/16 = 0.642791748046875
    # J5 = 0.642791748046875 + (5 - 0.642791748046875)/16 = 0.9151172637939453
    expected_j = [0.0, 0.125, 0.3046875, 0.28564453125, 0.642791748046875, 0.9151172637939453]
    for i, transit in enumerate(transits):
        ts = 20 * i
        stats.on_packet(i, ts, (ts + transit) / 1000, 100)
        assert stats.jitter == pytest.approx(expected_j[i], abs=1e-9)
    assert stats.jitter_ms == pytest.approx(0.9151172637939453, abs=1e-9)
    assert stats.report_block(1, 1.0, None, None).jitter == 0  # int(0.915)


def test_jitter_large_values_and_90khz() -> None:
    # alternating +-10 ms transit at 90 kHz: |D| = 900 units every packet after the first
    stats = ReceiverStats()
    j = 0.0
    for i in range(40):
        arrival = 1_700_000_000.0 + i * 0.04 + (0.01 if i % 2 else 0.0)
        stats.on_packet(i, (i * 3600) & 0xFFFFFFFF, arrival, 1000)
        if i:
            j += (900 - j) / 16
    assert stats.jitter == pytest.approx(j, abs=1e-3)
    assert stats.report_block(1, 0.0, None, None).jitter == int(j)
    assert stats.jitter_ms == pytest.approx(j / 90, abs=1e-5)


def test_zero_jitter_for_perfect_pacing_across_timestamp_wrap() -> None:
    stats = ReceiverStats()
    ts0 = (1 << 32) - 5 * 3600
    for i in range(20):
        stats.on_packet(i, (ts0 + i * 3600) & 0xFFFFFFFF, 100.0 + i * 0.04, 500)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_packets_of_one_frame_share_timestamp() -> None:
    # three packets of a frame sent together, arriving 1 ms apart: D = 90 then 90 then -180
    stats = ReceiverStats()
    stats.on_packet(0, 0, 0.0, 1)
    stats.on_packet(1, 0, 0.001, 1)
    stats.on_packet(2, 0, 0.002, 1)
    stats.on_packet(3, 3600, 0.040, 1)
    j = 0.0
    for d in (90, 90, 0.038 * RATE - 3600):  # the last: 3420 - 3600 = -180
        j += (abs(d) - j) / 16
    assert stats.jitter == pytest.approx(j, abs=1e-6)


def test_loss_across_sequence_wrap() -> None:
    stats = ReceiverStats()
    seqs = [65530, 65531, 65533, 65535, 0, 1, 4]  # missing 65532, 65534, 2, 3
    for i, seq in enumerate(seqs):
        stats.on_packet(seq, i * 3600, i * 0.04, 100)
    assert stats.extended_max == 65536 + 4
    assert stats.expected == 11
    assert stats.packets_received == 7
    assert stats.packets_lost == 4
    assert stats.loss_percent == pytest.approx(100 * 4 / 11)


def test_reordering_across_wrap_is_not_loss() -> None:
    stats = ReceiverStats()
    for seq in (65534, 0, 65535, 1):
        stats.on_packet(seq, 0, 0.0, 1)
    assert (stats.extended_max, stats.expected, stats.packets_lost) == (65537, 4, 0)


def test_duplicates_make_cumulative_lost_negative() -> None:
    stats = ReceiverStats()
    for seq in (10, 11, 11, 12, 12):
        stats.on_packet(seq, 0, 0.0, 1)
    assert stats.expected == 3 and stats.packets_received == 5
    assert stats.cumulative_lost == -2
    assert stats.packets_lost == 0 and stats.loss_percent == 0.0
    assert stats.report_block(1, 0.0, None, None).cumulative_lost == -2


def test_restart_after_large_jump_confirmed() -> None:
    stats = ReceiverStats()
    for seq in range(100, 110):
        stats.on_packet(seq, 0, 0.0, 1)
    stats.on_packet(30000, 0, 0.0, 1)  # a single stray jump is ignored
    assert (stats.packets_received, stats.extended_max) == (10, 109)
    stats.on_packet(110, 0, 0.0, 1)
    stats.on_packet(50000, 0, 0.0, 1)
    stats.on_packet(50001, 0, 0.0, 1)  # follows: the source restarted
    assert (stats.packets_received, stats.expected, stats.extended_max) == (1, 1, 50001)


def test_fraction_lost_per_report_interval() -> None:
    stats = ReceiverStats()
    for seq in range(0, 10):  # 10 of 10
        stats.on_packet(seq, 0, 0.0, 1)
    first = stats.report_block(5, 1.0, None, None)
    assert (first.fraction_lost, first.cumulative_lost, first.highest_seq) == (0, 0, 9)
    for seq in [10, 11, 13, 15, 16, 17, 18, 19]:  # 8 of 10 (12 and 14 lost)
        stats.on_packet(seq, 0, 0.0, 1)
    second = stats.report_block(5, 2.0, None, None)
    assert second.fraction_lost == (2 << 8) // 10 == 51
    assert second.cumulative_lost == 2
    for seq in [12, 20, 21]:  # a straggler fills a hole: more received than expected
        stats.on_packet(seq, 0, 0.0, 1)
    third = stats.report_block(5, 3.0, None, None)
    assert (third.fraction_lost, third.cumulative_lost, third.highest_seq) == (0, 1, 21)
    assert stats.report_block(5, 4.0, None, None).fraction_lost == 0  # nothing new


def test_report_block_fields_with_sender_report() -> None:
    stats = ReceiverStats()
    for seq in (65534, 65535, 1):
        stats.on_packet(seq, 0, 0.0, 1)
    sr_ntp = ntp_from_unix(1_500_000_000.5)  # 0xdd12ad80_80000000
    assert sr_ntp == 0xDD12AD80_80000000
    block = stats.report_block(0xCAFEBABE, 1000.75, sr_ntp, 999.25)
    assert block == ReportBlock(
        ssrc=0xCAFEBABE,
        fraction_lost=(1 << 8) // 4,  # 1 of 4 expected
        cumulative_lost=1,
        highest_seq=0x0001_0001,
        jitter=0,
        lsr=0xAD808000,
        dlsr=int(1.5 * 65536),  # 0x00018000
    )
    assert bytes(block) == bytes.fromhex("cafebabe 40000001 00010001 00000000 ad808000 00018000")
    # LSR without a known arrival time: DLSR 0
    assert stats.report_block(1, 0.0, sr_ntp, None).dlsr == 0


def test_cumulative_lost_clamped_to_24_bits() -> None:
    stats = ReceiverStats()
    stats.on_packet(0, 0, 0.0, 1)
    for _ in range(4500):  # jumps of 2000 (below MAX_DROPOUT): 1999 lost each
        stats.on_packet((stats.extended_max + 2000) & 0xFFFF, 0, 0.0, 1)
    assert stats.cumulative_lost == 4500 * 1999
    assert stats.cumulative_lost > (1 << 23) - 1
    assert stats.report_block(1, 0.0, None, None).cumulative_lost == (1 << 23) - 1


def test_bitrate_window() -> None:
    stats = ReceiverStats(window=2.0)
    for i in range(10):  # 1000 bytes every 0.5 s from t = 0 to 4.5
        stats.on_packet(i, 0, i * 0.5, 1000)
    # window (2.5, 4.5]: packets at 3.0, 3.5, 4.0, 4.5 -> 4000 bytes * 8 / 2 s = 16 kbit/s
    assert stats.bitrate_kbps(4.5) == pytest.approx(16.0)
    assert stats.bitrate_kbps(5.0) == pytest.approx(12.0)  # (3.0, 5.0]: 3 packets
    assert stats.bitrate_kbps(7.0) == 0.0


def test_fps_window_and_frame_size() -> None:
    stats = ReceiverStats(window=1.0)
    for i in range(50):
        stats.on_frame(2000 + i, i * 0.04)
    assert stats.fps(49 * 0.04) == pytest.approx(25.0)
    assert stats.frames_displayed == 50 and stats.last_frame_size == 2049
    assert stats.fps(10.0) == 0.0


def test_snapshot() -> None:
    stats = ReceiverStats(clock_rate=1000, window=1.0)
    stats.on_packet(0, 0, 0.010, 500)
    stats.on_packet(2, 40, 0.052, 500)  # transit 10 then 12: D = 2, J = 0.125
    stats.on_frame(1000, 0.06)
    assert stats.snapshot(0.5) == {
        "packets": 2,
        "packets_lost": 1,
        "loss_percent": pytest.approx(100 / 3),
        "jitter_ms": pytest.approx(0.125),
        "kbps": pytest.approx(16.0),  # 8000 bits over the 0.5 s observed so far
        "fps": 2.0,
    }


def test_validation() -> None:
    with pytest.raises(ValueError, match="clock rate"):
        ReceiverStats(clock_rate=0)
    with pytest.raises(ValueError, match="window"):
        ReceiverStats(window=0)
    with pytest.raises(ValueError, match=r"sequence number 65536 out of range"):
        ReceiverStats().on_packet(65536, 0, 0.0, 1)


def test_rates_of_a_young_stream_use_the_time_observed() -> None:
    """Before a whole window has passed, 20 fps must read 20, not 20 x elapsed / window."""
    stats = ReceiverStats(window=2.0)
    for i in range(13):  # 0.6 s at 20 fps, 1000-byte frames in one packet each
        stats.on_packet(i, i * 4500, 10 + i * 0.05, 1000)
        stats.on_frame(1000, 10 + i * 0.05)
    assert stats.fps(10.6) == pytest.approx(13 / 0.6)
    assert stats.bitrate_kbps(10.6) == pytest.approx(13 * 8 / 0.6)


def test_whole_run_averages() -> None:
    stats = ReceiverStats(window=2.0)
    for i in range(41):  # 2 s at 20 fps, then silence
        stats.on_packet(i, i * 4500, 5 + i * 0.05, 1000)
        stats.on_frame(1000, 5 + i * 0.05)
    summary = stats.snapshot(30.0, whole_run=True)
    assert summary["fps"] == pytest.approx(20.0)
    assert summary["kbps"] == pytest.approx(41 * 8 / 2.0)
    assert stats.snapshot(30.0)["fps"] == 0.0  # the last two seconds were silent
