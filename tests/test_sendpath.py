"""The batched send paths (issue 11): one sendmmsg per pass for many UDP sessions, headers
from one integer per frame, interleaved frames written as buffers by one writer loop. Each
must put on the wire exactly what the plain paths do, and none may block or be blocked."""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time

import pytest
from conftest import RtspTestClient, udp_pair, wait_for

from mjpeg_rtsp import sendmmsg
from mjpeg_rtsp.media import READ_AHEAD_FRAMES, MediaLibrary
from mjpeg_rtsp.rtp import PT_JPEG, RtpPacket, pack_header, pack_headers
from mjpeg_rtsp.rtsp import InterleavedFrame, RtspReader, format_interleaved
from mjpeg_rtsp.session import (
    Dialect,
    LowerTransport,
    PayloadFormat,
    Session,
    SessionState,
    TransportChoice,
)
from mjpeg_rtsp.streaming import (
    ConnectionWriter,
    FrameShare,
    InterleavedSink,
    PacingScheduler,
    UdpBatch,
    UdpSink,
    _Pace,
    gso_supported,
    send_frame,
    split_headers,
)

needs_sendmmsg = pytest.mark.skipif(not sendmmsg.available(), reason="no sendmmsg here")


def test_header_blocks_equal_headers_one_by_one():
    rng = random.Random(11)
    for count in (1, 2, 9, 41, 64, 300):
        for first in (0, 1, 65535 - count, 65536 - count, 65535, rng.randrange(65536)):
            ts, ssrc = rng.choice((0, 0xFFFFFFFF, rng.getrandbits(32))), rng.getrandbits(32)
            expected = b"".join(pack_header(PT_JPEG, (first + i) & 0xFFFF, ts, ssrc,
                                            i == count - 1) for i in range(count))
            assert pack_headers(count, PT_JPEG, first, ts, ssrc) == expected, (count, first)
    assert split_headers(pack_headers(3, PT_JPEG, 7, 1, 2))[2] == pack_header(PT_JPEG, 9, 1, 2,
                                                                               True)


def make_session(fps: float = 30.0, port: int = 0) -> Session:
    return Session("1", Dialect.STANDARD, None, "", TransportChoice(LowerTransport.UDP, "127.0.0.1",
                   port), PayloadFormat.RFC2435, fps, 1, 60.0, 0.0)


