"""What the browser side says, sans I/O: routes, the pages, multipart framing, the headers.

Theory of operation: :func:`route` maps a request target to one of the views (or None: 404);
the page functions build small hand-written HTML from plain values, and every value that came
from a request, a file name or a live source goes through :func:`html.escape` (text and
attributes) or :func:`urllib.parse.quote` (URLs). The pages' one script and one style sheet
are constants, allowed by their hashes in the Content-Security-Policy, so nothing else can
run or load even if something slipped through. The stream is ``multipart/x-mixed-replace``:
one part per JPEG, each with its ``Content-Type`` and ``Content-Length`` (:func:`part_head`).
The driver is :mod:`mjpeg_rtsp.httpview`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import urllib.parse
from dataclasses import dataclass

BOUNDARY = "mjpegframe"
STREAM_CONTENT_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
HTML_CONTENT_TYPE = "text/html; charset=utf-8"
SNAPSHOT_SUFFIX = ".jpg"
ALLOWED_METHODS = "GET, HEAD"

STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;padding:0.5em;max-width:72em;
background:#111;color:#eee}
a{color:#8cf}h1{font-size:1.3em}
img{max-width:100%;height:auto;display:block;background:#000}
ul.streams{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:1em}
ul.streams li{background:#222;padding:0.5em;border-radius:6px;width:20em;max-width:100%}
input{width:100%;box-sizing:border-box;font-family:monospace}
dl{display:grid;grid-template-columns:auto 1fr;gap:0.2em 1em}dd{margin:0}
"""

WATCH_SCRIPT = """
"use strict";
const view = document.getElementById("view");
const name = view.dataset.stream;
function set(id, text) { document.getElementById(id).textContent = text; }
function show(status) {
  const s = status.streams.find((x) => x.name === name);
  if (!s) return;
  let viewers = 0;
  for (const kind in s.viewers) if (kind !== "publish") viewers += s.viewers[kind];
  set("size", s.width + "\\u00d7" + s.height);
  set("rate", s.fps ? s.fps + " fps" : "-");
  set("viewers", String(viewers));
  set("state", s.status);
}
async function poll() {
  try {
    const reply = await fetch("/status.json", {cache: "no-store"});
    if (reply.ok) show(await reply.json());
  } catch (e) { /* the server is away: try again */ }
  setTimeout(poll, 2000);
}
view.addEventListener("error", () => {
  setTimeout(() => { view.src = view.dataset.src + "?retry=" + Date.now(); }, 2000);
});
poll();
"""


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src 'self'; connect-src 'self'; "
    f"script-src {_csp_hash(WATCH_SCRIPT)}; style-src {_csp_hash(STYLE)}; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# On every response (pages, errors, JSON, images, the stream).
SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


@dataclass(frozen=True)
class Route:
    view: str  # "index", "watch", "stream", "snapshot", "status", "metrics"
    name: str = ""  # the stream's name as in the URL (still percent-encoded)


def route(target: str) -> Route | None:
    """The view a request target asks for; None for anything else (404). The query string is
    ignored; the name is left percent-encoded for the media library to decode and confine."""
    if target.startswith(("http://", "https://")):  # absolute form (RFC 9112 section 3.2.2)
        try:
            target = urllib.parse.urlsplit(target).path or "/"
        except ValueError:
            return None
    path = target.split("?", 1)[0].split("#", 1)[0]
    if path == "/":
        return Route("index")
    if path == "/status.json":
        return Route("status")
    if path == "/metrics":
        return Route("metrics")
    for view in ("watch", "stream", "snapshot"):
        prefix = f"/{view}/"
        if path.startswith(prefix) and len(path) > len(prefix):
            name = path[len(prefix):]
            if view == "snapshot":
                if not name.endswith(SNAPSHOT_SUFFIX) or name == SNAPSHOT_SUFFIX:
                    return None
                name = name[: -len(SNAPSHOT_SUFFIX)]
            return Route(view, name)
    return None


