"""Which webhook targets the safe client accepts: URL shapes and address classes (no I/O)."""

from __future__ import annotations

import pytest

import strongroom.adapters.http as http_adapter
from strongroom.adapters.http import TargetRefused, check_url, classify_address


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("0.0.0.0", "the unspecified address, which reaches this machine"),  # noqa: S104
        ("::", "the unspecified address, which reaches this machine"),
        ("0.1.2.3", "a 'this network' address (0.0.0.0/8)"),
        ("127.0.0.1", "a loopback address"),
        ("127.255.0.9", "a loopback address"),
        ("::1", "a loopback address"),
        ("169.254.169.254", "a link-local address (a cloud metadata service)"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("fd00:ec2::254", "a private address (a cloud metadata service)"),
        ("10.0.0.1", "a private address"),
        ("172.16.0.1", "a private address"),
        ("172.31.255.255", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fc00::1", "a private address"),
        ("100.64.0.1", "a shared (carrier-grade NAT) address"),
        ("100.127.255.254", "a shared (carrier-grade NAT) address"),
        # ipaddress calls these "global"; they must still be refused.
        ("224.0.0.1", "a multicast address"),
        ("239.255.255.250", "a multicast address"),
        ("ff0e::1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("255.255.255.255", "a reserved address"),
        ("fec0::1", "a site-local address"),
        ("192.0.2.10", "a special-purpose address that is not globally reachable"),
        ("198.18.0.1", "a special-purpose address that is not globally reachable"),
        ("2001:db8::1", "a special-purpose address that is not globally reachable"),
        # IPv6 forms that end at an IPv4 address are judged by that address.
        ("::ffff:127.0.0.1", "an IPv6 form of 127.0.0.1, a loopback address"),
        ("::ffff:10.0.0.1", "an IPv6 form of 10.0.0.1, a private address"),
        (
            "::ffff:169.254.169.254",
            "an IPv6 form of 169.254.169.254, a link-local address (a cloud metadata service)",
        ),
        ("64:ff9b::a00:1", "a NAT64 form of 10.0.0.1, a private address"),
        ("2002:a9fe:a9fe::1", "a 6to4 address for 169.254.169.254, a link-local address"),
        ("2002:7f00:1::", "a 6to4 address for 127.0.0.1, a loopback address"),
        ("::127.0.0.1", "an IPv4-compatible address for 127.0.0.1, a loopback address"),
        ("2001:0:a00:1::1", "a Teredo address for 10.0.0.1, a private address"),
        ("not-an-ip", "which is not an IP address"),
    ],
)
def test_non_global_addresses_are_refused_with_their_class(address: str, reason: str) -> None:
    assert (classify_address(address) or "").startswith(reason)


@pytest.mark.parametrize(
    "address",
    ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "::ffff:93.184.215.14", "64:ff9b::808:808"],
)
def test_global_addresses_are_allowed(address: str) -> None:
    assert classify_address(address) is None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "an IPv6 form of 127.0.0.1, a loopback address"),
    ],
)
def test_allow_loopback_allows_loopback(address: str, reason: str) -> None:
    assert classify_address(address) == reason
    assert classify_address(address, allow_loopback=True) is None


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0",  # noqa: S104 - reaches local services like 127.0.0.1 does, yet is not loopback
        "10.0.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "fd00::1",
        "2002:7f00:1::",  # loopback through a tunnel is not the developer's own machine
        "64:ff9b::7f00:1",
    ],
)
def test_allow_loopback_never_allows_anything_else(address: str) -> None:
    assert classify_address(address, allow_loopback=True) is not None


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("https://hooks.merchant.example/stripe", "https://hooks.merchant.example/stripe"),
        ("HTTPS://Hooks.Merchant.Example:443/a?b=1#frag", "https://hooks.merchant.example/a?b=1"),
        ("http://merchant.example:80", "http://merchant.example/"),
        ("http://merchant.example:8080/x", "http://merchant.example:8080/x"),
        ("https://bücher.example/hook", "https://xn--bcher-kva.example/hook"),
        ("http://[2606:4700::1111]/", "http://[2606:4700::1111]/"),
    ],
)
def test_check_url_normalizes_http_urls(url: str, normalized: str) -> None:
    assert check_url(url) == normalized


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://files.merchant.example/", "ftp://files.merchant.example/ uses ftp:"),
        ("file:///etc/passwd", "file:///etc/passwd uses file:"),
        ("gopher://127.0.0.1:6379/_PING", "uses gopher:"),
        ("//merchant.example/hook", "uses no scheme"),
        ("merchant.example/hook", "uses no scheme"),
        ("http:///hook", "has no host"),
        ("https://merchant.example:0/", "uses port 0"),
        ("http://merchant.example/\nX-Injected: 1", "is not a valid URL"),
    ],
)
def test_check_url_refuses_what_can_never_be_delivered(url: str, reason: str) -> None:
    with pytest.raises(TargetRefused) as refused:
        check_url(url)
    assert reason in refused.value.reason


@pytest.mark.parametrize(
    "url",
    [
        "https://user:hunter2@merchant.example/hook",
        "https://token@merchant.example/hook",
        # Parsers disagree on the backslash; ours reads everything before @ as userinfo.
        "http://merchant.example\\@169.254.169.254/",
    ],
)
def test_check_url_refuses_userinfo_without_echoing_it(url: str) -> None:
    with pytest.raises(TargetRefused) as refused:
        check_url(url)
    assert "contains a user name or password" in refused.value.reason
    assert "hunter2" not in refused.value.reason
    assert "token" not in refused.value.reason


def test_the_package_exports_the_intended_names() -> None:
    assert sorted(http_adapter.__all__) == [
        "DeliveryError",
        "Resolver",
        "Response",
        "SafeClient",
        "SafeClientError",
        "SystemResolver",
        "Target",
        "TargetRefused",
        "check_url",
        "classify_address",
    ]
    assert issubclass(http_adapter.TargetRefused, http_adapter.SafeClientError)
    assert issubclass(http_adapter.DeliveryError, http_adapter.SafeClientError)
    assert http_adapter.TargetRefused("x").reason == "x"
