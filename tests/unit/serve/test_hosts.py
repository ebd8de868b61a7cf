"""The Host and Origin rules of cnnclf/serve/hosts.py, on header values alone."""

import pytest

from cnnclf.serve.hosts import (
    allowed_hosts,
    host_allowed,
    host_name,
    host_warning,
    origin_allowed,
)

LOCAL = allowed_hosts("127.0.0.1", ())


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:8000",
        "localhost:8000",
        "LOCALHOST",
        "[::1]:8000",
        "192.168.1.20:8000",
        "10.0.0.1",
    ],
)
def test_addresses_and_localhost_are_always_answered(host):
    assert host_allowed(host, LOCAL)


@pytest.mark.parametrize("host", ["evil.example:8000", "evil.example", "127.0.0.1.nip.io:8000", ""])
def test_other_names_are_refused_unless_allowed(host):
    assert not host_allowed(host, LOCAL)
    assert host_allowed("evil.example:8000", allowed_hosts("0.0.0.0", ["Evil.Example"]))
    assert host_allowed(host, allowed_hosts("127.0.0.1", ["*"]))


def test_the_bound_name_is_answered_and_a_wildcard_bind_warns():
    assert host_allowed("gpu-box.lan:8000", allowed_hosts("gpu-box.lan", ()))
    assert not host_allowed("gpu-box.lan:8000", allowed_hosts("0.0.0.0", ()))
    assert "--allowed-host" in host_warning("0.0.0.0", ())
    assert host_warning("0.0.0.0", ["gpu-box.lan"]) is None
    assert host_warning("127.0.0.1", ()) is None
    assert (host_name("[::1]:80"), host_name("A.org:80"), host_name("::1")) == (
        "::1",
        "a.org",
        "::1",
    )


@pytest.mark.parametrize(
    ("origin", "host", "cors", "allowed"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", (), True),  # the page itself
        ("http://localhost:8000", "localhost:8000", (), True),
        ("https://app.example", "app.example", (), True),  # behind a TLS proxy
        ("http://app.example:80", "app.example", (), True),
        ("http://127.0.0.1:9000", "127.0.0.1:8000", (), False),  # another port: another site
        ("https://evil.example", "127.0.0.1:8000", (), False),
        ("null", "127.0.0.1:8000", (), False),  # sandboxed frame, file:// page
        ("https://app.example", "127.0.0.1:8000", ("https://app.example/",), True),
        ("https://any.example", "127.0.0.1:8000", ("*",), True),
    ],
)
def test_origins(origin, host, cors, allowed):
    assert origin_allowed(origin, host, cors) is allowed
