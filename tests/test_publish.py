"""Publishing end to end (issue 10, items 2 and 6): real publishers (ffmpeg ``-f rtsp``,
GStreamer ``rtspclientsink``, a scripted one on a raw socket) and real viewers (ffmpeg,
GStreamer, our player, a textbook-style client, the test RTSP client) on the same path.

What is checked: every viewer decodes while either publisher sends over UDP or TCP; a
publisher's payloads are forwarded unchanged when every player can take them and packetized
again when not (ffmpeg's single 64-byte table); a publisher killed or gone silent ends its path
(RTCP BYE to viewers, DESCRIBE 404, nothing leaked) and the path can be published again; and
every refusal (405, 403, 401, 455, 415) on the wire.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from conftest import (
    PEER_TIMEOUT,
    ROOT,
    RtspTestClient,
    assert_gst_reached_eos,
    jpeg_bytes,
    need_tool,
    no_leaks,
    require_tools,
    wait_for,
)
from PIL import Image
from test_textbook import TextbookClient

from mjpeg_rtsp.auth import AuthBackoff
from mjpeg_rtsp.jpeg import scan_jpeg
from mjpeg_rtsp.rfc2435 import packetize
from mjpeg_rtsp.rtcp import Bye, parse_compound
from mjpeg_rtsp.rtp import PT_JPEG, RtpPacket, pack_header
from mjpeg_rtsp.rtsp import Headers, Request, Response, format_interleaved, format_request

PATH = "live/cam"
SIZE = (320, 240)
FFMPEG_INVALID = "Invalid RTP/JPEG packet"
# The publisher's SDP for the scripted publisher (what ffmpeg announces, minus its tool line).
SDP = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=cam\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=video 0 RTP/AVP 26\r\na=control:streamid=0\r\n")


def url(server, path: str = PATH, host: str = "127.0.0.1", userinfo: str = "") -> str:
    return f"rtsp://{userinfo + '@' if userinfo else ''}{host}:{server.port}/{path}"


def text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


class Peer:
    """A peer process running beside the test; ``finish`` waits for it to end by itself."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.stdout = self.stderr = ""

    def finish(self, timeout: float = PEER_TIMEOUT) -> int:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(signal.SIGKILL)  # collects what it wrote
            pytest.fail(f"{self.args[0]} did not finish within {timeout} s: {self.args}\n"
                        f"{self.stderr[-2000:]}")
        self.stdout, self.stderr = text(out), text(err)
        return self.proc.returncode

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal it and collect its output (a second, harder signal if it lingers)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        self.stdout, self.stderr = self.stdout + text(out), self.stderr + text(err)
        return self.proc.returncode

    @property
    def log(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def peers() -> Iterator:
    started: list[Peer] = []

    def start(args: list[str]) -> Peer:
        peer = Peer(args)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.stop(signal.SIGKILL)


def ffmpeg_publish(peers, target: str, transport: str = "udp") -> Peer:
    ffmpeg = need_tool("ffmpeg")
    return peers([ffmpeg, "-hide_banner", "-loglevel", "warning", "-re",
                  "-f", "lavfi", "-i", f"testsrc2=size={SIZE[0]}x{SIZE[1]}:rate=25",
                  "-c:v", "mjpeg", "-huffman", "default", "-rtsp_transport", transport,
                  "-f", "rtsp", target])


def gst_publish(peers, target: str, transport: str = "udp") -> Peer:
    gst = need_tool("gst-launch-1.0")
    protocols = ["protocols=tcp"] if transport == "tcp" else []
    # format=I420: left to negotiate, videotestsrc gives jpegenc a 4:4:4 format, whose JPEGs
    # rtpjpegpay refuses ("Invalid component") and nothing is ever sent.
    return peers([gst, "-q", "videotestsrc", "is-live=true", "!",
                  f"video/x-raw,format=I420,width={SIZE[0]},height={SIZE[1]},framerate=25/1",
                  "!",
                  "jpegenc", "!", "rtspclientsink", f"location={target}", *protocols])


def ffmpeg_view(peers, target: str, transport: str, frames: int = 25) -> Peer:
    ffmpeg = need_tool("ffmpeg")
    return peers([ffmpeg, "-hide_banner", "-rtsp_transport", transport, "-i", target,
                  "-frames:v", str(frames), "-f", "null", "-"])


def assert_ffmpeg_decoded(peer: Peer, frames: int) -> None:
    assert peer.finish() == 0, peer.stderr[-3000:]
    assert FFMPEG_INVALID not in peer.stderr, peer.stderr[-3000:]
    assert f"{SIZE[0]}x{SIZE[1]}" in peer.stderr, peer.stderr[-3000:]
    counts = re.findall(r"frame=\s*(\d+)", peer.stderr)
    assert counts and int(counts[-1]) == frames, peer.stderr[-3000:]


def wait_on_air(server, publisher: Peer, path: str = PATH, timeout: float = 15):
    """The path's channel once its first frame has come (fails if the publisher exits first)."""
    def on_air():
        channel = server.live_paths.get(path)
        return channel is not None and channel.on_air

    wait_for(lambda: on_air() or publisher.proc.poll() is not None, timeout)
    if on_air():
        return server.live_paths.get(path)
    publisher.stop()
    pytest.fail(f"{path} not on air within {timeout} s:\n{publisher.log[-3000:]}")


def wait_off_air(server, path: str = PATH, timeout: float = 10) -> None:
    assert wait_for(lambda: server.live_paths.get(path) is None, timeout), \
        f"{path} still published"


# --- the scripted publisher and the RTSP viewer ----------------------------------------------


def request(client: RtspTestClient, method: str, path: str, body: bytes = b"",
            **headers: str) -> Response:
    """``client.request`` with a body (ANNOUNCE)."""
    client.cseq += 1
    fields = [("CSeq", str(client.cseq))] + [(k.replace("_", "-"), v) for k, v in headers.items()]
    client.send(format_request(Request(method, f"{client.base}/{path}", Headers(fields), body)))
    return client.response()


def announce(client: RtspTestClient, path: str = PATH, body: bytes = SDP,
             content_type: str = "application/sdp") -> Response:
    return request(client, "ANNOUNCE", path, body, Content_Type=content_type)


def start_recording(client: RtspTestClient, path: str = PATH) -> str:
    """ANNOUNCE, SETUP mode=record interleaved, RECORD: the session id."""
    assert announce(client, path).status == 200
    reply = client.request("SETUP", f"{path}/streamid=0",
                           Transport="RTP/AVP/TCP;unicast;interleaved=0-1;mode=record")
    assert reply.status == 200, reply
    session = reply.headers.get("Session").split(";")[0]
    assert client.request("RECORD", path, Session=session).status == 200
    return session


def send_frames(client: RtspTestClient, count: int, first: int = 0) -> None:
    """``count`` RTP/JPEG frames on channel 0, 40 ms of RTP time apart."""
    for number in range(first, first + count):
        jpeg = jpeg_bytes(Image.new("RGB", SIZE, (number * 30 % 256, 90, 150)), quality=75)
        payloads = packetize(jpeg, scan_jpeg(jpeg), 1400)
        data = b"".join(
            format_interleaved(0, pack_header(PT_JPEG, (number * 16 + i) & 0xFFFF,
                                              number * 3600, 0x1234ABCD,
                                              i == len(payloads) - 1) + payload)
            for i, payload in enumerate(payloads))
        client.send(data)


def play_interleaved(port: int, path: str = PATH) -> tuple[RtspTestClient, str]:
    client = RtspTestClient(port)
    reply = client.request("SETUP", f"{path}/stream=0",
                           Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
    assert reply.status == 200, reply
    session = reply.headers.get("Session").split(";")[0]
    assert client.request("PLAY", path, Session=session).status == 200
    return client, session


def rtp_packets(client: RtspTestClient) -> list[RtpPacket]:
    return [RtpPacket.parse(f.data) for f in client.frames if f.channel == 0]


def byes(client: RtspTestClient) -> list[Bye]:
    return [p for f in client.frames if f.channel == 1 for p in parse_compound(f.data)
            if isinstance(p, Bye)]


def read_until_bye(client: RtspTestClient, timeout: float = 10) -> Bye:
    deadline = time.monotonic() + timeout
    while not byes(client):
        assert time.monotonic() < deadline, "no RTCP BYE"
        client.interleaved(len(client.frames) + 1)  # the socket's timeout bounds each read
    return byes(client)[0]


def nonloopback_ip() -> str:
    """An address of this machine other than loopback, for a publisher 'from elsewhere'."""
    candidates = []
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:  # the address a datagram to a documentation address would leave from (no DNS)
        probe.connect(("192.0.2.1", 9))
        candidates.append(probe.getsockname()[0])
    except OSError:
        pass
    finally:
        probe.close()
    try:
        candidates.append(socket.gethostbyname(socket.gethostname()))
    except OSError:  # a host name that does not resolve
        pass
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True,
                             timeout=5).stdout
        candidates += re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    except (OSError, subprocess.TimeoutExpired):
        pass
    for ip in candidates:
        if not ip.startswith("127."):
            return ip
    if os.environ.get("CI"):
        pytest.fail("no non-loopback IPv4 address to publish from")
    pytest.skip("this machine has no non-loopback IPv4 address to publish from")


# --- 1. ffmpeg publishes, everyone watches -------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_ffmpeg_publishes_while_every_kind_of_viewer_watches(server_factory, peers,
                                                             transport) -> None:
    require_tools("ffmpeg", "gst-launch-1.0")
    server = server_factory(publish=True)
    publisher = ffmpeg_publish(peers, url(server), transport)
    channel = wait_on_air(server, publisher)
    viewers = [ffmpeg_view(peers, url(server), "udp"), ffmpeg_view(peers, url(server), "tcp")]
    gst = peers([need_tool("gst-launch-1.0"), "-e", "rtspsrc", f"location={url(server)}",
                 "!", "rtpjpegdepay", "!", "jpegdec", "!",
                 f"video/x-raw,width={SIZE[0]},height={SIZE[1]}", "!",
                 "fakesink", "num-buffers=25"])
    player = peers([sys.executable, str(ROOT / "ClientLauncher.py"), url(server),
                    "--headless", "--duration", "2", "--timeout", "10"])
    textbook = TextbookClient(server.port, PATH)
    try:
        assert textbook.send(textbook.SETUP) == 200
        assert textbook.send(textbook.PLAY) == 200
        packets = textbook.receive(10)
        assert len(packets) == 10
        for packet in packets:
            image = Image.open(io.BytesIO(packet.getPayload()))
            image.load()  # a whole JPEG in each datagram
            assert image.size == SIZE
        assert textbook.send(textbook.TEARDOWN) == 200
    finally:
        textbook.close()
    for viewer in viewers:
        assert_ffmpeg_decoded(viewer, 25)
    code = gst.finish()
    assert_gst_reached_eos(code, gst.log)
    assert player.finish() == 0, player.stderr[-3000:]
    summary = json.loads(player.stdout.strip().splitlines()[-1])
    assert summary["frames"] >= 25, summary  # 2 s at 25 fps
    assert (summary["width"], summary["height"]) == SIZE, summary
    # ffmpeg's single 64-byte table is not forwardable: frames went out packetized again.
    assert channel.latest.publisher_payloads == ()
    assert publisher.proc.poll() is None, publisher.log  # still publishing
    publisher.stop()
    wait_off_air(server)
    assert wait_for(lambda: len(server.registry) == 0, 10)


