"""Core of the Motion-JPEG RTSP/RTP streaming system.

Everything in this package is protocol and media logic: bytes in, values and
bytes out. Sockets, threads and Tk live in the top-level drivers
(Server.py, ServerWorker.py, ...) and in :mod:`mjpeg_rtsp.server`.
"""
