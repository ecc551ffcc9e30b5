"""Browsers' side over plain HTTP (http.client and raw sockets against the real server):
pages, snapshots, MJPEG multipart streams paced and looped by the scheduler, every status
code, HEAD, keep-alive, confinement, escaping, Digest and Basic, status and metrics."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import shutil
import socket
import time
from contextlib import closing

import pytest
from conftest import RtspTestClient, no_leaks, textbook_frames, wait_for
from make_sample import BASE_SIZE, read_frame_number
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from mjpeg_rtsp.auth import digest_ha1, digest_response, parse_auth_params
from mjpeg_rtsp.sources import parse_live_argument

BOUNDARY = b"--mjpegframe"


def connect(server, timeout: float = 5.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.http.port, timeout=timeout)


def get(server, path: str, method: str = "GET", **headers: str):
    conn = connect(server)
    try:
        conn.request(method, path, headers=headers)
        reply = conn.getresponse()
        return reply.status, reply.headers, reply.read()
    finally:
        conn.close()


class Multipart:
    """A strict reader of one multipart/x-mixed-replace stream: every part is the boundary,
    ``Content-Type: image/jpeg`` and ``Content-Length``, a blank line, the bytes, CRLF."""

    def __init__(self, conn: http.client.HTTPConnection,
                 reply: http.client.HTTPResponse) -> None:
        self.conn, self.reply = conn, reply
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=mjpegframe"
        assert reply.headers.get("Content-Length") is None

    def part(self) -> bytes:
        line = self.reply.readline()
        assert line == BOUNDARY + b"\r\n", line[:80]
        fields = {}
        while (line := self.reply.readline()) != b"\r\n":
            name, _, value = line.decode("ascii").partition(":")
            fields[name.strip().lower()] = value.strip()
        assert fields["content-type"] == "image/jpeg"
        data = self.reply.read(int(fields["content-length"]))
        assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
        assert self.reply.read(2) == b"\r\n"
        return data

    def close(self) -> None:
        """Leave: the response holds the socket too, so both are closed."""
        self.reply.close()
        self.conn.close()


def frame_number(jpeg: bytes) -> int:
    image = Image.open(io.BytesIO(jpeg))
    image.load()
    return read_frame_number(image.resize(BASE_SIZE))


def open_stream(server, name: str) -> Multipart:
    conn = connect(server)
    conn.request("GET", f"/stream/{name}")
    return Multipart(conn, conn.getresponse())


def metric_samples(server) -> dict[tuple[str, tuple], float]:
    status, headers, body = get(server, "/metrics")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        assert family.documentation, family.name
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.fixture
def web(server_factory):
    return server_factory(http_port=0, fps=25.0)


# --- pages ---------------------------------------------------------------------------------


def test_index_lists_files_and_live_paths(server_factory):
    server = server_factory(http_port=0, live=[parse_live_argument("cam=testpattern:320x240@10")])
    status, headers, body = get(server, "/")
    page = body.decode()
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert int(headers["Content-Length"]) == len(body)
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    for name in ("movie.Mjpeg", "short.Mjpeg", "hd.mjpeg", "cam"):
        assert f'href="/watch/{name}"' in page
        assert f'src="/snapshot/{name}.jpg"' in page
        assert f'value="rtsp://127.0.0.1:{server.port}/{name}"' in page
    assert 'name="viewport"' in page


def test_watch_page(web):
    status, headers, body = get(web, "/watch/movie.Mjpeg")
    page = body.decode()
    assert status == 200
    assert '<img id="view" src="/stream/movie.Mjpeg"' in page
    assert "384\u00d7288" in page and "25 fps" in page
    assert f"rtsp://127.0.0.1:{web.port}/movie.Mjpeg" in page
    # The page's only script is the one its policy allows by hash.
    assert len(re.findall("<script>", page)) == 1
    assert "script-src 'sha256-" in headers["Content-Security-Policy"]


def test_snapshot_of_a_file_is_its_first_frame(web, media_root):
    status, headers, body = get(web, "/snapshot/movie.Mjpeg.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert body == textbook_frames(media_root / "movie.Mjpeg")[0]
    assert frame_number(body) == 0


def test_snapshot_of_a_live_path_is_its_latest_frame(server_factory):
    server = server_factory(http_port=0, live=[parse_live_argument("cam=testpattern:320x240@20")])
    channel = server.live_paths.get("cam")
    assert wait_for(lambda: channel.latest is not None, 5)
    status, headers, body = get(server, "/snapshot/cam.jpg")
    assert status == 200
    assert Image.open(io.BytesIO(body)).size == (320, 240)


def test_off_air_live_path_is_503(server_factory):
    server = server_factory(http_port=0, live=[parse_live_argument("cam=exec:false")])
    for path in ("/stream/cam", "/snapshot/cam.jpg"):
        status, headers, _ = get(server, path)
        assert status == 503 and headers["Retry-After"]
    assert get(server, "/watch/cam")[0] == 200  # the page says it is off air


# --- streams -------------------------------------------------------------------------------


def test_stream_is_paced_at_the_files_rate_and_frames_advance(web):
    with closing(open_stream(web, "movie.Mjpeg")) as stream:
        first = stream.part()
        start = time.monotonic()
        numbers = [frame_number(first)] + [frame_number(stream.part()) for _ in range(25)]
        elapsed = time.monotonic() - start
    assert numbers == list(range(numbers[0], numbers[0] + 26))
    assert 0.8 <= elapsed <= 1.3, elapsed  # 25 frame intervals at 25 fps


def test_a_file_loops_for_http_viewers(server_factory):
    server = server_factory(http_port=0, fps=100.0)
    with closing(open_stream(server, "short.Mjpeg")) as stream:  # 40 frames
        numbers = [frame_number(stream.part()) for _ in range(50)]
    assert numbers == list(range(40)) + list(range(10))


def test_rtsp_and_http_viewers_of_one_file_at_once(web):
    rtsp = RtspTestClient(web.port)
    try:
        assert rtsp.request("SETUP", "movie.Mjpeg/stream=0",
                            Transport="RTP/AVP/TCP;unicast;interleaved=0-1").status == 200
        session = rtsp.request("SETUP", "movie.Mjpeg/stream=0",
                               Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
        session_id = session.headers.get("Session").split(";")[0]
        with closing(open_stream(web, "movie.Mjpeg")) as stream:
            assert rtsp.request("PLAY", "movie.Mjpeg", Session=session_id).status == 200
            parts = [stream.part() for _ in range(10)]
            assert len(rtsp.interleaved(20)) >= 20
            kinds = metric_samples(web)
            assert kinds[("mjpeg_sessions", (("kind", "http"),))] == 1
            assert kinds[("mjpeg_sessions", (("kind", "tcp"),))] == 2
            assert kinds[("mjpeg_stream_viewers",
                          (("kind", "http"), ("stream", "movie.Mjpeg")))] == 1
        assert len(set(parts)) == 10
    finally:
        rtsp.close()


def test_slow_reader_drops_frames_while_another_keeps_full_rate(web):
    # A viewer that stops reading: its socket buffers fill, then its queue, then frames drop.
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", web.http.port))
    with stalled:
        stalled.sendall(b"GET /stream/hd.mjpeg HTTP/1.1\r\nHost: test\r\n\r\n")
        with closing(open_stream(web, "hd.mjpeg")) as stream:
            stream.part()
            start = time.monotonic()
            count = sum(1 for _ in range(50) if stream.part())
            elapsed = time.monotonic() - start
            assert 1.8 <= elapsed <= 2.4, elapsed  # 50 frames at 25 fps: no waiting on the other

            def dropped() -> float:
                return metric_samples(web)[("mjpeg_frames_dropped_total", (("kind", "http"),))]

            assert wait_for(lambda: dropped() > 0, 5)
        assert count == 50
    figures = json.loads(get(web, "/status.json")[2])
    assert figures["totals"]["http"]["frames_dropped"] > 0
    assert wait_for(lambda: len(web.registry) == 0, 40)  # the stalled one times out or leaves


def test_viewers_leaving_end_their_sessions_and_the_totals_stay(web):
    with no_leaks(web, 5):
        received = 0
        for _ in range(3):
            with closing(open_stream(web, "movie.Mjpeg")) as stream:
                received += sum(1 for _ in range(5) if stream.part())
        assert wait_for(lambda: len(web.registry) == 0, 5)
    samples = metric_samples(web)
    http = (("kind", "http"),)
    assert samples[("mjpeg_sessions", http)] == 0
    assert samples[("mjpeg_sessions_started_total", http)] == 3
    assert samples[("mjpeg_frames_sent_total", http)] >= received
    assert samples[("mjpeg_payload_bytes_sent_total", http)] > received * 1000
    assert samples[("mjpeg_frames_dropped_total", http)] == 0


def test_session_limit_is_503_and_frees_when_the_viewer_leaves(server_factory):
    server = server_factory(http_port=0, max_sessions=1)
    with closing(open_stream(server, "movie.Mjpeg")) as stream:
        stream.part()
        status, headers, body = get(server, "/stream/movie.Mjpeg")
        assert status == 503 and headers["Retry-After"] == "10"
        assert get(server, "/")[0] == 200  # pages need no session
    assert wait_for(lambda: len(server.registry) == 0, 5)
    with closing(open_stream(server, "movie.Mjpeg")) as stream:
        stream.part()
    samples = metric_samples(server)
    assert samples[("mjpeg_connections_refused_total", (("protocol", "http"),))] == 1


# --- protocol ------------------------------------------------------------------------------


def test_keep_alive_and_head_everywhere(web):
    conn = connect(web)
    with closing(conn):
        conn.request("GET", "/")
        reply = conn.getresponse()
        reply.read()
        sock = conn.sock
        for path in ("/", "/watch/movie.Mjpeg", "/snapshot/movie.Mjpeg.jpg", "/status.json",
                     "/metrics", "/nothing-here"):
            conn.request("GET", path)
            full = conn.getresponse()
            body = full.read()
            assert int(full.headers["Content-Length"]) == len(body)
            conn.request("HEAD", path)
            head = conn.getresponse()
            assert head.read() == b""
            assert head.status == full.status
            assert head.headers["Content-Type"] == full.headers["Content-Type"]
            if path != "/status.json" and path != "/metrics":  # figures move on
                assert head.headers["Content-Length"] == full.headers["Content-Length"]
            assert conn.sock is sock  # one connection for all of them
    status, headers, body = get(web, "/stream/movie.Mjpeg", method="HEAD")
    assert status == 200 and body == b""
    assert headers["Content-Type"].startswith("multipart/x-mixed-replace")
    assert len(web.registry) == 0  # HEAD starts no stream


def raw_exchange(server, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.http.port), timeout=5) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        return reply


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def test_status_codes(web):
    assert get(web, "/nothing")[0] == 404
    assert get(web, "/stream/missing.mjpeg")[0] == 404
    assert get(web, "/snapshot/movie.Mjpeg")[0] == 404  # without .jpg
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "BREW"):
        status, headers, _ = get(web, "/", method=method)
        assert status == 405 and headers["Allow"] == "GET, HEAD", method
    long_target = b"/watch/" + b"a" * 9000
    assert status_of(raw_exchange(web, b"GET " + long_target + b" HTTP/1.1\r\n\r\n")) == 414
    big_header = b"X-Big: " + b"b" * 9000 + b"\r\n"
    reply = raw_exchange(web, b"GET / HTTP/1.1\r\nHost: t\r\n" + big_header + b"\r\n")
    assert status_of(reply) == 431
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(70))
    assert status_of(raw_exchange(web, b"GET / HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n")) == 431
    assert status_of(raw_exchange(web, b"GET / HTTP/1.1 more\r\n\r\n")) == 400
    assert status_of(raw_exchange(web, b"GET /\r\n\r\n")) == 400  # HTTP/0.9
    assert status_of(raw_exchange(web, b"GET / HTTP/2.0\r\n\r\n")) == 505


def test_unsupported_file_is_415(server_factory, tmp_path):
    (tmp_path / "bad.mjpeg").write_bytes(b"not a movie at all")
    server = server_factory(root=tmp_path, http_port=0)
    assert get(server, "/stream/bad.mjpeg")[0] == 415
    assert "cannot be served" in get(server, "/")[2].decode()


@pytest.fixture
def jail(tmp_path, media_root):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    shutil.copy(media_root / "short.Mjpeg", root / "sub" / "clip.mjpeg")
    outside = tmp_path / "secret.mjpeg"
    shutil.copy(media_root / "short.Mjpeg", outside)
    (tmp_path / "passwd").write_text("root:x:0:0")
    os.symlink(outside, root / "link-out.mjpeg")
    os.symlink(tmp_path, root / "dir-out")
    os.symlink(root / "sub" / "clip.mjpeg", root / "link-in.mjpeg")
    return root


TRAVERSALS = [
    "../secret.mjpeg", "sub/../../secret.mjpeg", "%2e%2e/secret.mjpeg", "%2E%2E%2Fsecret.mjpeg",
    "..%2fsecret.mjpeg", "%252e%252e/secret.mjpeg", "/../secret.mjpeg", "//etc/passwd",
    "..\\secret.mjpeg", "..%5csecret.mjpeg", "link-out.mjpeg", "dir-out/secret.mjpeg",
    "dir-out/passwd", "sub/clip.mjpeg%00.txt", "sub%00/clip.mjpeg", "passwd", "sub",
    "%c0%ae%c0%ae/secret.mjpeg", "%ff.mjpeg",
]


def test_nothing_outside_the_media_folder(server_factory, jail):
    server = server_factory(root=jail, http_port=0)
    for path in TRAVERSALS:
        for view, suffix in (("stream", ""), ("watch", ""), ("snapshot", ".jpg")):
            target = f"/{view}/{path}{suffix}"
            reply = raw_exchange(server, f"GET {target} HTTP/1.1\r\nHost: t\r\n"
                                 "Connection: close\r\n\r\n".encode())
            assert status_of(reply) == 404, (target, reply[:200])
            assert b"root:x" not in reply and b"\xff\xd8" not in reply
    assert len(server.registry) == 0


def test_inside_paths_and_inside_symlinks_play(server_factory, jail):
    server = server_factory(root=jail, http_port=0)
    for name in ("sub/clip.mjpeg", "link-in.mjpeg", "sub/clip%2Emjpeg"):
        assert get(server, f"/snapshot/{name}.jpg")[0] == 200, name


def test_names_and_hosts_are_escaped(server_factory, tmp_path, media_root):
    evil = '<script>alert(1)<script>" onerror="x.mjpeg'
    shutil.copy(media_root / "short.Mjpeg", tmp_path / evil)
    server = server_factory(root=tmp_path, http_port=0)
    page = get(server, "/", Host='<i>"evil"</i>:80')[2].decode()
    assert "<script>alert" not in page and 'onerror="x' not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;script&gt;&quot; onerror=&quot;x.mjpeg" in page
    quoted = "/watch/%3Cscript%3Ealert%281%29%3Cscript%3E%22%20onerror%3D%22x.mjpeg"
    assert quoted in page
    status, _, body = get(server, quoted)
    assert status == 200
    assert "<script>alert" not in body.decode() and "&lt;script&gt;" in body.decode()
    # An error page does not reflect the path either.
    body = get(server, "/watch/%3Cscript%3Enope.mjpeg")[2].decode()
    assert "<script>nope" not in body


# --- authentication ------------------------------------------------------------------------


def test_digest_and_basic_with_the_rtsp_users(server_factory):
    server = server_factory(http_port=0, users={"alice": "wonder land"})
    status, headers, _ = get(server, "/status.json")
    assert status == 401
    challenges = headers.get_all("WWW-Authenticate")
    assert any(c.startswith("Basic realm=") for c in challenges)
    digest = next(c for c in challenges if c.startswith("Digest "))
    params = parse_auth_params(digest[len("Digest "):])
    assert params["algorithm"] == "MD5"

    def basic(password: str) -> str:
        return "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()

    assert get(server, "/", Authorization=basic("wonder land"))[0] == 200
    assert get(server, "/", Authorization=basic("wrong"))[0] == 401
    ha1 = digest_ha1("alice", params["realm"], "wonder land")

    def digest_header(uri: str, ha1: str = ha1, method: str = "GET") -> str:
        response = digest_response(ha1, method, uri, params["nonce"])
        return (f'Digest username="alice", realm="{params["realm"]}", '
                f'nonce="{params["nonce"]}", uri="{uri}", response="{response}", '
                'algorithm=MD5')

    path = "/snapshot/movie.Mjpeg.jpg"
    assert get(server, path, Authorization=digest_header(path))[0] == 200
    assert get(server, path, method="HEAD",
               Authorization=digest_header(path, method="HEAD"))[0] == 200
    assert get(server, path, Authorization=digest_header("/other"))[0] == 401
    wrong = digest_ha1("alice", params["realm"], "guess")
    assert get(server, path, Authorization=digest_header(path, wrong))[0] == 401
    samples = metric_samples_authorized(server, basic("wonder land"))
    assert samples[("mjpeg_auth_failures_total", (("protocol", "http"),))] == 3
    assert samples[("mjpeg_auth_failures_total", (("protocol", "rtsp"),))] == 0


def metric_samples_authorized(server, authorization: str) -> dict:
    status, _, body = get(server, "/metrics", Authorization=authorization)
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body.decode()) for s in f.samples}


# --- figures -------------------------------------------------------------------------------


def test_status_json_and_metrics_agree(web):
    with closing(open_stream(web, "short.Mjpeg")) as stream:
        for _ in range(5):
            stream.part()
        status, headers, body = get(web, "/status.json")
        assert status == 200 and headers["Content-Type"] == "application/json"
        figures = json.loads(body)
        samples = metric_samples(web)
    assert figures["sessions"]["http"] == 1
    short = next(s for s in figures["streams"] if s["name"] == "short.Mjpeg")
    assert short["viewers"]["http"] == 1 and short["width"] == 384 and short["fps"] == 25.0
    assert samples[("mjpeg_stream_viewers", (("kind", "http"), ("stream", "short.Mjpeg")))] == 1
    for kind in ("textbook", "udp", "tcp", "http", "publish"):
        assert ("mjpeg_frames_sent_total", (("kind", kind),)) in samples
    assert ("mjpeg_late_frames_total", ()) in samples
    assert samples[("mjpeg_connections_refused_total", (("protocol", "rtsp"),))] == 0


def test_server_py_http_option(media_root, tmp_path):
    """Server.py --http 0 prints the browser link, and the link answers."""
    import subprocess
    import sys

    from conftest import ROOT

    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "Server.py"), "0", "--host", "127.0.0.1", "--root",
         str(media_root), "--http", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        link = None
        for line in proc.stdout:
            match = re.search(r"browsers: (http://127\.0\.0\.1:\d+/)", line)
            if match:
                link = match.group(1)
                break
        assert link is not None
        port = int(link.rsplit(":", 1)[1].strip("/"))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        with closing(conn):
            conn.request("GET", "/")
            assert conn.getresponse().status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()

