"""The player through a lossy network: loss, reordering, duplication and jitter on loopback.

The kernel has no netem, so :mod:`peers.relay` plays the network: the player connects to the
relay's RTSP proxy, which rewrites ``client_port`` so that the server's RTP goes through the
relay's UDP ports, where a seeded ``random.Random`` drops, holds back, duplicates and delays
packets and logs every decision. The test then knows the true loss and which frames were
delivered intact, and compares them with what the headless player reports and saves.
"""

from __future__ import annotations

import pytest
from peers.player_cli import frame_numbers, free_udp_port, run_player
from peers.relay import Impairment, RtspRelay

#: Frames still in the jitter buffer or the decoder when --duration ends the run.
TAIL = 6


@pytest.fixture
def relay_factory():
    relays: list[RtspRelay] = []

    def start(upstream_port: int, impairment: Impairment) -> RtspRelay:
        relay = RtspRelay(upstream_port, impairment)
        relays.append(relay)
        return relay

    yield start
    for relay in relays:
        relay.stop()


def check_lossy_run(run, relay: RtspRelay, frames_dir, per_packet_frames: bool) -> None:
    assert run.returncode == 0, str(run)
    summary = run.summary
    truth = relay.udp.summary()
    # The relay really did what it was asked to.
    assert truth["dropped"] > 0 and truth["reordered"] > 0, truth
    # Every saved frame is a whole JPEG (ends with FFD9, decodes fully, counter readable),
    # shown in order: no half frame, no frame twice, no going back.
    numbers = frame_numbers(frames_dir)
    assert len(numbers) == summary["frames"]
    assert numbers == sorted(set(numbers)), numbers
    # Loss as the player measured it (RFC 3550: duplicates count as received, which lowers
    # it by the duplicated share) against the relay's log.
    assert abs(summary["loss_percent"] - truth["loss_percent"]) <= 2.0, (summary, truth)
    rfc3550_lost = truth["dropped"] - truth["duplicated"]
    assert abs(summary["packets_lost"] - rfc3550_lost) <= 3, (summary, truth)
    assert summary["frames_lost"] > 0, summary
    # Every frame the server sent is accounted for: shown or counted lost, except the few
    # still buffered when the run ended.
    accounted = summary["frames"] + summary["frames_lost"]
    assert truth["frames_sent"] - TAIL <= accounted <= truth["frames_sent"], (summary, truth)
    # Every frame that arrived intact is shown, except the few still buffered at the end.
    intact = intact_frame_numbers(relay)
    missing = sorted(intact - set(numbers))
    last = max(intact)
    assert all(n > last - TAIL for n in missing), (missing, truth)
    # Frames the relay broke are never shown.
    broken = set(range(truth["frames_sent"])) - intact
    assert not broken & set(numbers), sorted(broken & set(numbers))
    if per_packet_frames:
        assert summary["frames_lost"] <= truth["dropped"]


def intact_frame_numbers(relay: RtspRelay) -> set[int]:
    """Frame numbers (movie.Mjpeg played from its start) whose packets all got through."""
    frames: dict[int, list] = {}
    order: list[int] = []
    for record in relay.udp.records:
        if record.timestamp not in frames:
            frames[record.timestamp] = []
            order.append(record.timestamp)
        frames[record.timestamp].append(record)
    return {i for i, ts in enumerate(order) if not any(r.dropped for r in frames[ts])}


IMPAIRMENT = Impairment(loss=0.05, reorder=0.10, reorder_depth=3, duplicate=0.01,
                        jitter=0.020, seed=20240611)


def test_standard_udp_through_loss_reordering_duplication_jitter(
        server_factory, relay_factory, tmp_path):
    server = server_factory(fps=20)
    relay = relay_factory(server.port, IMPAIRMENT)
    run = run_player(f"rtsp://127.0.0.1:{relay.port}/movie.Mjpeg", "--duration", "6",
                     "--latency", "150", "--save-frames", str(tmp_path), timeout=30)
    relay.stop()
    check_lossy_run(run, relay, tmp_path, per_packet_frames=False)
    truth = relay.udp.summary()
    assert truth["duplicated"] > 0, truth
    assert run.summary["packets_duplicate"] > 0, run.summary
    assert relay.udp.rtcp_forwarded > 0  # sender reports and receiver reports went through
    assert truth["frames_sent"] >= 110  # 6 s at 20 fps
    # The server kept its pacing: no frame left a whole frame interval after its time.
    assert server.streamer.scheduler.late_frames == 0


def test_textbook_through_loss_reordering_jitter(server_factory, relay_factory, tmp_path):
    """One datagram per frame: a lost packet is a lost frame."""
    server = server_factory(fps=20)
    # One packet per frame: ~100 packets in 5 s; this seed drops 6, reorders 12, duplicates 1
    # of the first 95 (a packet is held back behind one later frame, 50 ms: within latency).
    impairment = Impairment(loss=0.05, reorder=0.10, reorder_depth=1, duplicate=0.01,
                            jitter=0.020, seed=25)
    relay = relay_factory(server.port, impairment)
    run = run_player("127.0.0.1", str(relay.port), str(free_udp_port()), "movie.Mjpeg",
                     "--duration", "5", "--latency", "150", "--save-frames", str(tmp_path),
                     timeout=30)
    relay.stop()
    check_lossy_run(run, relay, tmp_path, per_packet_frames=True)
    truth = relay.udp.summary()
    assert truth["frames_sent"] == truth["sent"]
    assert run.summary["packets"] + truth["dropped"] >= truth["sent"] - TAIL
    assert server.streamer.scheduler.late_frames == 0


def test_interleaved_tcp_with_delay_jitter_and_split_reads(
        server_factory, relay_factory, tmp_path):
    """No loss on TCP: delay, jitter and the byte stream cut anywhere (replies and $ frames
    split across reads) must not lose or break a frame."""
    server = server_factory(fps=20)
    impairment = Impairment(tcp_delay=0.02, tcp_jitter=0.03, tcp_chunk=1500, seed=3)
    relay = relay_factory(server.port, impairment)
    run = run_player(f"rtsp://127.0.0.1:{relay.port}/movie.Mjpeg", "--transport", "tcp",
                     "--duration", "3", "--latency", "150", "--save-frames", str(tmp_path),
                     timeout=30)
    relay.stop()
    assert run.returncode == 0, str(run)
    summary = run.summary
    assert summary["frames_lost"] == 0 and summary["packets_lost"] == 0, summary
    assert relay.tcp_pieces > 500  # the stream really was cut up
    assert server.streamer.scheduler.late_frames == 0
    numbers = frame_numbers(tmp_path)
    assert numbers == list(range(len(numbers))), numbers
    assert len(numbers) >= 40  # ~3 s at 20 fps, minus start-up and the buffered tail
