"""Both UDP send paths (segmentation offload and one datagram per call) put the same bytes
on the wire."""

from __future__ import annotations

import socket

import pytest
from conftest import RtspTestClient, udp_pair

from mjpeg_rtsp.rtp import RtpPacket
from mjpeg_rtsp.streaming import GSO_MAX_SEGMENTS, gso_layout, gso_supported


def test_batches_are_equal_sized_with_a_short_last_one():
    full, short = b"p" * 1400, b"p" * 300
    assert gso_layout((full,) * 50 + (short,)) == ((0, 46, 1412), (46, 51, 1412))
    # A short packet in the middle ends its batch; a longer one starts a new one.
    assert gso_layout((full, short, full, full)) == ((0, 2, 1412), (2, 4, 1412))
    assert gso_layout((short, full)) == ((0, 1, 312), (1, 2, 1412))
    tiny = gso_layout((b"p" * 8,) * 100)
    assert all(end - first <= GSO_MAX_SEGMENTS for first, end, _ in tiny)
    assert [(first, end) for first, end, _ in tiny] == [(0, 64), (64, 100)]
    assert gso_layout(()) == ()


def record(server, frames: int) -> list[tuple]:
    """Packets of the first ``frames`` frames of hd.mjpeg, relative to the stream's start."""
    client = RtspTestClient(server.port)
    rtp, rtcp = udp_pair()
    packets = []
    try:
        port = rtp.getsockname()[1]
        reply = client.request("SETUP", "hd.mjpeg",
                               Transport=f"RTP/AVP;unicast;client_port={port}-{port + 1}")
        session = reply.headers.get("Session").split(";")[0]
        client.request("PLAY", "hd.mjpeg", Session=session)
        rtp.settimeout(5)
        markers = 0
        while markers < frames:
            packet = RtpPacket.parse(rtp.recv(65536))
            packets.append(packet)
            markers += packet.marker
    finally:
        client.close()
        rtp.close()
        rtcp.close()
    first = packets[0]
    return [
        ((p.sequence_number - first.sequence_number) & 0xFFFF,
         (p.timestamp - first.timestamp) & 0xFFFFFFFF, p.marker, p.payload_type, p.payload)
        for p in packets
    ]


def test_offload_and_plain_sends_deliver_identical_packets(server_factory):
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    with probe:
        if not gso_supported(probe):
            pytest.skip("this kernel has no UDP segmentation offload")
    offload = server_factory(fps=60, gso=True)
    plain = server_factory(fps=60, gso=False)
    assert offload.streamer.udp.gso and not plain.streamer.udp.gso
    with_offload, without = record(offload, 10), record(plain, 10)
    assert len(with_offload) > 100  # 1280x720 frames: dozens of packets each
    assert with_offload == without
