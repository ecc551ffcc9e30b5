"""Large files are indexed as they play: a file over EAGER_INDEX_BYTES is ready after its first
part, the rest is indexed ahead of the playing position, and everything a client sees stays
right (the range becomes known, seeks index up to their frame, damage ends the file there)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import RtspTestClient, textbook_frames

from mjpeg_rtsp import media as media_module
from mjpeg_rtsp.media import MjpegFile
from mjpeg_rtsp.ports import bind_rtp_pair
from mjpeg_rtsp.rtcp import Bye, parse_compound
from mjpeg_rtsp.rtp import RtpPacket


@pytest.fixture
def small_eager(monkeypatch):
    """Make "large" mean over 256 KiB, so a test file of a few MiB is indexed lazily."""
    monkeypatch.setattr(media_module, "EAGER_INDEX_BYTES", 256 << 10)
    monkeypatch.setattr(media_module, "LAZY_FIRST_BYTES", 64 << 10)


def write_raw(path: Path, frames: list[bytes], repeat: int, tail: bytes = b"") -> int:
    with open(path, "wb") as f:
        for _ in range(repeat):
            for frame in frames:
                f.write(frame)
        f.write(tail)
    return repeat * len(frames)


def test_a_large_file_is_indexed_on_demand(small_eager, tmp_path, media_root) -> None:
    frames = textbook_frames(media_root / "short.Mjpeg")
    total = write_raw(tmp_path / "big.mjpeg", frames, 10)
    media = MjpegFile(str(tmp_path / "big.mjpeg"))
    try:
        assert 0 < media.frame_count < total and not media.complete
        assert media.frame(150) == frames[150 % len(frames)]  # indexed up to it (and ahead)
        assert 150 < media.frame_count < total
        assert not media.has_frame(total) and media.complete and media.frame_count == total
        with pytest.raises(IndexError):
            media.frame(total)
    finally:
        media.close()


def test_damage_far_into_a_large_file_ends_it_there(small_eager, tmp_path, media_root) -> None:
    frames = textbook_frames(media_root / "short.Mjpeg")
    good = write_raw(tmp_path / "damaged.mjpeg", frames, 8, tail=frames[0][:500])
    media = MjpegFile(str(tmp_path / "damaged.mjpeg"))
    try:
        assert media.total_frames() == good  # the truncated last frame is not one
        assert media.frame(good - 1) == frames[(good - 1) % len(frames)]
    finally:
        media.close()


def udp_play(client: RtspTestClient, path: str, rtp: socket.socket, **headers: str):
    port = rtp.getsockname()[1]
    reply = client.request("SETUP", f"{path}/stream=0",
                           Transport=f"RTP/AVP;unicast;client_port={port}-{port + 1}")
    assert reply.status == 200, reply
    session = reply.headers.get("Session").split(";")[0]
    reply = client.request("PLAY", path, Session=session, **headers)
    return session, reply


def test_clients_see_an_open_range_then_the_real_one(small_eager, tmp_path, media_root,
                                                     server_factory) -> None:
    frames = textbook_frames(media_root / "short.Mjpeg")
    total = write_raw(tmp_path / "big.mjpeg", frames, 6)
    server = server_factory(root=tmp_path, fps=200)
    client = RtspTestClient(server.port)
    rtp, rtcp = bind_rtp_pair("127.0.0.1", socket.AF_INET)
    try:
        rtp.settimeout(5)
        rtcp.settimeout(10)
        reply = client.request("DESCRIBE", "big.mjpeg")
        assert b"a=range:npt=0-\r\n" in reply.body  # the end is not known yet
        session, reply = udp_play(client, "big.mjpeg", rtp)
        assert reply.status == 200 and reply.headers.get("Range") == "npt=0.000-"
        # Every frame arrives, in order, up to the real end, then BYE.
        markers = 0
        while markers < total:
            packet = RtpPacket.parse(rtp.recv(65536))
            markers += packet.marker
        while not any(isinstance(p, Bye) for p in parse_compound(rtcp.recv(65536))):
            pass
        reply = client.request("DESCRIBE", "big.mjpeg")
        assert f"a=range:npt=0-{total / 200:.3f}".encode() in reply.body
        # Seeks: to the last frame, and past the end.
        reply = client.request("PLAY", "big.mjpeg", Session=session,
                               Range=f"npt={(total - 1) / 200:.3f}-")
        assert reply.status == 200
        reply = client.request("PAUSE", "big.mjpeg", Session=session)
        reply = client.request("PLAY", "big.mjpeg", Session=session,
                               Range=f"npt={total / 200 + 1:.3f}-")
        assert reply.status == 457
    finally:
        client.close()
        rtp.close()
        rtcp.close()


def test_a_seek_far_ahead_indexes_up_to_it(small_eager, tmp_path, media_root,
                                           server_factory) -> None:
    frames = textbook_frames(media_root / "short.Mjpeg")
    total = write_raw(tmp_path / "big.mjpeg", frames, 6)
    server = server_factory(root=tmp_path)
    client = RtspTestClient(server.port)
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rtp.bind(("127.0.0.1", 0))
        rtp.settimeout(5)
        first = total - 5
        session, reply = udp_play(client, "big.mjpeg", rtp, Range=f"npt={first / 20:.3f}-")
        assert reply.status == 200, reply
        assert reply.headers.get("Range").startswith(f"npt={first / 20:.3f}-")
        payload = b""
        while True:  # one whole frame comes
            packet = RtpPacket.parse(rtp.recv(65536))
            payload += packet.payload
            if packet.marker:
                break
        assert len(payload) > 100
    finally:
        client.close()
        rtp.close()
