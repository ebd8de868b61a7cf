"""Which Host and Origin headers the server answers: a guard against DNS rebinding and
cross-site requests, as pure ASGI middleware in front of the whole app.

Why: a page on any web site can make the browser POST to http://127.0.0.1:8000 (drive the
model), and a site whose DNS name is rebound to 127.0.0.1 can even read the answers, since
to the browser they are that site's own. Both show in the headers: a rebinding request names
the attacker's host in `Host`, and a cross-site one names its page in `Origin`.

The rules:
- `Host` must be an IP address (a browser that typed an address cannot be rebound),
  `localhost`, the `--host` name, or an `--allowed-host` name (`*` allows any: only behind a
  proxy that checks it). Others get 421. With `--host 0.0.0.0` a name of this machine is not
  known: requests that name it need `--allowed-host NAME` (`host_warning` says so).
- A request with an `Origin` header must come from the server's own origin (the page) or an
  origin `--cors-origin` names (`*`: any). Others get 403. Browsers send `Origin` on every
  cross-site POST and script fetch, so this covers every route that changes or returns data.

Example:
    app = HostOriginGuard(app, allowed_hosts("127.0.0.1", ()), cors_origins=())
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable

LOCAL_NAMES = ("localhost",)
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def allowed_hosts(bound_host: str, extra: Iterable[str]) -> frozenset[str]:
    """The host names (lowercase, no port) a request's Host may give besides IP addresses."""
    names = {*LOCAL_NAMES, *(name.strip().lower() for name in extra if name.strip())}
    if bound_host not in WILDCARD_HOSTS and not _is_ip(bound_host):
        names.add(bound_host.lower())
    return frozenset(names)


def host_warning(bound_host: str, extra: Iterable[str]) -> str | None:
    """The warning for a wildcard bind without `--allowed-host`: names of it will be refused."""
    if bound_host not in WILDCARD_HOSTS or any(name.strip() for name in extra):
        return None
    return (
        f"warning: binding {bound_host or '*'}: requests that reach this machine by a host "
        "name (not an IP address) are refused; allow each name with --allowed-host NAME"
    )


def host_name(host_header: str) -> str:
    """The name in a Host header without its port: `[::1]:8000` -> `::1`, `A.org:80` -> `a.org`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host_header: str | None, allowed: frozenset[str]) -> bool:
    """Whether a request naming `host_header` is for this server (see the module's rules)."""
    if host_header is None:
        return True  # HTTP/1.0 without Host: no browser sends that, so nothing to rebind
    name = host_name(host_header)
    return "*" in allowed or _is_ip(name) or name in allowed


def origin_allowed(origin: str, host_header: str | None, cors_origins: Iterable[str]) -> bool:
    """Whether a request from page `origin` may be answered: same origin, or a CORS one."""
    origin = origin.strip().lower().rstrip("/")
    cors = {o.strip().lower().rstrip("/") for o in cors_origins}
    if "*" in cors or origin in cors:
        return True
    scheme, sep, netloc = origin.partition("://")
    if not sep or not netloc or host_header is None:
        return False  # "null" (a sandboxed frame, a file:// page) is nobody's origin
    return _without_default_port(netloc, scheme) == _without_default_port(
        host_header.strip().lower(), None
    )


def _without_default_port(netloc: str, scheme: str | None) -> str:
    """`a.org:80` -> `a.org` for http (any scheme when None: a Host header names none)."""
    for name, port in _DEFAULT_PORTS.items():
        if (scheme in (None, name)) and netloc.endswith(port):
            return netloc[: -len(port)]
    return netloc


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostOriginGuard:
    """ASGI middleware refusing requests for another Host (421) or from another Origin (403).

    Args:
        app: the ASGI app it guards.
        allowed: from `allowed_hosts`.
        cors_origins: the origins `--cors-origin` allows besides the server's own.
    """

    def __init__(self, app, allowed: frozenset[str], cors_origins: Iterable[str] = ()):
        self.app = app
        self.allowed = allowed
        self.cors_origins = tuple(cors_origins)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host, origin = headers.get("host"), headers.get("origin")
        if not host_allowed(host, self.allowed):
            return await _refuse(
                send,
                421,
                f"Host {_shown(host)} is not a name of this server: start it with "
                f"--allowed-host {_shown(host_name(host or ''))} if it is",
            )
        if origin is not None and not origin_allowed(origin, host, self.cors_origins):
            return await _refuse(
                send,
                403,
                f"requests from pages on {_shown(origin)} are refused: start the server "
                f"with --cors-origin {_shown(origin)} to allow them",
            )
        return await self.app(scope, receive, send)


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _shown(value: str | None) -> str:
    """An attacker's header, quoted and cut short, safe to echo in one line."""
    value = "".join(c if c.isprintable() else "?" for c in (value or ""))[:80]
    return repr(value)
