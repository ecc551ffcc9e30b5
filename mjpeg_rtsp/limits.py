"""Size limits against hostile input, in one place: what one frame may cost the player
(every receive path enforces them) and the server (indexing and re-encoding files).

Theory of operation: a server (or anyone who can reach our RTP port) decides how big a frame
claims to be and how many bytes it sends before ending it. Without bounds one forged SOF
(60000x60000 is 14 GB of pixels) or one datagram stream without an EOI takes the player's
memory. Every stage checks the figure it can see, as early as it can see it:

* assembly (RFC 2435 fragments, textbook datagrams, the jitter buffer) stops buffering a
  frame past :data:`MAX_FRAME_BYTES` of compressed data;
* the RFC 2435 depacketizer refuses a frame whose header or ``a=x-dimensions`` size exceeds
  :data:`MAX_FRAME_PIXELS` at its first fragment, before buffering anything;
* the decoder reads the SOF before the image library allocates anything, refuses frames over
  :data:`MAX_FRAME_PIXELS`, and decodes at most :data:`MAX_DECODE_PIXELS` (JPEG DCT scaling,
  1/2 to 1/8) whatever the display size.

Frames refused this way are dropped and counted (``frames_rejected``), never fatal. The
server's own limits (:data:`MAX_FILE_FRAME_BYTES`, :data:`MAX_REENCODE_PIXELS`) close the list.
"""

from __future__ import annotations

#: Compressed bytes of one frame. 8 MiB holds a 4K (3840x2160) frame at quality 100 with
#: room to spare (about 5 MB; quality 90 is about 1.5 MB); the textbook format was made for
#: frames that fit one datagram (64 KiB) and RFC 2435's 24-bit offset allows 16 MiB.
MAX_FRAME_BYTES = 8 << 20

#: Pixels of one frame: 8192x8192 (64 Mpixel), above 8K UHD (7680x4320, 33 Mpixel).
#: A full decode of that would be 256 MB (Pillow keeps RGB in 4 bytes a pixel), which is why
#: decoding is capped further by :data:`MAX_DECODE_PIXELS`.
MAX_FRAME_PIXELS = 8192 * 8192

#: Pixels actually decoded for one frame (4096x4096: 64 MB at most). A larger frame is decoded
#: at the largest JPEG scale (1/2, 1/4, 1/8) that fits, as for a small window.
MAX_DECODE_PIXELS = 4096 * 4096

#: Bytes the jitter buffer holds in all (a few frames of the largest size, or seconds of a
#: 100 Mbit/s stream at the default latency).
MAX_BUFFERED_BYTES = 4 * MAX_FRAME_BYTES

#: RTP packets of one frame a receiver keeps as they came (the server keeps a publisher's
#: payloads to forward them as-is). A frame of MAX_FRAME_BYTES in 1400-byte packets is about
#: 6000; the cap stops a sender cutting a frame into 1-byte fragments, each a Python object.
MAX_FRAME_PACKETS = 16384


#: Server: bytes of one file frame. RFC 2435 cannot carry more (its fragment offset has 24
#: bits), and it bounds the window a corrupt frame without EOI makes the indexer read.
MAX_FILE_FRAME_BYTES = 1 << 24

#: Server: the largest frame decoded to re-encode it (mjpeg_rtsp.transcode): 8K UHD
#: (7680x4320), about 100 MB as RGB. A SOF can claim 65535x65535 (12 GB decoded) in a few
#: bytes; such frames are refused from their header, before anything is decoded.
MAX_REENCODE_PIXELS = 7680 * 4320


class FrameTooLargeError(ValueError):
    """A frame over one of these limits: dropped and counted as rejected, not as corrupt."""
