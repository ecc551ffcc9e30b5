"""Digest access authentication for the server (RFC 2617 as RTSP uses it; RFC 7826 section 19).

Theory of operation: the server challenges with ``WWW-Authenticate: Digest realm=..., nonce=...,
algorithm=MD5`` and checks the ``Authorization`` header of every request against the users it
knows. Nothing here touches a socket or a thread; the clock and the randomness are passed in.

* Nonces are self-validating, so the server keeps no table of them: ``issue time (ms, 16 hex
  digits) + salt (16 hex digits) + HMAC-SHA256(key, issue time + salt)`` (truncated to 32 hex
  digits), with a key drawn from :mod:`secrets` when the authenticator is made. A nonce the
  key did not sign is refused as bad; one older than ``nonce_lifetime`` with an otherwise
  correct response earns a ``stale=true`` challenge (RFC 2617 section 3.2.1), so the client
  retries with the fresh nonce without asking its user again. Nonces are reused for many
  requests (live555, ffmpeg and GStreamer all do so), as RFC 2069 allows.
* The challenge offers no ``qop``: live555 (VLC) does not implement it, and every RTSP client
  implements the RFC 2069 form (``response = MD5(HA1:nonce:HA2)``). Responses in the RFC 2617
  ``qop=auth`` form (``MD5(HA1:nonce:nc:cnonce:auth:HA2)``) are accepted too.
* Only MD5 (the only algorithm RTSP clients implement); ``MD5-sess`` and others are refused.
* Digest only, no Basic: Basic sends the password in clear text on every request.
* The ``uri`` parameter must be present; it is compared with the request's URI loosely (path
  only, trailing ``/`` ignored, an aggregate URL covers its control URLs), since clients differ
  in what they put there. The response hash is always computed over the ``uri`` they sent.

Every comparison of secrets uses :func:`hmac.compare_digest`; for an unknown user a response is
still computed (against a dummy HA1), so a wrong user and a wrong password look alike, also in
time. Any ``Authorization`` value, however malformed, gives an :class:`AuthResult`, never an
exception.

:class:`AuthBackoff` slows down password guessing per source address: a few failures are
free, then each further one shuts the address out for twice as long as the one before (capped);
the service answers a shut-out address 401 with ``Retry-After`` without checking anything.
Other addresses are never affected, a success forgets the address, and the table is bounded.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_REALM = "mjpeg-rtsp"
DEFAULT_NONCE_LIFETIME = 300.0
MAX_HEADER_LENGTH = 4096
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_NC = re.compile(r"[0-9a-fA-F]{8}")
_MAC_HEX = 32


class AuthStatus(enum.Enum):
    OK = "ok"
    MISSING = "missing"  # no Authorization header (or not a Digest one): challenge
    BAD = "bad"  # wrong user, wrong password, forged nonce, malformed header
    STALE = "stale"  # right credentials, expired nonce: challenge with stale=true


@dataclass(frozen=True)
class AuthResult:
    status: AuthStatus
    user: str | None = None  # the user name the client gave (for logs), if any
    reason: str = ""  # why it failed (for logs; never contains a password)
    nonce: str | None = None  # the client's nonce, when it is ours and still fresh

    @property
    def ok(self) -> bool:
        return self.status is AuthStatus.OK


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8", "surrogatepass")).hexdigest()


def digest_ha1(user: str, realm: str, password: str) -> str:
    """RFC 2617 section 3.2.2.2 ``A1`` hashed (algorithm MD5)."""
    return _md5(f"{user}:{realm}:{password}")


def digest_response(
    ha1: str, method: str, uri: str, nonce: str,
    qop: str | None = None, nc: str = "", cnonce: str = "",
) -> str:
    """RFC 2617 section 3.2.2.1 request-digest, with or without ``qop`` (server and client)."""
    ha2 = _md5(f"{method}:{uri}")
    if qop is None:
        return _md5(f"{ha1}:{nonce}:{ha2}")
    return _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def parse_auth_params(text: str) -> dict[str, str] | None:
    """``name=value`` pairs, comma separated, values tokens or quoted strings (RFC 2617 1.2).

    Names are lower-cased; None for anything malformed (unterminated quote, a pair without
    ``=``, a name given twice).
    """
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            return params
        match = _TOKEN.match(text, i)
        if match is None:
            return None
        name = match.group().lower()
        i = match.end()
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != "=":
            return None
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            value = []
            while True:
                if i >= n:
                    return None  # unterminated quoted string
                char = text[i]
                if char == "\\" and i + 1 < n:
                    value.append(text[i + 1])
                    i += 2
                    continue
                if char == '"':
                    i += 1
                    break
                value.append(char)
                i += 1
            value_text = "".join(value)
        else:
            match = _TOKEN.match(text, i)
            if match is None:
                return None
            value_text = match.group()
            i = match.end()
        if name in params:
            return None
        params[name] = value_text
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] != ",":
            return None


def _uri_path(uri: str) -> str | None:
    """The unquoted path of a URI (absolute URL or bare path), without a trailing ``/``."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return None
    return urllib.parse.unquote(parts.path).rstrip("/")


