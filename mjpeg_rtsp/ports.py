"""UDP port pairs for RTP and RTCP (RFC 3550 section 11: RTP on an even port, RTCP on the next)."""

from __future__ import annotations

import selectors
import socket

# Waiting on sockets: poll() has no limit on descriptor numbers (select() fails above 1023)
# and, unlike an epoll selector, needs no descriptor of its own. Windows has no poll; its
# select has no such limit.
Selector = getattr(selectors, "PollSelector", selectors.DefaultSelector)


def bind_rtp_pair(host: str, family: int = socket.AF_INET) -> tuple[socket.socket, socket.socket]:
    """Two bound UDP sockets on a free even port and the odd one after it; OSError if none."""
    for _ in range(100):
        rtp = socket.socket(family, socket.SOCK_DGRAM)
        rtp.bind((host, 0))
        port = rtp.getsockname()[1]
        if port % 2 == 0 and port < 65535:
            rtcp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                rtcp.bind((host, port + 1))
                return rtp, rtcp
            except OSError:
                rtcp.close()
        rtp.close()
    raise OSError("could not find a free even/odd UDP port pair")
