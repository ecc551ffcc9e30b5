"""Motion-JPEG over RTSP/RTP: a sans-I/O protocol core and the drivers that run it.

The core takes bytes and times and returns values, events and bytes; it opens
no socket, starts no thread and reads no clock of its own (times are passed
in, or a clock is injected), so it is tested with byte-exact vectors:

- RTSP: ``rtsp`` (messages, the reader for both dialects, formatting),
  ``headers`` (Transport, Session, Range, CSeq values), ``sdp``,
  ``auth`` (Basic and Digest; the authenticator's clock defaults to
  ``time.monotonic`` and the back-off table holds a lock of its own).
- Server logic: ``service`` (request -> reply + actions) and ``session``
  (the state table and the registry; the threaded server injects any locks).
- Player logic: ``client`` (requests out, replies in), ``controller`` (the
  player's commands, timers, RTP/RTCP filtering and reports), ``jitter``,
  ``stats``, ``rawjpeg``.
- Payloads: ``rtp``, ``rtcp``, ``jpeg``, ``rfc2435``, ``limits``,
  ``transcode`` (re-encoding with Pillow, bytes to bytes).

Modules that do I/O:

- ``media`` reads files (an index per file, frames by ``os.pread``) and shares
  an index between threads that ask for the same file at once (a lock, an event);
  it knows nothing of RTSP.
- ``streaming`` (the server's pacing thread, UDP and interleaved sinks, RTCP
  over sockets), ``player`` (the player's threads and sockets around the
  controller) and ``ports`` (binding RTP/RTCP socket pairs) are the drivers.
- ``cli`` holds argument types for the command lines.

The entry points are top-level: ``Server.py`` and ``ServerWorker.py`` (the
listening socket and a thread per connection), ``ClientLauncher.py`` and
``Client.py`` (the player and its Tk window), with the course's ``RtpPacket.py``
and ``VideoStream.py`` APIs over this package.
"""