def receivers(count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.settimeout(2)
        socks.append(sock)
    return socks


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram queued on ``sock`` (they are all there: loopback delivers in the send)."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(65536))
    except BlockingIOError:
        pass
    sock.settimeout(2)
    return out


FRAMES = [
    tuple(os.urandom(1400) for _ in range(40)) + (os.urandom(333),),  # a 720p-like frame
    (os.urandom(1400), os.urandom(200), os.urandom(1400), os.urandom(1400)),  # short inside
    (os.urandom(900),),  # one packet
    tuple(os.urandom(8) for _ in range(100)),  # more than 64 segments
    (os.urandom(60000),),  # a textbook-sized whole JPEG
]


@needs_sendmmsg
@pytest.mark.parametrize("gso", [True, False])
def test_a_batch_sends_what_the_plain_path_sends_byte_for_byte(gso):
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    sender.setblocking(False)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    socks = receivers(3)
    batch = UdpBatch(sender)
    try:
        if gso and not gso_supported(sender):
            pytest.skip("this kernel has no UDP segmentation offload")
        sinks = [UdpSink(sender, sender, s.getsockname(), None, gso) for s in socks]
        plain = [make_session() for _ in socks]
        batched = [make_session() for _ in socks]
        for a, b in zip(plain, batched, strict=True):  # the same streams, twice
            b.ssrc, b.next_seq = a.ssrc, a.next_seq = random.getrandbits(32), 65500
        for number, payloads in enumerate(FRAMES):
            for session, sink in zip(plain, sinks, strict=True):
                send_frame(session, sink, FrameShare(payloads), 3000 * number)
            expected = [drain(s) for s in socks]
            for session, sink in zip(batched, sinks, strict=True):
                send_frame(session, sink, FrameShare(payloads), 3000 * number, batch)
            assert all(drain(s) == [] for s in socks)  # nothing goes before the flush
            batch.flush()
            got = [drain(s) for s in socks]
            assert got == expected and all(len(g) == len(payloads) for g in got), number
        for a, b in zip(plain, batched, strict=True):
            assert (b.packets_sent, b.packets_dropped, b.octets_sent, b.frames_sent, b.next_seq) \
                == (a.packets_sent, 0, a.octets_sent, a.frames_sent, a.next_seq)
        # Sequence numbers wrapped inside the second frame, markers on each frame's last.
        packets = [RtpPacket.parse(d) for d in expected[0]]
        assert packets[-1].marker and not any(p.marker for p in packets[:-1])
    finally:
        batch.close()
        sender.close()
        for s in socks:
            s.close()


@needs_sendmmsg
def test_a_full_receiver_drops_the_rest_of_the_pass_once_and_counts_it(tmp_path):
    # UDP on loopback never runs out of room (each datagram is delivered inside the send), so
    # a full queue is made with a Unix datagram socket nobody reads (a few datagrams fill it).
    path = str(tmp_path / "full")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.setblocking(False)
    batch = sendmmsg.DatagramBatch(sender)
    try:
        address = struct.pack("=H", socket.AF_UNIX) + path.encode() + b"\0"
        payloads = tuple(bytes([n]) * 100 for n in range(40))
        plan = sendmmsg.FramePlan(payloads, tuple((i, i + 1, 112) for i in range(40)), 12)
        headers = pack_headers(40, PT_JPEG, 0, 0, 1)
        for token in range(3):
            assert batch.add(token, address, headers, plan)
        started = time.monotonic()
        dropped = batch.send()
        assert time.monotonic() - started < 0.5  # never waits for room
        assert batch.calls == 2  # what went, then EAGAIN once: not retried in a loop
        received = drain(receiver)
        assert 0 < len(received) < 40  # the first frame in part, the rest dropped
        assert received[0] == headers[:12] + payloads[0]
        assert dropped == [(0, 40 - len(received), 40, 0, False), (1, 40, 40, 0, False),
                           (2, 40, 40, 0, False)]
        assert batch.datagrams == len(received)
        assert batch.send() == [] and batch.calls == 2  # an empty batch makes no call
    finally:
        batch.close()
        sender.close()
        receiver.close()


@needs_sendmmsg
def test_a_message_failing_alone_costs_only_its_own_session():
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("0.0.0.0", 0))
    sender.setblocking(False)
    good, other = receivers(2)
    batch = UdpBatch(sender)
    try:
        # Broadcast without SO_BROADCAST: EACCES for that destination's messages only.
        bad_sink = UdpSink(sender, sender, ("255.255.255.255", 9), None, False)
        sinks = [UdpSink(sender, sender, good.getsockname(), None, False), bad_sink,
                 UdpSink(sender, sender, other.getsockname(), None, False)]
        sessions = [make_session() for _ in sinks]
        for session, sink in zip(sessions, sinks, strict=True):
            send_frame(session, sink, FrameShare(FRAMES[1]), 0, batch)
        batch.flush()
        assert len(drain(good)) == len(drain(other)) == len(FRAMES[1])
        assert sessions[1].packets_dropped == len(FRAMES[1]) and bad_sink.errors >= 1
        assert sessions[0].packets_dropped == sessions[2].packets_dropped == 0
    finally:
        batch.close()
        sender.close()
        good.close()
        other.close()


def record(server, frames: int, sessions: int = 3) -> list[list[tuple]]:
    """Each of ``sessions`` UDP sessions' packets of the first ``frames`` frames of
    hd.mjpeg, relative to the stream's start (played at once, so they share passes)."""
    clients, pairs, ids = [], [], []
    try:
        for _ in range(sessions):
            client = RtspTestClient(server.port)
            rtp, rtcp = udp_pair()
            rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # read one by one
            clients.append(client)
            pairs.append((rtp, rtcp))
            port = rtp.getsockname()[1]
            reply = client.request("SETUP", "hd.mjpeg",
                                   Transport=f"RTP/AVP;unicast;client_port={port}-{port + 1}")
            ids.append(reply.headers.get("Session").split(";")[0])
        for client, session in zip(clients, ids, strict=True):
            client.request("PLAY", "hd.mjpeg", Session=session)
        streams = []
        for rtp, _ in pairs:
            rtp.settimeout(5)
            packets, markers = [], 0
            while markers < frames:
                packet = RtpPacket.parse(rtp.recv(65536))
                packets.append(packet)
                markers += packet.marker
            first = packets[0]
            streams.append([
                ((p.sequence_number - first.sequence_number) & 0xFFFF,
                 (p.timestamp - first.timestamp) & 0xFFFFFFFF, p.marker, p.payload_type,
                 p.payload) for p in packets])
        return streams
    finally:
        for client in clients:
            client.close()
        for rtp, rtcp in pairs:
            rtp.close()
            rtcp.close()


@needs_sendmmsg
def test_batched_and_plain_servers_deliver_the_same_streams(server_factory):
    streams = {}
    for gso in (True, False):
        for batched in (True, False):
            server = server_factory(fps=60, gso=gso)
            if not batched:
                server.streamer.scheduler.batch = None  # the sinks' own sendmsg path
            else:
                assert server.streamer.scheduler.batch is not None
            streams[gso, batched] = record(server, 8)
    reference = streams[True, False][0]
    assert len(reference) > 100
    for key, sessions in streams.items():
        for stream in sessions:
            assert stream == reference, key


