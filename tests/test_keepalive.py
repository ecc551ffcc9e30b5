"""The player keeps a paused session alive with keep-alives at half the server's timeout."""

from __future__ import annotations

import time

from conftest import wait_for

from mjpeg_rtsp.client import PlayerState, parse_rtsp_url
from mjpeg_rtsp.player import Player, PlayerOptions


def test_paused_session_survives_past_the_timeout(server_factory):
    server = server_factory(session_timeout=2)
    player = Player(parse_rtsp_url(f"rtsp://127.0.0.1:{server.port}/movie.Mjpeg"),
                    PlayerOptions(latency=0.05))
    player.start()
    try:
        player.setup()
        player.play()
        assert wait_for(lambda: player.stats()["frames"] >= 5, 5)
        assert player.client.session_timeout == 2
        player.pause()
        assert wait_for(lambda: player.state is PlayerState.READY and not player.busy, 5)
        [session] = server.registry.all()
        time.sleep(4.5)  # more than twice the timeout, with no RTP and no RTCP
        assert server.registry.get(session.id) is session
        frames = player.stats()["frames"]
        player.play()
        assert wait_for(lambda: player.stats()["frames"] >= frames + 5, 5)
        assert player.failed is None
    finally:
        player.close()
    assert wait_for(lambda: len(server.registry) == 0, 5)


def test_without_keepalive_the_server_ends_the_session(server_factory, rtsp_client):
    """The control case: the same pause, but a client that sends nothing, loses its session."""
    server = server_factory(session_timeout=2)
    client = rtsp_client(server.port)
    reply = client.request("SETUP", "movie.Mjpeg",
                           Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
    session = reply.headers.get("Session").split(";")[0]
    assert client.request("PLAY", "movie.Mjpeg", Session=session).status == 200
    assert client.request("PAUSE", "movie.Mjpeg", Session=session).status == 200
    assert wait_for(lambda: len(server.registry) == 0, 6)
    assert client.request("PLAY", "movie.Mjpeg", Session=session).status == 454