def part_head(length: int) -> bytes:
    """The boundary and headers before one JPEG of ``length`` bytes (the part ends with
    CRLF after the JPEG: :data:`PART_TAIL`)."""
    return (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {length}\r\n\r\n").encode("ascii")


PART_TAIL = b"\r\n"

_HOST = re.compile(r"(?:[A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}|\[[0-9A-Fa-f:.]{2,45}\]")


def rtsp_host(host_header: str | None, fallback: str) -> str:
    """The host part of a request's Host header when it is a plain name or address (for the
    RTSP URLs a page shows), else ``fallback`` (the address the request came in on)."""
    if host_header:
        host = host_header.strip()
        if host.startswith("["):
            host = host[: host.find("]") + 1] if "]" in host else ""
        else:
            host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        if _HOST.fullmatch(host):
            return host
    return f"[{fallback}]" if ":" in fallback else fallback


def _url(view: str, name: str, suffix: str = "") -> str:
    return f"/{view}/{urllib.parse.quote(name)}{suffix}"


def _page(title: str, body: str, script: bool = False) -> str:
    tail = f"<script>{WATCH_SCRIPT}</script>" if script else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}{tail}</body></html>\n"
    )


def _size(stream: dict) -> str:
    width, height = stream.get("width"), stream.get("height")
    return html.escape(f"{width}\u00d7{height}" if width else "-")


def _rate(stream: dict) -> str:
    fps = stream.get("fps")
    return html.escape(f"{fps:g} fps" if isinstance(fps, (int, float)) and fps else "-")


def _figures(stream: dict) -> str:
    return f"{_size(stream)}, {_rate(stream)}"


def index_page(streams: list[dict], rtsp_base: str) -> str:
    """Every stream (a :func:`metrics.describe_media` dict, or ``{"name", "error"}`` for a
    file that cannot be served) with its snapshot, watch link and RTSP URL."""
    items = []
    for stream in streams:
        name = str(stream["name"])
        text = html.escape(name)
        watch = html.escape(_url("watch", name))
        rtsp = html.escape(f"{rtsp_base}/{urllib.parse.quote(name)}")
        if "error" in stream:
            items.append(f"<li><b>{text}</b><p>cannot be served: "
                         f"{html.escape(str(stream['error']))}</p></li>")
            continue
        snapshot = html.escape(_url("snapshot", name, SNAPSHOT_SUFFIX))
        state = "" if stream.get("kind") == "file" else \
            f" &middot; live: {html.escape(str(stream.get('status', '')))}"
        items.append(
            f"<li class=\"stream\"><a href=\"{watch}\"><img src=\"{snapshot}\" alt=\"{text}\" "
            f"loading=\"lazy\"></a><b>{text}</b><br>{_figures(stream)}{state}<br>"
            f"<a href=\"{watch}\">watch</a> &middot; <a href=\"{snapshot}\">snapshot</a>"
            f"<label>RTSP <input readonly value=\"{rtsp}\"></label></li>"
        )
    listing = "".join(items) or "<li>No streams: the media folder is empty.</li>"
    body = (f"<h1>Streams</h1><ul class=\"streams\">{listing}</ul>"
            "<p><a href=\"/status.json\">status.json</a> &middot; "
            "<a href=\"/metrics\">metrics</a></p>")
    return _page("mjpeg-rtsp streams", body)


def watch_page(stream: dict, rtsp_url: str) -> str:
    """One stream in an ``<img>`` on its MJPEG URL, with its figures (kept current by the
    page's script from /status.json)."""
    name = str(stream["name"])
    text = html.escape(name)
    source = html.escape(_url("stream", name))
    body = (
        f"<h1>{text}</h1>"
        f"<img id=\"view\" src=\"{source}\" data-src=\"{source}\" data-stream=\"{text}\" "
        f"alt=\"{text}\">"
        "<dl>"
        f"<dt>size</dt><dd id=\"size\">{_size(stream)}</dd>"
        f"<dt>rate</dt><dd id=\"rate\">{_rate(stream)}</dd>"
        "<dt>viewers</dt><dd id=\"viewers\">-</dd>"
        f"<dt>state</dt><dd id=\"state\">{html.escape(str(stream.get('status', '')))}</dd>"
        f"<dt>RTSP</dt><dd><input readonly value=\"{html.escape(rtsp_url)}\"></dd>"
        "</dl><p><a href=\"/\">all streams</a></p>"
    )
    return _page(name, body, script=True)


def error_page(status: int, phrase: str, message: str) -> str:
    return _page(f"{status} {phrase}",
                 f"<h1>{status} {html.escape(phrase)}</h1><p>{html.escape(message)}</p>")