# --- 2. GStreamer publishes, ffmpeg watches; payloads forwarded as they came ------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_rtspclientsink_publishes_and_its_payloads_are_forwarded(server_factory, peers,
                                                                 transport) -> None:
    require_tools("ffmpeg", "gst-launch-1.0")
    # Packets the server makes itself carry at most 1000 bytes: a larger one is forwarded.
    server = server_factory(publish=True, max_payload=1000)
    publisher = gst_publish(peers, url(server), transport)
    channel = wait_on_air(server, publisher)
    viewer = ffmpeg_view(peers, url(server), "tcp")
    client, session = play_interleaved(server.port)
    client.interleaved(100)
    client.request("TEARDOWN", PATH, Session=session)
    client.close()
    assert_ffmpeg_decoded(viewer, 25)
    assert channel.latest.publisher_payloads, "rtspclientsink's payloads were not kept"
    sizes = [len(p.payload) for p in rtp_packets(client)]
    assert max(sizes) > 1000, sizes  # rtpjpegpay's packets, not re-packetized ones
    publisher.stop(signal.SIGINT)
    wait_off_air(server)


def test_ffmpeg_payloads_are_packetized_again(server_factory, peers) -> None:
    """ffmpeg sends one 64-byte table, which its own depacketizer refuses: the server makes
    its own packets (at most max_payload) with both tables."""
    server = server_factory(publish=True, max_payload=1000)
    publisher = ffmpeg_publish(peers, url(server), "tcp")
    wait_on_air(server, publisher)
    client, session = play_interleaved(server.port)
    client.interleaved(100)
    client.request("TEARDOWN", PATH, Session=session)
    client.close()
    packets = rtp_packets(client)
    assert max(len(p.payload) for p in packets) <= 1000
    first = next(p for p in packets if p.payload[1:4] == b"\0\0\0")
    assert first.payload[5] >= 128  # Q: tables in band, both of them
    assert int.from_bytes(first.payload[10:12], "big") == 128


