"""End-to-end: the standard dialect over real sockets, errors on the wire, resources, the CLI."""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import (
    ROOT,
    RtspTestClient,
    arrivals_after_drain,
    no_leaks,
    stop_process,
    udp_pair,
    wait_for,
)
from make_sample import read_frame_number
from PIL import Image

from mjpeg_rtsp.rfc2435 import JpegDepacketizer
from mjpeg_rtsp.rtcp import (
    Bye,
    ReceiverReport,
    SenderReport,
    SourceDescription,
    build_compound,
    parse_compound,
)
from mjpeg_rtsp.rtp import RtpPacket
from mjpeg_rtsp.session import SessionState


def setup_udp(client: RtspTestClient, name: str, rtp: socket.socket) -> str:
    port = rtp.getsockname()[1]
    reply = client.request(
        "SETUP", f"{name}/stream=0", Transport=f"RTP/AVP;unicast;client_port={port}-{port + 1}"
    )
    assert reply.status == 200, reply
    return reply.headers.get("Session").split(";")[0]


def play_udp(client: RtspTestClient, name: str, rtp: socket.socket) -> str:
    """SETUP to ``rtp`` and PLAY; the session id."""
    session = setup_udp(client, name, rtp)
    assert client.request("PLAY", name, Session=session).status == 200
    return session


def test_standard_flow_over_udp(server, rtsp_client):
    client = rtsp_client(server.port)
    rtp, rtcp = udp_pair()
    with rtp, rtcp:
        assert client.request("OPTIONS", "*").status == 200
        describe = client.request("DESCRIBE", "movie.Mjpeg", Accept="application/sdp")
        assert describe.status == 200 and b"a=rtpmap:26 JPEG/90000" in describe.body
        session = setup_udp(client, "movie.Mjpeg", rtp)
        play = client.request("PLAY", "movie.Mjpeg/", Session=session, Range="npt=2.5-")
        assert play.status == 200
        assert play.headers.get("Range") == "npt=2.500-20.000"
        info = dict(p.split("=", 1) for p in play.headers.get("RTP-Info").split(";"))
        rtp.settimeout(5)
        first = RtpPacket.parse(rtp.recv(65536))
        # RTP-Info announces exactly the first packet's sequence number and timestamp.
        assert first.sequence_number == int(info["seq"])
        assert first.timestamp == int(info["rtptime"])
        assert first.payload_type == 26
        depacketizer = JpegDepacketizer()
        frames, timestamps = [], []
        packet = first
        while len(frames) < 5:
            frame = depacketizer.push(packet.payload, packet.timestamp, packet.marker)
            if frame:
                frames.append(frame)
                timestamps.append(packet.timestamp)
            packet = RtpPacket.parse(rtp.recv(65536))
        numbers = [read_frame_number(Image.open(io.BytesIO(f))) for f in frames]
        assert numbers == [50, 51, 52, 53, 54]  # 2.5 s x 20 fps
        steps = {b - a for a, b in zip(timestamps, timestamps[1:], strict=False)}
        assert steps == {4500}  # 90 kHz / 20 fps
        # A sender report with a CNAME arrives on the RTCP port, for this SSRC.
        rtcp.settimeout(5)
        report = parse_compound(rtcp.recv(65536))
        assert isinstance(report[0], SenderReport) and report[0].ssrc == first.ssrc
        assert isinstance(report[1], SourceDescription)

        # The server sends a frame under the session's lock, which PAUSE takes before it is
        # answered: every packet sent before the pause is queued here already.
        assert client.request("PAUSE", "movie.Mjpeg/", Session=session).status == 200
        assert arrivals_after_drain(rtp, 0.4) == 0  # nothing while paused
        assert client.request("TEARDOWN", "movie.Mjpeg/", Session=session).status == 200
        rtcp.settimeout(2)
        kinds = []
        while not any(isinstance(k, Bye) for k in kinds):
            kinds = parse_compound(rtcp.recv(65536))
        assert len(server.registry) == 0


