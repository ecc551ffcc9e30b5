"""Hostile media and scale against the server: padded, oversized, bomb and changing files,
connection floods and descriptors above 1023."""

from __future__ import annotations

import io
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, RtspTestClient, textbook_frames, udp_pair, wait_for
from PIL import Image

from mjpeg_rtsp.jpeg import JpegError
from mjpeg_rtsp.media import MAX_DATAGRAM_JPEG, MediaError, MediaLibrary, MjpegFile
from mjpeg_rtsp.rtcp import Bye, RtcpError, parse_compound
from mjpeg_rtsp.rtp import RtpPacket
from mjpeg_rtsp.transcode import make_rfc2435_compatible


def jpeg(size: tuple[int, int] = (64, 48), seed: int = 1, **options: object) -> bytes:
    rng = random.Random(seed)
    noise = bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3))
    img = Image.frombytes("RGB", size, noise)
    out = io.BytesIO()
    img.save(out, "JPEG", **options)
    return out.getvalue()


def bomb(width: int = 65000, height: int = 65000) -> bytes:
    """A small progressive JPEG (RFC 2435 cannot carry it: re-encoding needed) whose SOF
    claims ``width`` x ``height``."""
    data = bytearray(jpeg(progressive=True))
    sof = data.index(b"\xff\xc2")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def textbook_request(method: str, name: str, cseq: int, extra: str) -> bytes:
    return f"{method} {name} RTSP/1.0\nCSeq: {cseq}\n{extra}".encode()


