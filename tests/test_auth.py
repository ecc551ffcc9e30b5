"""Digest authentication (RFC 2617 as RTSP uses it, RFC 7826 section 19).

Unit tests of :mod:`mjpeg_rtsp.auth` compute every response by hand from the RFC's formulas;
end-to-end tests run the server with users on 127.0.0.1 against ffmpeg, GStreamer, raw
requests of our own, our headless player and the Tk window's log-in dialog.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    assert_gst_reached_eos,
    need_tool,
    require_tools,
    run_peer,
    stop_process,
    udp_pair,
    wait_for,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from mjpeg_rtsp.auth import (
    AuthStatus,
    DigestAuthenticator,
    load_users,
    parse_auth_params,
    read_users,
    uri_matches,
)
from mjpeg_rtsp.client import PlayerState, parse_rtsp_url
from mjpeg_rtsp.player import Player, PlayerOptions
from mjpeg_rtsp.rtsp import Headers, Request, format_request
from Server import main as server_main

USERS = {"alice": "s3cret:with colon", "bob": "hunter2"}
REALM = "mjpeg-rtsp"
URL = "rtsp://127.0.0.1:8554/movie.Mjpeg"
REQUIRES = "the server requires a user name and password (401 Unauthorized)"
REJECTED = "the server rejected the user name or password (401 Unauthorized)"


# --- helpers ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def challenge_params(value: str) -> dict[str, str]:
    assert value.startswith("Digest "), value
    return {k.lower(): v1 or v2 for k, v1, v2 in
            re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', value[len("Digest "):])}


def authorization(challenge: str, method: str, uri: str, user: str, password: str,
                  qop: bool = False, nonce: str | None = None) -> str:
    """An Authorization value computed from RFC 2617 section 3.2.2.1 by hand."""
    params = challenge_params(challenge)
    realm, nonce = params["realm"], nonce or params["nonce"]
    ha1 = md5(f"{user}:{realm}:{password}")
    ha2 = md5(f"{method}:{uri}")
    fields = f'username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}"'
    if qop:
        nc, cnonce = "00000001", "0a4f113b"
        response = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        fields += f', qop=auth, nc={nc}, cnonce="{cnonce}"'
    else:
        response = md5(f"{ha1}:{nonce}:{ha2}")
    return f'Digest {fields}, response="{response}"'


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def auth(clock) -> DigestAuthenticator:
    return DigestAuthenticator(USERS, clock=clock)


# --- the challenge ------------------------------------------------------------------------


def test_challenge_offers_md5_without_qop(auth):
    value = auth.challenge()
    assert re.fullmatch(r'Digest realm="mjpeg-rtsp", nonce="[0-9a-f]{64}", algorithm=MD5',
                        value), value
    assert "qop" not in value and "stale" not in value
    assert auth.challenge(stale=True).endswith(", stale=true")


def test_every_challenge_has_a_new_nonce(auth):
    nonces = {challenge_params(auth.challenge())["nonce"] for _ in range(50)}
    assert len(nonces) == 50


def test_nonce_depends_on_injected_randomness_and_clock():
    def fixed(n: int) -> bytes:
        return bytes(n)

    a = DigestAuthenticator(USERS, clock=FakeClock(5.0), token_bytes=fixed)
    b = DigestAuthenticator(USERS, clock=FakeClock(5.0), token_bytes=fixed)
    assert a.new_nonce() == b.new_nonce()
    assert a.new_nonce().startswith(f"{5000:016x}{'00' * 8}")


@pytest.mark.parametrize("kwargs, message", [
    ({"users": {}}, "no users"),
    ({"users": USERS, "realm": 'a"b'}, "bad realm"),
    ({"users": USERS, "realm": ""}, "bad realm"),
    ({"users": USERS, "nonce_lifetime": 0}, "nonce_lifetime"),
    ({"users": {"a:b": "x"}}, "bad user name"),
    ({"users": {'q"uote': "x"}}, "bad user name"),
])
def test_bad_configuration_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DigestAuthenticator(**kwargs)


# --- the check ----------------------------------------------------------------------------


@pytest.mark.parametrize("qop", [False, True], ids=["rfc2069", "qop-auth"])
@pytest.mark.parametrize("user", sorted(USERS))
def test_round_trip_computed_by_hand(auth, user, qop):
    header = authorization(auth.challenge(), "DESCRIBE", URL, user, USERS[user], qop=qop)
    result = auth.check("DESCRIBE", header, URL)
    assert result.status is AuthStatus.OK
    assert result.ok and result.user == user


def test_nonce_is_reused_for_later_requests(auth):
    challenge = auth.challenge()
    for method, uri in (("DESCRIBE", URL), ("SETUP", URL + "/stream=0"), ("PLAY", URL + "/"),
                        ("GET_PARAMETER", URL + "/"), ("TEARDOWN", URL + "/")):
        header = authorization(challenge, method, uri, "bob", "hunter2")
        assert auth.check(method, header, uri).ok, method


@pytest.mark.parametrize("digest_uri, request_uri", [
    (URL, URL),
    ("/movie.Mjpeg", URL),  # the path only
    (URL + "/", URL),
    ("rtsp://localhost:8554/movie.Mjpeg", URL),  # another name for the host
    (URL, URL + "/stream=0"),  # the aggregate URL signs its control URL
    ("*", "*"),
])
def test_uri_matches_loosely(digest_uri, request_uri):
    assert uri_matches(digest_uri, request_uri)


@pytest.mark.parametrize("digest_uri, request_uri", [
    ("rtsp://127.0.0.1:8554/other.Mjpeg", URL),
    (URL + "/stream=0", URL),
    ("rtsp://127.0.0.1:8554/", URL),
    ("", URL),
    ("*", URL),
    (URL, "*"),
    ("rtsp://127.0.0.1:8554/movie", URL),
])
def test_uri_mismatch(digest_uri, request_uri):
    assert not uri_matches(digest_uri, request_uri)


def test_uri_of_another_resource_is_bad(auth):
    other = "rtsp://127.0.0.1:8554/other.Mjpeg"
    header = authorization(auth.challenge(), "DESCRIBE", other, "bob", "hunter2")
    assert auth.check("DESCRIBE", header, other).ok
    result = auth.check("DESCRIBE", header, URL)
    assert result.status is AuthStatus.BAD and "uri" in result.reason


def test_method_is_part_of_the_response(auth):
    header = authorization(auth.challenge(), "DESCRIBE", URL, "bob", "hunter2")
    assert auth.check("PLAY", header, URL).status is AuthStatus.BAD


@pytest.mark.parametrize("user, password", [("bob", "wrong"), ("mallory", "hunter2"),
                                            ("Bob", "hunter2"), ("bob", "hunter2 ")])
def test_wrong_user_or_password_is_bad_and_the_nonce_stays(auth, user, password):
    challenge = auth.challenge()
    header = authorization(challenge, "DESCRIBE", URL, user, password)
    result = auth.check("DESCRIBE", header, URL)
    assert result.status is AuthStatus.BAD
    assert result.reason == "wrong user name or password"  # the same for both cases
    assert result.user == user
    # The client's nonce is still good: the new challenge repeats it (a client that retries
    # once per new nonce then stops instead of retrying wrong credentials for ever).
    again = auth.challenge_for(result)
    assert challenge_params(again)["nonce"] == challenge_params(challenge)["nonce"]
    assert "stale" not in again


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_header(auth, value):
    result = auth.check("DESCRIBE", value, URL)
    assert result.status is AuthStatus.MISSING
    assert challenge_params(auth.challenge_for(result))["nonce"]


def test_basic_is_not_accepted(auth):
    import base64

    token = base64.b64encode(b"bob:hunter2").decode()
    result = auth.check("DESCRIBE", f"Basic {token}", URL)
    assert result.status is AuthStatus.BAD and "Digest only" in result.reason


def test_required_parameters(auth):
    good = authorization(auth.challenge(), "DESCRIBE", URL, "bob", "hunter2")
    for name in ("username", "realm", "nonce", "uri", "response"):
        stripped = re.sub(rf'{name}="[^"]*",?\s*', "", good)
        result = auth.check("DESCRIBE", stripped, URL)
        assert result.status is AuthStatus.BAD, name
        assert name in result.reason


def test_unknown_parameters_and_quoted_commas_are_fine(auth):
    uri = URL + "?a=1,b=2"
    header = authorization(auth.challenge(), "DESCRIBE", uri, "bob", "hunter2")
    header += ', opaque="x, y", foo=bar, algorithm=md5'
    assert auth.check("DESCRIBE", header, uri).ok
    # Case of the scheme and parameter names does not matter, nor does extra white space.
    header = header.replace("Digest ", "dIgEsT\t  ").replace("username=", "UserName = ")
    assert auth.check("DESCRIBE", header, uri).ok


def test_escaped_quotes_in_quoted_strings():
    assert parse_auth_params(r'a="x\"y", b="\\", c=tok') == {"a": 'x"y', "b": "\\", "c": "tok"}


def test_other_algorithms_and_qops_are_bad(auth):
    good = authorization(auth.challenge(), "DESCRIBE", URL, "bob", "hunter2")
    for extra in (", algorithm=MD5-sess", ", algorithm=SHA-256", ', qop="auth-int"'):
        assert auth.check("DESCRIBE", good + extra, URL).status is AuthStatus.BAD, extra


def test_qop_auth_needs_nc_and_cnonce(auth):
    good = authorization(auth.challenge(), "DESCRIBE", URL, "bob", "hunter2", qop=True)
    assert auth.check("DESCRIBE", good, URL).ok
    assert not auth.check("DESCRIBE", good.replace("nc=00000001", "nc=1"), URL).ok
    assert not auth.check("DESCRIBE", re.sub(r'cnonce="[^"]*"', 'cnonce=""', good), URL).ok


NASTY = [
    "Digest", "Digest ", "Digest ,,,,", "Digest =", "Digest username", "Digest username=",
    'Digest username="', 'Digest username="alice', 'Digest username="a\\',
    'Digest username="alice" realm="mjpeg-rtsp"', 'Digest username="a", username="b"',
    'Digest username=alice;realm=x', "Digest \x00\x01\x02", "Digest " + "a=" * 5000,
    'Digest username="alice", realm="mjpeg-rtsp", nonce="00", uri="/", response="zz"',
    'Digest username="\udcff", realm="mjpeg-rtsp", nonce="x", uri="/", '
    'response="00000000000000000000000000000000"',
    'Digest username="é", realm="mjpeg-rtsp", nonce="x", uri="%%%[", '
    'response="00000000000000000000000000000000"',
    'Digest uri="http://[::1", username="a", realm="mjpeg-rtsp", nonce="n", '
    'response="00000000000000000000000000000000"',
    "Bearer abc", "Basic", "Basic !!!", "\r\n", "💥", "Digest\t\t", ",,,", '"', "\\",
]


@pytest.mark.parametrize("value", NASTY)
def test_malformed_headers_are_bad_never_an_exception(auth, value):
    result = auth.check("DESCRIBE", value, URL)
    assert result.status in (AuthStatus.BAD, AuthStatus.MISSING)
    assert not result.ok
    assert auth.challenge_for(result).startswith("Digest ")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.sampled_from(["DESCRIBE", "SETUP", "PLAY"]),
       st.one_of(st.none(), st.text(max_size=40)))
def test_any_text_gives_a_result(value, method, uri):
    auth = DigestAuthenticator(USERS, clock=FakeClock())
    for header in (value, "Digest " + value):
        result = auth.check(method, header, uri)
        assert not result.ok


def test_expired_nonce_with_right_response_is_stale(auth, clock):
    challenge = auth.challenge()
    header = authorization(challenge, "PLAY", URL, "alice", USERS["alice"])
    clock.now += 299
    assert auth.check("PLAY", header, URL).ok
    clock.now += 2
    result = auth.check("PLAY", header, URL)
    assert result.status is AuthStatus.STALE and result.user == "alice"
    fresh = auth.challenge_for(result)
    assert fresh.endswith("stale=true")
    assert challenge_params(fresh)["nonce"] != challenge_params(challenge)["nonce"]
    # The client answers the fresh challenge without asking its user again.
    assert auth.check("PLAY", authorization(fresh, "PLAY", URL, "alice", USERS["alice"]),
                      URL).ok


def test_expired_nonce_with_wrong_response_is_bad_not_stale(auth, clock):
    header = authorization(auth.challenge(), "PLAY", URL, "alice", "wrong")
    clock.now += 301
    result = auth.check("PLAY", header, URL)
    assert result.status is AuthStatus.BAD
    assert "stale" not in auth.challenge_for(result)


def test_altered_nonce_is_bad(auth):
    nonce = challenge_params(auth.challenge())["nonce"]
    for i in (0, 15, 16, 31, 32, 63):  # time, salt, MAC
        flipped = nonce[:i] + ("0" if nonce[i] != "0" else "1") + nonce[i + 1:]
        # A response computed correctly for the altered nonce: only the nonce is wrong.
        header = authorization(auth.challenge(), "DESCRIBE", URL, "bob", "hunter2",
                               nonce=flipped)
        result = auth.check("DESCRIBE", header, URL)
        assert result.status is AuthStatus.BAD, i
        assert result.reason == "nonce not issued by this server"
        assert result.nonce is None


def test_nonce_of_another_server_is_bad(clock):
    mine, theirs = DigestAuthenticator(USERS, clock=clock), DigestAuthenticator(USERS, clock=clock)
    header = authorization(theirs.challenge(), "DESCRIBE", URL, "bob", "hunter2")
    assert theirs.check("DESCRIBE", header, URL).ok
    assert mine.check("DESCRIBE", header, URL).status is AuthStatus.BAD


def test_nonce_from_the_future_is_bad(clock):
    auth = DigestAuthenticator(USERS, clock=clock)
    clock.now += 100
    header = authorization(auth.challenge(), "DESCRIBE", URL, "bob", "hunter2")
    clock.now -= 100
    assert auth.check("DESCRIBE", header, URL).status is AuthStatus.BAD


def test_wrong_realm_is_bad(auth):
    header = authorization(auth.challenge(), "DESCRIBE", URL, "bob", "hunter2")
    other = header.replace('realm="mjpeg-rtsp"', 'realm="other"')
    assert auth.check("DESCRIBE", other, URL).status is AuthStatus.BAD


# --- the users file and the command line -------------------------------------------------


def test_load_users(tmp_path):
    path = tmp_path / "users"
    path.write_text("# users of the server\n\nalice:s3cret:with colon\n  # indented comment\n"
                    "bob:hunter2\r\n  carol :pass word \n")
    assert load_users(path) == {"alice": "s3cret:with colon", "bob": "hunter2",
                                "carol": "pass word "}


@pytest.mark.parametrize("text, line, message", [
    ("alice:x\nno colon here\n", 2, "expected user:password"),
    (":password\n", 1, "empty user name"),
    ("alice:\n", 1, "empty password"),
    ("# c\nalice:x\nalice:y\n", 3, "given twice"),
    ('bad"name:x\n', 1, "bad user name"),
])
def test_load_users_errors_name_the_line(tmp_path, text, line, message):
    path = tmp_path / "users"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"line {line}: .*{message}"):
        load_users(path)


def test_load_users_error_does_not_show_the_password(tmp_path):
    path = tmp_path / "users"
    path.write_text("alice:topsecret\nalice:topsecret2\n")
    with pytest.raises(ValueError) as info:
        load_users(path)
    assert "topsecret" not in str(info.value)


def test_read_users_from_flags_and_file(tmp_path):
    assert read_users(None, []) is None
    path = tmp_path / "users"
    path.write_text("alice:a\n")
    assert read_users(str(path), ["bob:b:c"]) == {"alice": "a", "bob": "b:c"}
    with pytest.raises(ValueError, match="given twice"):
        read_users(str(path), ["alice:z"])
    with pytest.raises(ValueError, match="--auth: expected user:password"):
        read_users(None, ["alice"])
    (tmp_path / "empty").write_text("# nobody\n")
    with pytest.raises(ValueError, match="no users"):
        read_users(str(tmp_path / "empty"), [])


@pytest.mark.parametrize("args, message", [
    (["--auth", "nocolon"], "expected user:password"),
    (["--users", "/nonexistent/users"], "No such file"),
])
def test_server_cli_refuses_bad_users(args, message, capsys):
    assert server_main(["0", "--host", "127.0.0.1", *args]) == 2
    assert message in capsys.readouterr().err


def test_server_banner_says_authentication_is_on(media_root, tmp_path):
    users = tmp_path / "users"
    users.write_text("alice:topsecretpw\n")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "Server.py"), "0", "--host", "127.0.0.1",
         "--root", str(media_root), "--users", str(users)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        first, second = proc.stdout.readline(), proc.stdout.readline()
    finally:
        stop_process(proc)
    assert first.startswith("RTSP server listening on port"), first
    assert second.startswith("authentication on: Digest"), second
    assert "textbook clients cannot log in" in second and "topsecretpw" not in first + second


# --- the server, raw requests -------------------------------------------------------------


@pytest.fixture
def auth_server(server_factory):
    return server_factory(users=dict(USERS), fps=50)


def describe_url(server) -> str:
    return f"rtsp://127.0.0.1:{server.port}/movie.Mjpeg"


def assert_unauthorized(response, cseq: int) -> str:
    assert response.status == 401, response
    assert response.headers.get("CSeq") == str(cseq)
    assert "Session" not in response.headers and "Transport" not in response.headers
    challenge = response.headers.get("WWW-Authenticate")
    assert challenge and challenge_params(challenge)["realm"] == REALM, challenge
    return challenge


def test_options_is_open_and_describe_is_challenged(auth_server, rtsp_client):
    client = rtsp_client(auth_server.port)
    options = client.request("OPTIONS", "*")
    assert options.status == 200
    assert "DESCRIBE" in options.headers.get("Public")
    # Unknown files get 401 too: nothing about the media folder is told before logging in.
    for cseq, name in ((2, "movie.Mjpeg"), (3, "missing.Mjpeg")):
        assert_unauthorized(client.request("DESCRIBE", name, Accept="application/sdp"), cseq)


def test_setup_and_play_without_valid_credentials_send_no_rtp(auth_server, rtsp_client,
                                                             caplog):
    caplog.set_level("INFO")
    rtp, rtcp = udp_pair()
    port = rtp.getsockname()[1]
    client = rtsp_client(auth_server.port)
    url = describe_url(auth_server)
    transport = f"RTP/AVP;unicast;client_port={port}-{port + 1}"
    try:
        challenge = assert_unauthorized(
            client.request("SETUP", url + "/stream=0", Transport=transport), 1)
        assert_unauthorized(client.request("PLAY", url + "/", Session="12345678"), 2)
        # Wrong password, wrong user, a forged nonce: all 401.
        for cseq, (user, password, nonce) in enumerate(
                [("alice", "wrong", None), ("eve", "hunter2", None),
                 ("bob", "hunter2", "0" * 64)], start=3):
            header = authorization(challenge, "SETUP", url + "/stream=0", user, password,
                                   nonce=nonce)
            assert_unauthorized(client.request("SETUP", url + "/stream=0", Transport=transport,
                                               Authorization=header), cseq)
        # Interleaved too.
        assert_unauthorized(client.request(
            "SETUP", url + "/stream=0", Transport="RTP/AVP/TCP;unicast;interleaved=0-1"), 6)
        assert_unauthorized(client.request("PLAY", url + "/"), 7)
        assert len(auth_server.registry) == 0
        for sock in (rtp, rtcp):
            sock.settimeout(1.0)
            with pytest.raises(TimeoutError):
                sock.recv(65536)
        client.sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            client.sock.recv(1)  # no interleaved frame, nothing at all
        assert client.frames == []
    finally:
        rtp.close()
        rtcp.close()
    failed = [r.getMessage() for r in caplog.records if "authentication failed" in r.getMessage()]
    assert any("user 'alice'" in m and "127.0.0.1" in m for m in failed), failed
    assert any("user 'eve'" in m for m in failed), failed
    assert not any("s3cret" in r.getMessage() or "hunter2" in r.getMessage()
                   for r in caplog.records)


def test_raw_digest_flow_plays_over_udp(auth_server, rtsp_client):
    rtp, rtcp = udp_pair()
    port = rtp.getsockname()[1]
    client = rtsp_client(auth_server.port)
    url = describe_url(auth_server)
    try:
        challenge = assert_unauthorized(client.request("DESCRIBE", url), 1)

        def signed(method: str, target: str, **headers: str):
            headers["Authorization"] = authorization(challenge, method, target, "bob", "hunter2")
            return client.request(method, target, **headers)

        assert signed("DESCRIBE", url, Accept="application/sdp").status == 200
        setup = signed("SETUP", url + "/stream=0",
                       Transport=f"RTP/AVP;unicast;client_port={port}-{port + 1}")
        assert setup.status == 200, setup
        session = setup.headers.get("Session").split(";")[0]
        assert signed("PLAY", url + "/", Session=session).status == 200
        rtp.settimeout(5)
        packets = [rtp.recv(65536) for _ in range(20)]
        assert all(p[1] & 0x7F == 26 for p in packets)  # RTP/JPEG
        assert signed("TEARDOWN", url + "/", Session=session).status == 200
    finally:
        rtp.close()
        rtcp.close()


def test_textbook_client_gets_401_and_no_rtp(auth_server):
    rtp, rtcp = udp_pair()
    port = rtp.getsockname()[1]
    try:
        with socket.create_connection(("127.0.0.1", auth_server.port), timeout=5) as sock:
            sock.send(f"SETUP movie.Mjpeg RTSP/1.0\nCSeq: 1\n"
                      f"Transport: RTP/UDP; client_port= {port}".encode())
            lines = sock.recv(1024).decode().split("\n")
            assert lines[0] == "RTSP/1.0 401 Unauthorized"
            assert lines[1] == "CSeq: 1" and lines[2] == "Session: 0"  # the layout it reads
            assert any(line.startswith("WWW-Authenticate: Digest ") for line in lines)
            sock.send(b"PLAY movie.Mjpeg RTSP/1.0\nCSeq: 2\nSession: 0")
            assert sock.recv(1024).decode().startswith("RTSP/1.0 401 Unauthorized\nCSeq: 2")
        rtp.settimeout(1.0)
        with pytest.raises(TimeoutError):
            rtp.recv(65536)
        assert len(auth_server.registry) == 0
    finally:
        rtp.close()
        rtcp.close()


def test_without_users_nothing_is_asked(server, rtsp_client):
    client = rtsp_client(server.port)
    response = client.request("DESCRIBE", "movie.Mjpeg", Accept="application/sdp")
    assert response.status == 200
    assert "WWW-Authenticate" not in response.headers


def test_request_with_oversized_authorization_is_answered(auth_server):
    with socket.create_connection(("127.0.0.1", auth_server.port), timeout=5) as sock:
        request = Request("DESCRIBE", describe_url(auth_server),
                          Headers([("CSeq", "1"), ("Authorization", "Digest " + "x" * 6000)]))
        sock.sendall(format_request(request))
        assert sock.recv(4096).startswith(b"RTSP/1.0 401 Unauthorized\r\n")


# --- real peers ---------------------------------------------------------------------------


def ffmpeg(url: str, transport: str) -> subprocess.CompletedProcess:
    return run_peer([need_tool("ffmpeg"), "-nostdin", "-hide_banner", "-nostats", "-v", "error",
                     "-rtsp_transport", transport, "-i", url, "-frames:v", "20", "-f",
                     "framemd5", "-"], text=True)


def with_credentials(server, user: str, password: str, name: str = "movie.Mjpeg") -> str:
    from urllib.parse import quote

    return f"rtsp://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:" \
           f"{server.port}/{name}"


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_ffmpeg_with_credentials_plays(auth_server, transport):
    result = ffmpeg(with_credentials(auth_server, "alice", USERS["alice"]), transport)
    assert result.returncode == 0, result.stderr
    frames = [line for line in result.stdout.splitlines() if line and not line.startswith("#")]
    assert len(frames) == 20, result.stdout


@pytest.mark.parametrize("user, password", [("alice", "wrong"), ("nobody", "x"), (None, None)])
def test_ffmpeg_without_valid_credentials_fails_with_401(auth_server, user, password, caplog):
    caplog.set_level("INFO")
    url = (with_credentials(auth_server, user, password) if user
           else describe_url(auth_server))
    result = ffmpeg(url, "tcp")
    assert result.returncode != 0
    assert "401" in result.stderr, result.stderr
    assert result.stdout.count("\n") == len(
        [line for line in result.stdout.splitlines() if line.startswith("#")])  # no frames
    assert not any("SETUP" in r.getMessage() and "session" in r.getMessage()
                   for r in caplog.records)
    assert len(auth_server.registry) == 0


def gst(server, protocol: str, out_dir: Path, *credentials: str) -> tuple[int, str, int]:
    out_dir.mkdir()
    result = run_peer([
        need_tool("gst-launch-1.0"), "-e",
        "rtspsrc", f"location=rtsp://127.0.0.1:{server.port}/short.Mjpeg",
        f"protocols={protocol}", *credentials,
        "!", "rtpjpegdepay", "!", "jpegdec", "!", "jpegenc",
        "!", "multifilesink", f"location={out_dir}/%05d.jpg",
    ], text=True)
    return result.returncode, result.stdout + result.stderr, len(list(out_dir.glob("*.jpg")))


def test_gstreamer_with_user_id_and_user_pw_plays_to_eos(auth_server, tmp_path):
    code, log, count = gst(auth_server, "tcp", tmp_path / "frames",
                           "user-id=bob", "user-pw=hunter2")
    assert_gst_reached_eos(code, log)
    assert count == 40, log


def test_gstreamer_with_wrong_password_is_refused(auth_server, tmp_path):
    code, log, count = gst(auth_server, "tcp", tmp_path / "frames",
                           "user-id=bob", "user-pw=wrong")
    assert code != 0
    assert "Unauthorized" in log or "401" in log, log
    assert count == 0
    assert len(auth_server.registry) == 0


# --- our player ---------------------------------------------------------------------------


def headless(url: str, *extra: str) -> subprocess.CompletedProcess:
    return run_peer([sys.executable, str(ROOT / "ClientLauncher.py"), url, "--headless",
                     "--duration", "1", "--timeout", "5", *extra], text=True)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_headless_player_with_credentials_plays(auth_server, transport):
    result = headless(with_credentials(auth_server, "alice", USERS["alice"]),
                      "--transport", transport)
    assert result.returncode == 0, result.stderr
    assert '"frames": ' in result.stdout
    frames = int(re.search(r'"frames": (\d+)', result.stdout).group(1))
    assert frames >= 10, result.stdout
    assert "s3cret" not in result.stdout  # the printed URL has no credentials


@pytest.mark.parametrize("url_of, message", [
    (lambda s: describe_url(s), REQUIRES),
    (lambda s: with_credentials(s, "alice", "wrong"), REJECTED),
])
def test_headless_player_without_valid_credentials_exits_1(auth_server, url_of, message):
    result = headless(url_of(auth_server))
    assert result.returncode == 1
    assert f"error: {message}" in result.stderr, result.stderr
    assert result.stdout == ""


def wait_event(player: Player, kind: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            event = player.events.get(timeout=0.1)
        except queue.Empty:
            continue
        if event.kind == kind:
            return event
    raise AssertionError(f"no {kind!r} event within {timeout} s")


def test_player_asks_for_credentials_and_retries(auth_server):
    target = parse_rtsp_url(describe_url(auth_server))
    player = Player(target, PlayerOptions(ask_credentials=True, reply_timeout=5))
    player.start()
    try:
        player.setup()
        assert wait_event(player, "credentials").message == REQUIRES
        assert player.busy and player.failed is None
        player.login("alice", "wrong")
        assert wait_event(player, "credentials").message == REJECTED
        player.login("alice", USERS["alice"])
        deadline = time.monotonic() + 5
        while player.state is not PlayerState.READY and time.monotonic() < deadline:
            time.sleep(0.02)
        assert player.state is PlayerState.READY
        player.play()
        deadline = time.monotonic() + 5
        while player.stats()["frames"] < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert player.stats()["frames"] >= 5
        assert player.failed is None
    finally:
        player.close()
    assert len(auth_server.registry) == 0  # torn down with the credentials too


def test_player_cancelled_log_in_fails_with_the_message(auth_server):
    player = Player(parse_rtsp_url(describe_url(auth_server)),
                    PlayerOptions(ask_credentials=True))
    player.start()
    try:
        player.setup()
        message = wait_event(player, "credentials").message
        player.cancel_login(message)
        assert wait_event(player, "error").message == REQUIRES
        assert player.failed == REQUIRES and not player.busy
    finally:
        player.close()


# --- the window's log-in dialog (real X server, real keys) --------------------------------


@pytest.fixture
def display(xvfb_display: str) -> str:
    """The session's Xvfb; these tests also drive it with xdotool."""
    require_tools("xdotool")
    return xvfb_display