def test_interleaved_flow(server, rtsp_client):
    client = rtsp_client(server.port)
    reply = client.request("SETUP", "short.mjpeg/stream=0",
                           Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
    assert reply.status == 200
    assert reply.headers.get("Transport").startswith("RTP/AVP/TCP;unicast;interleaved=0-1")
    session = reply.headers.get("Session").split(";")[0]
    assert client.request("PLAY", "short.mjpeg/", Session=session).status == 200
    frames = client.interleaved(30)
    channels = {f.channel for f in frames}
    assert channels <= {0, 1} and 0 in channels
    depacketizer = JpegDepacketizer()
    decoded = []
    for item in frames:
        if item.channel == 0:
            packet = RtpPacket.parse(item.data)
            frame = depacketizer.push(packet.payload, packet.timestamp, packet.marker)
            if frame:
                decoded.append(read_frame_number(Image.open(io.BytesIO(frame))))
    assert decoded == list(range(len(decoded))) and decoded
    # A request between media frames is answered on the same connection.
    assert client.request("GET_PARAMETER", "short.mjpeg/", Session=session).status == 200
    assert client.request("TEARDOWN", "short.mjpeg/", Session=session).status == 200


def test_errors_on_the_wire_keep_the_connection(server, rtsp_client):
    client = rtsp_client(server.port)
    assert client.request("DESCRIBE", "nope.Mjpeg").status == 404
    assert client.request("DESCRIBE", "../movie.Mjpeg").status == 404
    assert client.request("FROB", "movie.Mjpeg").status == 501
    assert client.request("PLAY", "movie.Mjpeg", Session="42").status == 454
    client.send(b"PLAY rtsp://x/movie.Mjpeg RTSP/2.0\r\nCSeq: 40\r\n\r\n")
    reply = client.response()
    assert reply.status == 505 and reply.cseq == "40"
    client.send(b"garbage garbage\r\n\r\n")
    assert client.response().status == 400
    assert client.request("OPTIONS", "*").status == 200


def test_oversized_header_gets_an_error_and_close(server, rtsp_client):
    client = rtsp_client(server.port)
    client.send(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: " + b"a" * 20000)
    assert client.response().status == 400
    with pytest.raises(ConnectionError):
        client.response()


def test_session_limit(server_factory, rtsp_client):
    server = server_factory(max_sessions=2)
    client = rtsp_client(server.port)
    transport = "RTP/AVP/TCP;unicast;interleaved=0-1"
    assert client.request("SETUP", "movie.Mjpeg", Transport=transport).status == 200
    assert client.request("SETUP", "movie.Mjpeg", Transport=transport).status == 200
    assert client.request("SETUP", "movie.Mjpeg", Transport=transport).status == 503


def test_session_ends_when_its_connection_closes(server, rtsp_client):
    client = rtsp_client(server.port)
    rtp, rtcp = udp_pair()
    with rtp, rtcp:
        playing = server.registry.get(play_udp(client, "movie.Mjpeg", rtp))
        rtp.settimeout(2)
        rtp.recv(65536)
        client.close()
        # Ended: out of the registry, then (under its lock, so after any frame being sent)
        # back to INIT.
        wait_for(lambda: len(server.registry) == 0 and playing.state is SessionState.INIT, 5)
        assert len(server.registry) == 0 and playing.state is SessionState.INIT
        assert arrivals_after_drain(rtp, 0.3) == 0


def test_session_times_out_without_keepalive(server_factory, rtsp_client):
    server = server_factory(session_timeout=1)
    client = rtsp_client(server.port)
    rtp, rtcp = udp_pair()
    with rtp, rtcp:
        session = play_udp(client, "movie.Mjpeg", rtp)
        wait_for(lambda: len(server.registry) == 0, 6, 0.1)
        assert len(server.registry) == 0
        assert client.request("PLAY", "movie.Mjpeg", Session=session).status == 454


def test_receiver_reports_keep_a_session_alive(server_factory, rtsp_client):
    """RTCP receiver reports count as liveness (RFC 2326 section 12.37), RTSP silent."""
    server = server_factory(session_timeout=1)
    client = rtsp_client(server.port)
    rtp, rtcp = udp_pair()
    with rtp, rtcp:
        session = play_udp(client, "movie.Mjpeg", rtp)
        report = build_compound(ReceiverReport(0x1234), SourceDescription.cname(0x1234, "t"))
        server_rtcp = ("127.0.0.1", server.streamer.rtcp_port)
        for _ in range(12):  # 3 s, three times the timeout
            rtcp.sendto(report, server_rtcp)
            time.sleep(0.25)
        alive = server.registry.get(session)
        assert alive is not None and alive.receiver_reports >= 10
        assert client.request("PAUSE", "movie.Mjpeg", Session=session).status == 200


def test_threads_and_files_return_to_their_starting_count(server, rtsp_client):
    with no_leaks(server, timeout=10):
        for i in range(20):
            client = RtspTestClient(server.port)
            transport = ("RTP/AVP/TCP;unicast;interleaved=0-1" if i % 2
                         else "RTP/AVP;unicast;client_port=40000-40001")
            reply = client.request("SETUP", "movie.Mjpeg", Transport=transport)
            session = reply.headers.get("Session").split(";")[0]
            client.request("PLAY", "movie.Mjpeg", Session=session)
            client.close()


def run_server(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "Server.py"), *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_cli_prints_urls_and_stops_cleanly_on_ctrl_c(media_root):
    process = run_server("0", "--host", "127.0.0.1", "--root", str(media_root))
    try:
        first = process.stdout.readline()
        assert first.startswith("RTSP server listening on port ")
        port = int(first.split()[5].rstrip(","))
        urls = [process.stdout.readline().strip() for _ in range(3)]
        assert f"rtsp://127.0.0.1:{port}/movie.Mjpeg" in urls
        client = RtspTestClient(port)
        reply = client.request("SETUP", "movie.Mjpeg",
                               Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
        session = reply.headers.get("Session").split(";")[0]
        assert client.request("PLAY", "movie.Mjpeg", Session=session).status == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
        stderr = process.stderr.read()
        assert "Traceback" not in stderr
        assert f"session {session} ended (server shutting down)" in stderr or \
            f"session {session} ended (connection closed)" in stderr
        client.close()
    finally:
        stop_process(process)


def test_cli_port_in_use_is_one_line_and_exit_1():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = run_server(str(port), "--host", "127.0.0.1")
        out, err = process.communicate(timeout=10)
    assert process.returncode == 1
    assert err.strip() == f"error: port {port} is already in use"


def test_cli_help_and_bad_arguments():
    out = subprocess.run([sys.executable, str(ROOT / "Server.py"), "--help"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0
    for option in ["--root", "--host", "--fps", "--max-sessions", "--session-timeout", "--mtu",
                   "-v"]:
        assert option in out.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "Server.py"), "notaport"],
                         capture_output=True, text=True, timeout=10)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_a_stalled_interleaved_reader_delays_nobody(server_factory):
    server = server_factory(fps=100)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", server.port))
    stalled.sendall(
        b"SETUP rtsp://127.0.0.1/hd.mjpeg/stream=0 RTSP/1.0\r\nCSeq: 1\r\n"
        b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
    )
    reply = stalled.recv(4096).decode()
    session = reply.split("Session: ")[1].split(";")[0]
    stalled.sendall(
        f"PLAY rtsp://127.0.0.1/hd.mjpeg/ RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n"
        .encode()
    )
    try:
        # Its socket buffers fill up (50 KB frames at 100 fps) and it never reads again.
        slow = server.registry.get(session)
        wait_for(lambda: slow.packets_dropped, 10)
        healthy = RtspTestClient(server.port)
        rtp, rtcp = udp_pair()
        with rtp, rtcp:
            play_udp(healthy, "short.Mjpeg", rtp)
            rtp.settimeout(2)
            depacketizer = JpegDepacketizer()
            frames = []
            while len(frames) < 40:
                packet = RtpPacket.parse(rtp.recv(65536))
                frame = depacketizer.push(packet.payload, packet.timestamp, packet.marker)
                if frame:
                    frames.append(read_frame_number(Image.open(io.BytesIO(frame))))
            assert frames == list(range(40))
        healthy.close()
        assert slow.packets_dropped > 0 and slow.state.value == "Playing"
    finally:
        stalled.close()


def test_idle_and_slow_connections_are_closed(server_factory):
    server = server_factory(idle_timeout=1)
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    textbook = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        textbook.sendall(
            b"SETUP movie.Mjpeg RTSP/1.0\nCSeq: 1\nTransport: RTP/UDP; client_port= 40000"
        )
        assert textbook.recv(1024).startswith(b"RTSP/1.0 200 OK\n")
        started = time.monotonic()
        closed = False
        for byte in b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n" * 3:  # never completes in time
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.2)
            if time.monotonic() - started > 5:
                break
        assert closed or slow.recv(1) == b""
        assert idle.recv(1) == b""  # closed by the server
        assert time.monotonic() - started < 5
        # The connection holding a (textbook) session stays, though it sends nothing more.
        assert len(server.registry) == 1
        textbook.sendall(b"TEARDOWN movie.Mjpeg RTSP/1.0\nCSeq: 2\nSession: "
                         + server.registry.all()[0].id.encode())
        assert textbook.recv(1024).startswith(b"RTSP/1.0 200 OK\n")
    finally:
        for sock in (idle, slow, textbook):
            sock.close()