def test_a_new_session_sends_at_once_then_falls_on_the_grid_of_its_rate():
    fps = 30.0
    now = [100.0]
    scheduler = PacingScheduler(1400, clock=lambda: now[0])
    first, near, far, other_rate = (make_session(fps), make_session(fps), make_session(fps),
                                    make_session(fps=25))
    sink = object()
    scheduler.play(first, sink)  # type: ignore[arg-type]
    now[0] += 0.2 / fps
    scheduler.play(near, sink)  # type: ignore[arg-type]
    scheduler.play(other_rate, sink)  # type: ignore[arg-type]
    now[0] = 100.0 + 7.4 / fps
    scheduler.play(far, sink)  # type: ignore[arg-type]
    entries = {pace.session: (deadline, pace) for deadline, _, pace in scheduler._heap}
    # Every first frame is due at its PLAY.
    assert [entries[s][0] for s in (first, near, other_rate, far)] == \
        [100.0, 100.0 + 0.2 / fps, 100.0 + 0.2 / fps, 100.0 + 7.4 / fps]
    # The second frame of each is due on the grid of the first session at its rate, at the
    # grid point nearest one interval after its PLAY (0.8 and 0.4 intervals later here).
    for session, second in ((first, 100.0 + 1 / fps), (near, 100.0 + 1 / fps),
                            (far, 100.0 + 8 / fps)):
        pace = entries[session][1]
        assert pace.first_frame == session.position + 1
        assert abs(pace.start - second) < 1e-9, session
    # Another rate: a grid of its own, from its PLAY.
    pace = entries[other_rate][1]
    assert abs(pace.start - (100.0 + 0.2 / fps + 1 / 25)) < 1e-9


# --- interleaved ------------------------------------------------------------------------------

def tcp_pair(timeout: float | None = 5.0, rcvbuf: int | None = None):
    """(server side, client side) of a loopback TCP connection; the server side with the
    timeout the RTSP server gives its connections."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        if rcvbuf:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        client.connect(listener.getsockname())
        server_side, _ = listener.accept()
    server_side.settimeout(timeout)
    return server_side, client


def interleaved_bytes(channel: int, headers: bytes, payloads: tuple[bytes, ...]) -> bytes:
    return b"".join(format_interleaved(channel, h + p)
                    for h, p in zip(split_headers(headers), payloads, strict=True))


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_interleaved_frames_and_replies_arrive_byte_for_byte_in_order(timeout):
    server_side, client = tcp_pair(timeout)
    writer = ConnectionWriter(server_side)
    try:
        sink = InterleavedSink(writer, 2, 3)
        session = make_session()
        session.next_seq = 65530
        expected = b""
        for number, payloads in enumerate(FRAMES[:4]):
            seq = session.next_seq
            send_frame(session, sink, FrameShare(payloads), 90 * number)
            expected += interleaved_bytes(2, pack_headers(len(payloads), PT_JPEG, seq,
                                                          90 * number, session.ssrc), payloads)
            reply = f"RTSP/1.0 200 OK\r\nCSeq: {number}\r\n\r\n".encode()
            writer.send_reply(reply)
            expected += reply
        sink.send_rtcp(b"\x81\xc9\x00\x01" + bytes(4))
        expected += format_interleaved(3, b"\x81\xc9\x00\x01" + bytes(4))
        client.settimeout(5)
        got = b""
        while len(got) < len(expected):
            got += client.recv(1 << 20)
        assert got == expected
        assert writer.frames_dropped == 0 and session.packets_dropped == 0
    finally:
        writer.close()
        server_side.close()
        client.close()


def test_a_stalled_reader_loses_its_own_frames_and_delays_nobody():
    before = set(threading.enumerate())
    stalled_side, stalled = tcp_pair(rcvbuf=4096)
    healthy_side, healthy = tcp_pair()
    slow_side, slow = tcp_pair(rcvbuf=4096)
    writers = [ConnectionWriter(s, max_queued_frames=8)
               for s in (stalled_side, healthy_side, slow_side)]
    try:
        sinks = [InterleavedSink(w, 0, 1) for w in writers]
        sessions = [make_session() for _ in sinks]
        got: dict[str, bytes] = {"healthy": b"", "slow": b""}

        def read(name: str, sock: socket.socket, pause: float) -> None:
            sock.settimeout(5)
            while True:
                try:
                    data = sock.recv(1 << 16)
                except OSError:
                    return
                if not data:
                    return
                got[name] += data
                time.sleep(pause)

        readers = [threading.Thread(target=read, args=("healthy", healthy, 0)),
                   threading.Thread(target=read, args=("slow", slow, 0.002))]
        for thread in readers:
            thread.start()
        frames = 150
        longest = 0.0
        for number in range(frames):  # 57 KB frames at 200 fps to each, as the scheduler would
            for session, sink in zip(sessions, sinks, strict=True):
                started = time.monotonic()
                send_frame(session, sink, FrameShare(FRAMES[0]), number)
                longest = max(longest, time.monotonic() - started)
            time.sleep(0.005)
        assert longest < 0.1  # no send waited for a reader
        size = len(interleaved_bytes(0, pack_headers(41, PT_JPEG, 0, 0, 0), FRAMES[0]))
        wait_for(lambda: len(got["healthy"]) >= frames * size, 10)
        assert len(got["healthy"]) == frames * size and writers[1].frames_dropped == 0
        assert writers[0].frames_dropped > 0
        assert sessions[0].frames_dropped == writers[0].frames_dropped
        # The slow reader gets whole frames only, the ones it could not take dropped whole.
        wait_for(lambda: len(got["slow"]) == (frames - writers[2].frames_dropped) * size, 10)
        assert len(got["slow"]) == (frames - writers[2].frames_dropped) * size
        events = []
        reader = RtspReader()
        reader.receive_data(got["slow"])
        while isinstance(event := reader.next_event(), InterleavedFrame):
            events.append(event)
        assert len(events) == (frames - writers[2].frames_dropped) * 41
    finally:
        for writer in writers:
            writer.close()
        for sock in (stalled_side, healthy_side, slow_side):
            sock.close()
        for thread in readers:
            thread.join(5)
        for sock in (stalled, healthy, slow):
            sock.close()
    # The writer loop's thread ends once no connection waits for room.
    assert wait_for(lambda: set(threading.enumerate()) <= before, 5)


def test_a_reply_to_a_reader_that_never_reads_times_out():
    server_side, client = tcp_pair(timeout=0.5, rcvbuf=4096)
    writer = ConnectionWriter(server_side)
    try:
        assert writer.send_media([bytes(16 << 20)])  # more than both buffers hold
        started = time.monotonic()
        with pytest.raises(OSError):
            writer.send_reply(b"RTSP/1.0 200 OK\r\nCSeq: 9\r\n\r\n" * 1000)
        assert time.monotonic() - started < 3
    finally:
        writer.close()
        server_side.close()
        client.close()


# --- shares made ahead -------------------------------------------------------------------------

class RecordingSink:
    """A sink that notes, at each send, which frames' shares the scheduler holds."""

    def __init__(self, scheduler: PacingScheduler) -> None:
        self.scheduler = scheduler
        self.held_at_send: list[set[int]] = []

    def send_rtp(self, headers, share) -> int:
        self.held_at_send.append({key[1] for key in self.scheduler._shares})
        return 0

    def send_rtcp(self, data: bytes) -> None:
        pass