def xdotool(env: dict, *args: str) -> str:
    return subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True,
                          timeout=10).stdout


def wait_window(env: dict, name: str, proc: subprocess.Popen, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the player exited"
        found = xdotool(env, "search", "--name", name).split()
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no window {name!r} within {timeout} s")


def test_window_asks_for_credentials_and_plays(auth_server, display, tmp_path):
    env = dict(os.environ, DISPLAY=display)
    log = open(tmp_path / "player.log", "wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "ClientLauncher.py"),
                             describe_url(auth_server)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        window = wait_window(env, "^RTSP player - rtsp", proc)
        xdotool(env, "key", "--window", window, "s")  # Setup: DESCRIBE gets 401
        dialog = wait_window(env, "log in$", proc)
        xdotool(env, "windowfocus", "--sync", dialog)
        xdotool(env, "type", "--delay", "20", "bob")
        xdotool(env, "key", "Tab")
        xdotool(env, "type", "--delay", "20", "hunter2")
        xdotool(env, "key", "Return")
        assert wait_for(lambda: len(auth_server.registry) == 1, 10), \
            (tmp_path / "player.log").read_text()
        xdotool(env, "key", "--window", window, "space")  # Play
        session = auth_server.registry.all()[0]
        assert wait_for(lambda: session.frames_sent >= 10, 10)
        xdotool(env, "key", "--window", window, "q")
        proc.wait(10)
        assert proc.returncode == 0, (tmp_path / "player.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        log.close()


def test_window_log_in_cancelled_shows_the_error(auth_server, display, tmp_path):
    env = dict(os.environ, DISPLAY=display)
    proc = subprocess.Popen([sys.executable, str(ROOT / "ClientLauncher.py"),
                             describe_url(auth_server)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        window = wait_window(env, "^RTSP player - rtsp", proc)
        xdotool(env, "key", "--window", window, "s")
        dialog = wait_window(env, "log in$", proc)
        xdotool(env, "windowfocus", "--sync", dialog)
        xdotool(env, "key", "Escape")  # Cancel
        error = wait_window(env, "^RTSP player$", proc)  # the error message box
        assert error
        assert len(auth_server.registry) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