def recv_reply(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    return sock.recv(65536)


# --- indexing: padding, speed classes, locking --------------------------------------------


def test_a_gibibyte_of_padding_indexes_right(tmp_path, server_factory, media_root):
    """1 GiB of zeros (a sparse hole) and mixed padding between raw JPEGs: three frames."""
    frames = textbook_frames(media_root / "short.Mjpeg")[:3]
    path = tmp_path / "padded.mjpeg"
    with open(path, "wb") as f:
        f.write(frames[0])
        f.truncate(len(frames[0]) + (1 << 30))
        f.seek(0, os.SEEK_END)
        f.write(frames[1] + b"\r\n\xff\x00" * 1000 + b"\xff" + frames[2])
    shutil.copy(media_root / "short.Mjpeg", tmp_path / "other.Mjpeg")
    media = MjpegFile(str(path))
    # Over EAGER_INDEX_BYTES: its first part is indexed at once, the rest on demand.
    assert media.frame_count == 1 and not media.complete
    assert media.total_frames() == 3 and media.complete
    assert [media.frame(n) for n in range(3)] == frames
    media.close()
    server = server_factory(root=tmp_path)
    client = RtspTestClient(server.port)
    try:
        reply = client.request("DESCRIBE", "padded.mjpeg")
        assert reply.status == 200 and b"a=range:npt=0-\r\n" in reply.body  # end not known yet
        assert client.request("DESCRIBE", "other.Mjpeg").status == 200
    finally:
        client.close()


def test_dense_padding_across_chunk_boundaries(tmp_path, media_root):
    frames = textbook_frames(media_root / "short.Mjpeg")[:3]
    chunk = 4 << 20
    # Zeros up to one byte before a chunk boundary, then 0xFF right at it, then the SOI.
    pad1 = bytes(chunk - 1 - len(frames[0]) % chunk + chunk) + b"\xff"
    pad2 = b"\r\n" * (3 << 20) + b"\xff\xff\xff"
    path = tmp_path / "dense.mjpeg"
    path.write_bytes(frames[0] + pad1 + frames[1] + pad2 + frames[2] + b"\x00" * 10)
    media = MjpegFile(str(path))
    assert [media.frame(n) for n in range(media.frame_count)] == frames
    media.close()
    path.write_bytes(frames[0] + bytes(5 << 20) + b"junk" + frames[1])
    with pytest.raises(MediaError, match="unexpected bytes after frame 0 at byte"):
        MjpegFile(str(path))


def test_a_frame_without_eoi_is_refused_without_reading_the_whole_file(tmp_path, media_root):
    frame = textbook_frames(media_root / "short.Mjpeg")[0]
    path = tmp_path / "noeoi.mjpeg"
    with open(path, "wb") as f:
        f.write(frame[:-2])  # the scan data never ends: a sparse GiB of zeros follows
        f.truncate(1 << 30)
    with pytest.raises(MediaError, match="larger than 16 MiB or truncated"):
        MjpegFile(str(path))


def test_indexing_one_file_does_not_hold_up_the_others(tmp_path, media_root):
    """While one file indexes (held here, standing in for a slow disk), other files open;
    a second request for the same file waits for that one indexing and shares it."""
    shutil.copy(media_root / "short.Mjpeg", tmp_path / "slow.Mjpeg")
    shutil.copy(media_root / "short.mjpeg", tmp_path / "fast.mjpeg")
    release, started = threading.Event(), threading.Event()
    indexed: list[str] = []

    class SlowDisk(MediaLibrary):
        def _index(self, real: str, name: str) -> MjpegFile:
            indexed.append(name)
            if name == "slow.Mjpeg":
                started.set()
                assert release.wait(10)
            return super()._index(real, name)

    library = SlowDisk(str(tmp_path))
    results: list[MjpegFile] = []
    threads = [threading.Thread(target=lambda: results.append(library.open("slow.Mjpeg")))
               for _ in range(2)]
    threads[0].start()
    assert started.wait(5)
    threads[1].start()
    assert library.open("fast.mjpeg").frame_count == 40  # not blocked by slow.Mjpeg
    assert not results
    release.set()
    for t in threads:
        t.join(5)
    assert len(results) == 2 and results[0] is results[1] and results[0].frame_count == 40
    assert indexed == ["slow.Mjpeg", "fast.mjpeg"]


def test_a_broken_file_is_indexed_once_until_it_changes(tmp_path, media_root):
    path = tmp_path / "broken.mjpeg"
    path.write_bytes(b"not a movie")
    calls = []

    class Counting(MediaLibrary):
        def _index(self, real: str, name: str) -> MjpegFile:
            calls.append(name)
            return super()._index(real, name)

    library = Counting(str(tmp_path))
    for _ in range(3):
        with pytest.raises(MediaError, match="not a Motion-JPEG file"):
            library.open("broken.mjpeg")
    assert len(calls) == 1
    shutil.copy(media_root / "short.mjpeg", path)
    assert library.open("broken.mjpeg").frame_count == 40


# --- frames that cannot be delivered ------------------------------------------------------


def big_frame() -> bytes:
    data = jpeg((400, 300), quality=95)
    assert len(data) > MAX_DATAGRAM_JPEG
    return data


def test_textbook_setup_refused_when_no_frame_fits_a_datagram(tmp_path, server_factory,
                                                              caplog):
    (tmp_path / "big.mjpeg").write_bytes(big_frame() * 3)
    server = server_factory(root=tmp_path)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(textbook_request("SETUP", "big.mjpeg", 1,
                                      "Transport: RTP/UDP; client_port= 25000"))
        reply = recv_reply(sock)
    assert reply.startswith(b"RTSP/1.0 415 ") and b"CSeq: 1" in reply
    assert "every frame is larger than one datagram" in caplog.text
    # A standard client can play it (RFC 2435 fragments it).
    client = RtspTestClient(server.port)
    try:
        reply = client.request("SETUP", "big.mjpeg/stream=0",
                               Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
        assert reply.status == 200
    finally:
        client.close()


def test_textbook_client_skips_frames_larger_than_a_datagram(tmp_path, server_factory,
                                                              media_root):
    small = textbook_frames(media_root / "short.Mjpeg")[:2]
    (tmp_path / "mixed.mjpeg").write_bytes(small[0] + big_frame() + small[1])
    server = server_factory(root=tmp_path)
    rtp, rtcp = udp_pair()
    with socket.create_connection(("127.0.0.1", server.port)) as sock, rtp, rtcp:
        port = rtp.getsockname()[1]
        sock.sendall(textbook_request("SETUP", "mixed.mjpeg", 1,
                                      f"Transport: RTP/UDP; client_port= {port}"))
        reply = recv_reply(sock).decode()
        assert reply.startswith("RTSP/1.0 200 ")
        session = reply.split("\n")[2].split(" ")[1]
        sock.sendall(textbook_request("PLAY", "mixed.mjpeg", 2, f"Session: {session}"))
        assert recv_reply(sock).startswith(b"RTSP/1.0 200 ")
        rtp.settimeout(2)
        got = [RtpPacket.parse(rtp.recv(65536)).payload for _ in range(2)]
    assert got == small
    assert wait_for(lambda: server.streamer.scheduler.skipped_frames == 1, 2)


def test_bomb_frames_are_never_decoded(tmp_path, server_factory, media_root, caplog):
    with pytest.raises(JpegError, match="65000x65000 pixels is too large to re-encode"):
        make_rfc2435_compatible(bomb())
    good = textbook_frames(media_root / "short.Mjpeg")[:2]
    (tmp_path / "bomb.mjpeg").write_bytes(bomb() * 2)
    (tmp_path / "onebomb.mjpeg").write_bytes(good[0] + bomb(7681, 4320) + good[1])
    server = server_factory(root=tmp_path)
    client = RtspTestClient(server.port)
    try:
        reply = client.request("SETUP", "bomb.mjpeg/stream=0",
                               Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
        assert reply.status == 415
        assert "no frame can be sent as RFC 2435: they are 65000x65000" in caplog.text
        reply = client.request("SETUP", "onebomb.mjpeg/stream=0",
                               Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
        assert reply.status == 200
        session = reply.headers.get("Session").split(";")[0]
        assert client.request("PLAY", "onebomb.mjpeg", Session=session).status == 200
        # The two good frames arrive whole (the marker bit ends each), the bomb is skipped.
        def frames_done() -> int:
            return sum(1 for f in client.frames
                       if f.channel == 0 and RtpPacket.parse(f.data).marker)

        while frames_done() < 2:
            client.interleaved(len(client.frames) + 1)  # a stall times out and fails
    finally:
        client.close()
    assert wait_for(lambda: server.streamer.scheduler.skipped_frames == 1, 2)
    assert "frame 1 cannot be sent to standard clients" in caplog.text
    assert not [r for r in caplog.records if r.exc_info]


# --- a file that changes while it plays ---------------------------------------------------


def bye_arrives(rtcp: socket.socket, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    rtcp.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            packets = parse_compound(rtcp.recv(65536))
        except (TimeoutError, RtcpError):
            continue
        if any(isinstance(p, Bye) for p in packets):
            return True
    return False


@pytest.mark.parametrize("change", ["truncate", "garbage"])
def test_a_file_changed_while_playing_ends_with_bye(change, tmp_path, server_factory,
                                                    media_root, caplog):
    shutil.copy(media_root / "movie.Mjpeg", tmp_path / "clip.Mjpeg")
    shutil.copy(media_root / "short.mjpeg", tmp_path / "other.mjpeg")
    server = server_factory(root=tmp_path)
    client = RtspTestClient(server.port)
    rtp, rtcp = udp_pair()
    try:
        port = rtp.getsockname()[1]
        reply = client.request("SETUP", "clip.Mjpeg/stream=0",
                               Transport=f"RTP/AVP;unicast;client_port={port}-{port + 1}")
        session = reply.headers.get("Session").split(";")[0]
        assert client.request("PLAY", "clip.Mjpeg", Session=session).status == 200
        rtp.settimeout(2)
        rtp.recv(65536)  # it plays
        path = tmp_path / "clip.Mjpeg"
        if change == "truncate":
            os.truncate(path, path.stat().st_size // 3)
        else:
            with open(path, "r+b") as f:
                f.write(os.urandom(path.stat().st_size))
        assert bye_arrives(rtcp, 5)
        assert client.request("PLAY", "clip.Mjpeg", Session=session).status == 404
        # The server goes on serving: another file, and the changed one, re-indexed.
        assert client.request("DESCRIBE", "other.mjpeg").status == 200
        # Re-indexed: a cut through a frame, or garbage, is refused with the reason.
        assert client.request("DESCRIBE", "clip.Mjpeg").status == 415
    finally:
        client.close()
        rtp.close()
        rtcp.close()
    assert "changed on disk while being served" in caplog.text
    assert not [r for r in caplog.records if r.exc_info]


# --- connections: a cap, and descriptors above 1023 ---------------------------------------


def test_connections_over_the_cap_get_503_and_the_server_recovers(server_factory):
    server = server_factory(max_connections=5)
    clients = [RtspTestClient(server.port) for _ in range(5)]
    try:
        for c in clients:
            assert c.request("OPTIONS", "*").status == 200
        extra = RtspTestClient(server.port)
        reply = extra.request("OPTIONS", "*")
        assert reply.status == 503 and reply.cseq == "1"
        assert b"too many connections (the limit is 5)" in reply.body
        assert extra.sock.recv(100) == b""  # then closed
        extra.close()
        # Textbook dialect too, in its own layout.
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(textbook_request("SETUP", "movie.Mjpeg", 7,
                                          "Transport: RTP/UDP; client_port= 25000"))
            answer = recv_reply(sock)
        assert answer.startswith(b"RTSP/1.0 503 Service Unavailable\nCSeq: 7\n")
        clients.pop().close()

        def served() -> bool:
            c = RtspTestClient(server.port)
            try:
                return c.request("OPTIONS", "*").status == 200
            finally:
                c.close()

        assert wait_for(served, 5)
    finally:
        for c in clients:
            c.close()
    assert server.refused_connections >= 2


def test_connections_on_descriptors_above_1023(server_factory):
    """select() cannot watch descriptors above 1023; the server's must still be served."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1300
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard open-file limit is {hard}")
    server = server_factory()
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    fillers: list[int] = []
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        fillers.append(null)
        while fillers[-1] < 1100:
            fillers.append(os.dup(null))
        client = RtspTestClient(server.port)
        try:
            assert client.sock.fileno() > 1024
            assert client.request("DESCRIBE", "movie.Mjpeg").status == 200
            assert client.request("OPTIONS", "*").status == 200
        finally:
            client.close()
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(textbook_request("SETUP", "movie.Mjpeg", 1,
                                          "Transport: RTP/UDP; client_port= 25000"))
            assert recv_reply(sock).startswith(b"RTSP/1.0 200 OK\nCSeq: 1\n")
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def run_server_with_limits(root: Path, soft: int, hard: int, *args: str) -> tuple[int, str]:
    """Start Server.py under these open-file limits; its soft limit once up, and its log."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    with subprocess.Popen(
        [sys.executable, str(ROOT / "Server.py"), "0", "--host", "127.0.0.1",
         "--root", str(root), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limit,
    ) as proc:
        try:
            assert "RTSP server listening" in proc.stdout.readline()
            with open(f"/proc/{proc.pid}/limits") as f:
                line = next(x for x in f if x.startswith("Max open files"))
            now = int(line.split()[3])
        finally:
            proc.terminate()
            _, log = proc.communicate(timeout=10)
    return now, log


@pytest.mark.skipif(not os.path.exists("/proc/self/limits"), reason="needs /proc")
def test_open_file_limit_is_raised_to_fit_the_connections(tmp_path):
    now, log = run_server_with_limits(tmp_path, 256, 4096, "--max-connections", "1000")
    assert now == 1064 and "cannot be raised" not in log
    now, log = run_server_with_limits(tmp_path, 256, 300, "--max-connections", "1000")
    assert now == 300
    assert "the open-file limit is 300 (ulimit -n) and cannot be raised: serving at most " \
           "236 connections instead of 1000" in log