def playing_session(media, fps: float = 1000.0) -> Session:
    session = make_session(fps)
    session.media = media
    session.state = SessionState.PLAYING
    return session


def test_shares_of_the_next_frames_are_made_after_the_pass_not_in_it(media_root):
    media = MediaLibrary(str(media_root)).open("short.mjpeg")
    scheduler = PacingScheduler(1400)
    sink = RecordingSink(scheduler)
    session = playing_session(media)
    pace = _Pace(session, sink, session.generation, 0.0, 0)  # type: ignore[arg-type]
    scheduler._send_pass([(pace.order, 0.0, pace)])
    assert sink.held_at_send == [{0}]  # the frame due, and nothing ahead yet
    assert {key[1] for key in scheduler._shares} == set(range(READ_AHEAD_FRAMES + 1))
    for _ in range(READ_AHEAD_FRAMES):
        scheduler._send_pass([(pace.order, 0.0, pace)])
    assert session.position == READ_AHEAD_FRAMES + 1 and len(sink.held_at_send) == \
        READ_AHEAD_FRAMES + 1
    # Frame 8 was the last made ahead: frames 9-16 were made after its pass, not before.
    assert max(sink.held_at_send[-1]) == READ_AHEAD_FRAMES
    assert max(key[1] for key in scheduler._shares) == 2 * READ_AHEAD_FRAMES


def test_shares_are_dropped_once_nothing_plays(media_root):
    media = MediaLibrary(str(media_root)).open("short.mjpeg")
    scheduler = PacingScheduler(1400)
    sink = RecordingSink(scheduler)
    session = playing_session(media)
    scheduler.start()
    try:
        scheduler.play(session, sink)  # type: ignore[arg-type]
        assert wait_for(lambda: session.state is SessionState.READY, 10)  # its 40 frames
        assert len(sink.held_at_send) == media.frame_count
        assert wait_for(lambda: not scheduler._shares, 5)  # no file kept open by them
    finally:
        scheduler.stop()