def uri_matches(digest_uri: str, request_uri: str) -> bool:
    """Loose comparison of the ``uri`` parameter with the request line's URI.

    Equal strings match; otherwise the paths must be equal (trailing ``/`` ignored), or the
    digest path must be a non-empty ``/``-prefix of the request path (a client that signs the
    presentation URL while it sets up the control URL under it). ``*`` matches only ``*``.
    """
    if digest_uri == request_uri:
        return True
    digest_path, request_path = _uri_path(digest_uri), _uri_path(request_uri)
    if not digest_path or request_path is None or "*" in (digest_uri, request_uri):
        return False
    return request_path == digest_path or request_path.startswith(digest_path + "/")


class DigestAuthenticator:
    """The server's side of Digest authentication (RFC 2617 sections 3.2.1 and 3.2.2)."""

    def __init__(
        self,
        users: dict[str, str],
        realm: str = DEFAULT_REALM,
        nonce_lifetime: float = DEFAULT_NONCE_LIFETIME,
        clock: Callable[[], float] = time.monotonic,
        token_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if not users:
            raise ValueError("no users: authentication would refuse everyone")
        if not realm or any(c in realm for c in '"\\') or not realm.isprintable():
            raise ValueError(f"bad realm {realm!r}: printable, without quotes or backslashes")
        if not nonce_lifetime > 0:
            raise ValueError("nonce_lifetime must be > 0")
        for user in users:
            check_user_name(user)
        self.realm = realm
        self.nonce_lifetime = nonce_lifetime
        self.clock = clock
        self._token_bytes = token_bytes
        self._key = token_bytes(32)
        # Only HA1 = MD5(user:realm:password) is kept, never the password.
        self._ha1 = {user: digest_ha1(user, realm, password) for user, password in users.items()}
        self._dummy_ha1 = _md5(token_bytes(16).hex())

    @property
    def users(self) -> list[str]:
        return sorted(self._ha1)

    # --- nonces -------------------------------------------------------------------------

    def _mac(self, body: str) -> str:
        return hmac.new(self._key, body.encode("ascii"), hashlib.sha256).hexdigest()[:_MAC_HEX]

    def new_nonce(self) -> str:
        issued = int(self.clock() * 1000) & 0xFFFFFFFFFFFFFFFF
        body = f"{issued:016x}{self._token_bytes(8).hex()}"
        return body + self._mac(body)

    def _nonce_age(self, nonce: str) -> float | None:
        """Seconds since the nonce was issued; None if this server did not issue it."""
        if len(nonce) != 32 + _MAC_HEX or not all(c in "0123456789abcdef" for c in nonce):
            return None
        body, mac = nonce[:32], nonce[32:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        age = self.clock() - int(body[:16], 16) / 1000
        return age if age >= -1.0 else None  # issued in the future: not by this clock

    # --- the challenge and the check -----------------------------------------------------

    def challenge(self, stale: bool = False, nonce: str | None = None) -> str:
        """A ``WWW-Authenticate`` value: ``Digest realm="...", nonce="...", algorithm=MD5``."""
        value = f'Digest realm="{self.realm}", nonce="{nonce or self.new_nonce()}", algorithm=MD5'
        return value + ", stale=true" if stale else value

    def challenge_for(self, result: AuthResult) -> str:
        """The challenge answering a failed check: ``stale=true`` for an expired nonce, the
        client's own nonce again when only its response was wrong (so a client that retries
        once per new nonce does not retry wrong credentials for ever)."""
        return self.challenge(stale=result.status is AuthStatus.STALE, nonce=result.nonce)

    def refuse_unchecked(self, authorization: str | None) -> AuthResult:
        """A BAD result for a request whose credentials are not even looked at (an address in
        its back-off); it keeps the client's nonce when that is ours and fresh, as a wrong
        password's does, so the client gives up instead of retrying with each new nonce."""
        nonce = None
        if authorization is not None and len(authorization) <= MAX_HEADER_LENGTH:
            scheme, _, rest = authorization.strip().partition(" ")
            params = parse_auth_params(rest) if scheme.lower() == "digest" else None
            candidate = (params or {}).get("nonce")
            age = self._nonce_age(candidate) if candidate else None
            if age is not None and age <= self.nonce_lifetime:
                nonce = candidate
        return AuthResult(AuthStatus.BAD, reason="too many failures from this address",
                          nonce=nonce)

    def check(self, method: str, authorization: str | None, uri: str | None = None) -> AuthResult:
        """Verify an ``Authorization`` header for ``method`` (and the request line's ``uri``,
        when given). RFC 2617 section 3.2.2: response = MD5(HA1:nonce:HA2), or with qop=auth
        MD5(HA1:nonce:nc:cnonce:auth:HA2); HA1 = MD5(user:realm:password), HA2 =
        MD5(method:digest-uri)."""
        if authorization is None or not authorization.strip():
            return AuthResult(AuthStatus.MISSING, reason="no Authorization header")
        if len(authorization) > MAX_HEADER_LENGTH:
            return AuthResult(AuthStatus.BAD, reason="Authorization header too long")
        scheme, rest = re.match(r"\s*(\S*)\s*(.*)", authorization, re.S).groups()
        if scheme.lower() != "digest":
            return AuthResult(AuthStatus.BAD, reason=f"{scheme[:20]!r} authentication not "
                              "accepted (Digest only)")
        params = parse_auth_params(rest)
        if params is None:
            return AuthResult(AuthStatus.BAD, reason="malformed Digest parameters")
        user = params.get("username")
        missing = [p for p in ("username", "realm", "nonce", "uri", "response") if p not in params]
        if missing:
            return AuthResult(AuthStatus.BAD, user, f"missing {', '.join(missing)}")
        if params["realm"] != self.realm:
            return AuthResult(AuthStatus.BAD, user, "wrong realm")
        algorithm = params.get("algorithm", "MD5")
        if algorithm.upper() != "MD5":
            return AuthResult(AuthStatus.BAD, user, f"algorithm {algorithm[:20]!r} not supported")
        digest_uri = params["uri"]
        if uri is not None and not uri_matches(digest_uri, uri):
            return AuthResult(AuthStatus.BAD, user, "uri does not match the request")
        response = params["response"]
        if not _HEX32.fullmatch(response):
            return AuthResult(AuthStatus.BAD, user, "malformed response")
        nonce = params["nonce"]
        qop = params.get("qop")
        ha1 = self._ha1.get(user, self._dummy_ha1)
        if qop is None:
            expected = digest_response(ha1, method, digest_uri, nonce)
        elif qop.lower() == "auth":
            nc, cnonce = params.get("nc", ""), params.get("cnonce", "")
            if not _NC.fullmatch(nc) or not cnonce:
                return AuthResult(AuthStatus.BAD, user, "qop=auth without valid nc and cnonce")
            expected = digest_response(ha1, method, digest_uri, nonce, qop, nc, cnonce)
        else:
            return AuthResult(AuthStatus.BAD, user, f"qop {qop[:20]!r} not supported")
        right = hmac.compare_digest(expected.encode(), response.lower().encode())
        age = self._nonce_age(nonce)
        if age is None:
            return AuthResult(AuthStatus.BAD, user, "nonce not issued by this server")
        fresh = age <= self.nonce_lifetime
        if not right or user not in self._ha1:
            return AuthResult(AuthStatus.BAD, user, "wrong user name or password",
                              nonce if fresh else None)
        if not fresh:
            return AuthResult(AuthStatus.STALE, user, "nonce expired")
        return AuthResult(AuthStatus.OK, user)


    def check_basic(self, authorization: str | None) -> AuthResult:
        """Verify an HTTP ``Authorization: Basic`` header (RFC 7617) against the same users,
        for browsers over HTTP only (the RTSP service never accepts Basic): the password is
        hashed as Digest's HA1 is and compared with the stored one, in constant time."""
        if authorization is None or not authorization.strip():
            return AuthResult(AuthStatus.MISSING, reason="no Authorization header")
        if len(authorization) > MAX_HEADER_LENGTH:
            return AuthResult(AuthStatus.BAD, reason="Authorization header too long")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return AuthResult(AuthStatus.BAD, reason=f"{scheme[:20]!r} is not Basic")
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return AuthResult(AuthStatus.BAD, reason="malformed Basic credentials")
        user, sep, password = decoded.partition(":")
        if not sep:
            return AuthResult(AuthStatus.BAD, reason="malformed Basic credentials")
        ha1 = digest_ha1(user, self.realm, password)
        known = self._ha1.get(user, self._dummy_ha1)
        if not hmac.compare_digest(ha1.encode(), known.encode()) or user not in self._ha1:
            return AuthResult(AuthStatus.BAD, user, "wrong user name or password")
        return AuthResult(AuthStatus.OK, user)


def check_user_name(user: str) -> None:
    """ValueError unless ``user`` can travel in a Digest quoted string unescaped."""
    if not user:
        raise ValueError("empty user name")
    if any(c in user for c in ':"\\') or not user.isprintable():
        raise ValueError(f"bad user name {user!r}: no ':', quotes, backslashes or control "
                         "characters")


def parse_user(text: str) -> tuple[str, str]:
    """``user:password`` (the password is everything after the first colon, verbatim)."""
    user, sep, password = text.partition(":")
    user = user.strip()
    if not sep:
        raise ValueError("expected user:password")
    check_user_name(user)
    if not password:
        raise ValueError(f"empty password for user {user!r}")
    return user, password


def load_users(path: str | Path) -> dict[str, str]:
    """Users from a file of ``user:password`` lines; ``#`` starts a comment line, blank
    lines are skipped. ValueError naming the line for anything else."""
    users: dict[str, str] = {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            add_user(users, line, f"{path}, line {number}")
    return users


def add_user(users: dict[str, str], entry: str, where: str) -> None:
    """Add ``user:password`` to ``users``; ValueError prefixed with ``where`` when it cannot."""
    try:
        user, password = parse_user(entry)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if user in users:
        raise ValueError(f"{where}: user {user!r} given twice")
    users[user] = password


def read_users(path: str | None, entries: list[str]) -> dict[str, str] | None:
    """The users of ``--users FILE`` and ``--auth USER:PASSWORD``; None when neither is given."""
    if path is None and not entries:
        return None
    users = load_users(path) if path is not None else {}
    if path is not None and not users:
        raise ValueError(f"{path}: no users in the file")
    for entry in entries:
        add_user(users, entry, "--auth")
    return users


# --- back-off after repeated failures ----------------------------------------------------

@dataclass
class _Failures:
    count: int
    last: float  # time of the latest failure
    blocked_until: float


class AuthBackoff:
    """Per-address back-off after failed authentication (times are passed in).

    ``free_failures`` failures are answered as usual; the one that reaches that count and
    every later one shut the address out for ``base_delay * 2 ** (failures - free_failures)``
    seconds, at most ``max_delay``. An address is forgotten after ``window`` seconds without a
    failure (counted from the end of its shut-out), or at once when it succeeds. At most
    ``max_addresses`` addresses are remembered; the one that failed least recently goes first,
    so memory stays bounded whoever floods it. Thread-safe: the server's connection workers
    share one.
    """

    def __init__(
        self,
        free_failures: int = 5,
        window: float = 60.0,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        max_addresses: int = 4096,
    ) -> None:
        if free_failures < 1 or max_addresses < 1:
            raise ValueError("free_failures and max_addresses must be at least 1")
        if not (window > 0 and base_delay > 0 and max_delay >= base_delay):
            raise ValueError("window and base_delay must be > 0 and max_delay >= base_delay")
        self.free_failures = free_failures
        self.window = window
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_addresses = max_addresses
        self._table: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def _entry(self, address: str, now: float) -> _Failures | None:
        entry = self._table.get(address)
        if entry is not None and now - max(entry.last, entry.blocked_until) > self.window:
            del self._table[address]
            return None
        return entry

    def retry_after(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try again; 0.0 when it may try now."""
        with self._lock:
            entry = self._entry(address, now)
            return max(0.0, entry.blocked_until - now) if entry is not None else 0.0

    def failed(self, address: str, now: float) -> float:
        """Count a failure of ``address``; return the shut-out it earned (0.0 for none)."""
        with self._lock:
            entry = self._entry(address, now)
            if entry is None:
                entry = self._table[address] = _Failures(0, now, now)
            entry.count += 1
            entry.last = now
            self._table.move_to_end(address)
            while len(self._table) > self.max_addresses:
                self._table.popitem(last=False)
            excess = entry.count - self.free_failures
            if excess < 0:
                return 0.0
            # 2 ** excess only while it can still be below the cap (no huge powers).
            delay = self.max_delay if excess > 64 else min(
                self.base_delay * 2.0 ** excess, self.max_delay)
            entry.blocked_until = now + delay
            return delay

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._table.pop(address, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._table)