# --- 3. a publisher killed mid-stream ------------------------------------------------------


def test_killed_publisher_ends_the_path_and_it_can_be_published_again(server_factory,
                                                                       peers) -> None:
    server = server_factory(publish=True)
    with no_leaks(server, timeout=10):
        publisher = ffmpeg_publish(peers, url(server), "udp")
        wait_on_air(server, publisher)
        client, session = play_interleaved(server.port)
        # Real players watching without a frame limit must end by themselves on the BYE.
        watchers = [ffmpeg_view(peers, url(server), "udp", frames=100000),
                    peers([need_tool("gst-launch-1.0"), "-e", "rtspsrc",
                           f"location={url(server)}", "protocols=tcp", "!", "rtpjpegdepay",
                           "!", "jpegdec", "!", "fakesink"])]
        try:
            client.interleaved(20)
            channel = server.live_paths.get(PATH)
            # Each has had frames (one that has none when the stream ends cannot decode).
            assert wait_for(lambda: server.streamer.fanout.viewer_count(channel) == 3 and all(
                s.frames_sent >= 5 for s in server.registry.all() if not s.record), 15), \
                [w.log[-2000:] for w in watchers]
            publisher.stop(signal.SIGKILL)
            bye = read_until_bye(client)
            assert b"publisher left" in bye.reason, bye
            wait_off_air(server)
            ffmpeg_viewer, gst_viewer = watchers
            assert ffmpeg_viewer.finish(15) == 0, ffmpeg_viewer.stderr[-3000:]
            assert FFMPEG_INVALID not in ffmpeg_viewer.stderr
            assert_gst_reached_eos(gst_viewer.finish(15), gst_viewer.log)
            assert client.request("DESCRIBE", PATH).status == 404
            assert client.request("PLAY", PATH, Session=session).status == 404  # nobody there
            again = ffmpeg_publish(peers, url(server), "udp")
            wait_on_air(server, again)
            # The ended session resumes on the path's new stream...
            count = len(client.frames)
            assert client.request("PLAY", PATH, Session=session).status == 200
            client.interleaved(count + 10)
            assert client.request("PAUSE", PATH, Session=session).status == 200
            # ... and a viewer that reconnects (TEARDOWN, a new SETUP and PLAY) plays too.
            assert client.request("TEARDOWN", PATH, Session=session).status == 200
            reply = client.request("SETUP", f"{PATH}/stream=0",
                                   Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
            assert reply.status == 200
            session = reply.headers.get("Session").split(";")[0]
            count = len(client.frames)
            assert client.request("PLAY", PATH, Session=session).status == 200
            client.interleaved(count + 20)
            assert len(rtp_packets(client)) > 20
            assert client.request("TEARDOWN", PATH, Session=session).status == 200
            again.stop(signal.SIGKILL)
            wait_off_air(server)
        finally:
            client.close()
    assert server.live_paths.names() == []
    assert server.streamer.fanout.viewer_count(channel) == 0
    assert not server.streamer._publishers and not server.streamer._publishers_by_source


# --- 4. refusals ---------------------------------------------------------------------------


def test_publishing_off_is_405(server, peers) -> None:
    client = RtspTestClient(server.port)
    try:
        reply = announce(client)
        assert reply.status == 405
        assert "ANNOUNCE" not in reply.headers.get("Public")
        assert "ANNOUNCE" not in client.request("OPTIONS", "*").headers.get("Public")
    finally:
        client.close()
    publisher = ffmpeg_publish(peers, url(server))
    assert publisher.finish() != 0
    assert "405" in publisher.stderr, publisher.stderr


def test_refusals_on_the_wire(server_factory) -> None:
    server = server_factory(publish=True)
    server.live_paths.declare("cam")
    client = RtspTestClient(server.port)
    try:
        assert "ANNOUNCE" in client.request("OPTIONS", "*").headers.get("Public")
        assert announce(client, "movie.Mjpeg").status == 403  # a media file's name
        assert announce(client, "cam").status == 403  # a --live path
        assert announce(client, "../x").status in (400, 403)
        assert announce(client, body=b"not sdp").status == 415
        assert announce(client, content_type="text/plain").status == 415
        audio = SDP + b"m=audio 0 RTP/AVP 0\r\n"
        assert announce(client, body=audio).status == 415
        assert client.request("SETUP", f"{PATH}/streamid=0", Transport=(
            "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record")).status == 455  # no ANNOUNCE
        session = start_recording(client)
        assert client.request("PLAY", PATH, Session=session).status == 455
        send_frames(client, 3)
        channel = wait_for(lambda: (c := server.live_paths.get(PATH)) and c.on_air and c, 5)
        assert channel, "the scripted publisher's frames did not put the path on air"
        viewer, viewer_session = play_interleaved(server.port)
        try:
            assert viewer.request("RECORD", PATH, Session=viewer_session).status == 455
            # Another connection may not take the busy path, nor announce it.
            assert announce(viewer).status == 455
        finally:
            viewer.close()
        assert client.request("TEARDOWN", PATH, Session=session).status == 200
        wait_off_air(server)
    finally:
        client.close()


def test_publisher_from_elsewhere_needs_publish_users(server_factory, peers) -> None:
    ip = nonloopback_ip()
    server = server_factory(host="0.0.0.0", publish=True)
    client = RtspTestClient(server.port, host=ip)
    try:
        assert client.sock.getsockname()[0] == ip  # the server sees a non-loopback peer
        assert announce(client).status == 403
        assert client.request("DESCRIBE", "movie.Mjpeg").status == 200  # viewers are welcome
    finally:
        client.close()
    refused = ffmpeg_publish(peers, url(server, host=ip))
    assert refused.finish() != 0
    assert "403" in refused.stderr, refused.stderr
    # From loopback the same server takes it.
    publisher = ffmpeg_publish(peers, url(server))
    wait_on_air(server, publisher)
    publisher.stop()


def test_publish_users_from_elsewhere(server_factory, peers) -> None:
    ip = nonloopback_ip()
    server = server_factory(host="0.0.0.0", publish_users={"pub": "s3cret"})
    publisher = ffmpeg_publish(peers, url(server, host=ip, userinfo="pub:s3cret"))
    wait_on_air(server, publisher)
    viewer = ffmpeg_view(peers, url(server), "tcp", frames=10)
    assert viewer.finish() == 0, viewer.stderr[-3000:]
    publisher.stop()
    wait_off_air(server)


def test_wrong_publisher_password_is_401(server_factory, peers, caplog) -> None:
    caplog.set_level(logging.INFO, logger="mjpeg_rtsp.service")
    server = server_factory(publish_users={"pub": "s3cret"})
    publisher = ffmpeg_publish(peers, url(server, userinfo="pub:wrong"))
    assert publisher.finish() != 0
    assert "401" in publisher.stderr, publisher.stderr
    assert "authentication failed for user 'pub'" in caplog.text
    assert server.live_paths.get(PATH) is None
    # Without credentials at all: 401 too (not the loopback pass).
    client = RtspTestClient(server.port)
    try:
        reply = announce(client)
        assert reply.status == 401
        assert 'realm="mjpeg-rtsp publishers"' in reply.headers.get("WWW-Authenticate")
    finally:
        client.close()


def test_viewers_and_publishers_authenticate_apart(server_factory, peers) -> None:
    """--users for viewers and --publish-users for publishers: each set of credentials opens
    its own door only. Viewers' auth applies to viewers only, publishers' to publishers."""
    server = server_factory(users={"viewer": "vpass"}, publish_users={"pub": "ppass"},
                            auth_backoff=AuthBackoff(free_failures=100))
    wrong_door = ffmpeg_publish(peers, url(server, userinfo="viewer:vpass"))
    assert wrong_door.finish() != 0
    assert "401" in wrong_door.stderr, wrong_door.stderr
    publisher = ffmpeg_publish(peers, url(server, userinfo="pub:ppass"))
    wait_on_air(server, publisher)
    cannot_watch = ffmpeg_view(peers, url(server, userinfo="pub:ppass"), "tcp", frames=5)
    assert cannot_watch.finish() != 0
    assert "401" in cannot_watch.stderr, cannot_watch.stderr
    viewer = ffmpeg_view(peers, url(server, userinfo="viewer:vpass"), "tcp", frames=10)
    assert viewer.finish() == 0, viewer.stderr[-3000:]
    assert publisher.proc.poll() is None
    publisher.stop()
    wait_off_air(server)


def test_viewers_auth_does_not_apply_to_loopback_publishers(server_factory, peers) -> None:
    """--users without --publish-users: viewers log in, a publisher on this machine need not
    (and a viewer's credentials give it nothing more)."""
    server = server_factory(users={"viewer": "vpass"}, publish=True)
    publisher = ffmpeg_publish(peers, url(server))
    wait_on_air(server, publisher)
    anonymous = ffmpeg_view(peers, url(server), "tcp", frames=5)
    assert anonymous.finish() != 0
    assert "401" in anonymous.stderr, anonymous.stderr
    viewer = ffmpeg_view(peers, url(server, userinfo="viewer:vpass"), "tcp", frames=10)
    assert viewer.finish() == 0, viewer.stderr[-3000:]
    publisher.stop()
    wait_off_air(server)


def test_second_publisher_on_a_busy_path_gets_455(server_factory, peers) -> None:
    server = server_factory(publish=True)
    first = ffmpeg_publish(peers, url(server))
    channel = wait_on_air(server, first)
    second = ffmpeg_publish(peers, url(server), "tcp")
    assert second.finish() != 0
    assert "455" in second.stderr, second.stderr
    assert server.live_paths.get(PATH) is channel
    frames = channel.frames_in
    assert wait_for(lambda: channel.frames_in >= frames + 10, 5), "the first stopped"
    viewer = ffmpeg_view(peers, url(server), "udp", frames=10)
    assert viewer.finish() == 0, viewer.stderr[-3000:]
    first.stop()
    wait_off_air(server)


# --- 5. a publisher gone silent ------------------------------------------------------------


def test_media_keeps_a_udp_publisher_alive(server_factory, peers) -> None:
    """ffmpeg sends no RTSP keep-alive while it publishes: its RTP must keep the session."""
    server = server_factory(publish=True, session_timeout=1)
    publisher = ffmpeg_publish(peers, url(server), "udp")
    channel = wait_on_air(server, publisher)
    frames = channel.frames_in
    assert wait_for(lambda: channel.frames_in >= frames + 60, 10)  # 2.4 s at 25 fps
    assert server.live_paths.get(PATH) is channel and publisher.proc.poll() is None
    publisher.stop()
    wait_off_air(server)


def test_silent_publisher_times_out(server_factory) -> None:
    server = server_factory(publish=True, session_timeout=2)
    with no_leaks(server, timeout=10):
        publisher = RtspTestClient(server.port)
        viewer: RtspTestClient | None = None
        try:
            session = start_recording(publisher)
            send_frames(publisher, 5)
            assert wait_for(lambda: (c := server.live_paths.get(PATH)) and c.on_air, 5)
            viewer, viewer_session = play_interleaved(server.port)
            send_frames(publisher, 5, first=5)
            silent_since = time.monotonic()
            viewer.interleaved(1)
            # The viewer keeps its own session alive meanwhile; the publisher says nothing.
            while not byes(viewer):
                assert time.monotonic() - silent_since < 8, "no BYE after the publisher's silence"
                assert viewer.request("GET_PARAMETER", PATH, Session=viewer_session).status \
                    == 200
                viewer.sock.settimeout(0.3)
                try:
                    viewer.interleaved(len(viewer.frames) + 1)
                except TimeoutError:
                    pass
                viewer.sock.settimeout(5)
            assert time.monotonic() - silent_since >= 1.5  # not before its timeout
            assert b"timed out" in byes(viewer)[0].reason
            wait_off_air(server)
            assert server.registry.get(session) is None
            assert viewer.request("DESCRIBE", PATH).status == 404
            assert viewer.request("TEARDOWN", PATH, Session=viewer_session).status == 200
        finally:
            publisher.close()
            if viewer is not None:
                viewer.close()


def test_viewer_that_joined_too_late_for_a_frame_still_gets_bye(server_factory) -> None:
    """The source ends between a viewer's PLAY and the next frame: the viewer must still be
    told (ffmpeg waited for media forever otherwise)."""
    server = server_factory(publish=True)
    publisher = RtspTestClient(server.port)
    try:
        session = start_recording(publisher)
        send_frames(publisher, 1)
        channel = wait_for(lambda: (c := server.live_paths.get(PATH)) and c.on_air and c, 5)
        assert channel
        viewer, viewer_session = play_interleaved(server.port)
        try:
            assert wait_for(lambda: server.streamer.fanout.viewer_count(channel) == 1, 5)
            assert publisher.request("TEARDOWN", PATH, Session=session).status == 200
            bye = read_until_bye(viewer)
            assert b"TEARDOWN" in bye.reason
            assert rtp_packets(viewer) == []  # no frame came before it
        finally:
            viewer.close()
    finally:
        publisher.close()
