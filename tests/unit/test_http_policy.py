"""The HTTP task's address and host checks (jobqueue/outbound.py), without a network."""

from __future__ import annotations

import ipaddress

import pytest

from jobqueue.config import Settings
from jobqueue.exceptions import ConfigurationError
from jobqueue.http import URLNotAllowed
from jobqueue.outbound import Policy, origin, refused


@pytest.mark.parametrize(
    "address, reason",
    [
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("127.0.0.1", "a loopback address"),
        ("169.254.169.254", "a link-local address"),  # cloud metadata services
        ("224.0.0.1", "a multicast address"),
        ("0.0.0.0", "an unspecified address"),
        ("240.0.0.1", "a reserved address"),
        ("100.64.0.1", "not a public address"),  # shared (carrier-grade NAT)
        ("::1", "a loopback address"),
        ("fe80::1", "a link-local address"),
        ("fd00::1", "a private address"),
        ("::ffff:127.0.0.1", "an address carrying 127.0.0.1, a loopback address"),
        ("64:ff9b::a00:1", "an address carrying 10.0.0.1, a private address"),  # NAT64
        ("2002:a00:1::", "an address carrying 10.0.0.1, a private address"),  # 6to4
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_only_public_addresses_pass(address: str, reason: str | None) -> None:
    assert refused(ipaddress.ip_address(address)) == reason


def test_allowed_networks_and_hosts() -> None:
    conf = Settings(http_allow_private=["10.0.5.0/24"], http_allowed_hosts=["*.example.com"])
    policy = Policy(conf)
    policy.check_address("http://a.example.com", "a.example.com", "10.0.5.7")
    with pytest.raises(URLNotAllowed, match=r"resolves to 10\.0\.6\.1, a private address"):
        policy.check_address("http://a.example.com", "a.example.com", "10.0.6.1")
    policy.check_host("https://hooks.example.com/x", "hooks.example.com")
    with pytest.raises(URLNotAllowed, match=r"'example\.org' is not in app\.conf\.http_allowed"):
        policy.check_host("https://example.org/x", "example.org")


@pytest.mark.parametrize(
    "setting, value, words",
    [
        ("http_allow_private", "yes", "must be True, False or a list of networks"),
        ("http_allow_private", ["10.0.0.0/33"], "is not a network"),
        ("http_allowed_hosts", "example.com", "must be a list of host names"),
        ("http_max_body_bytes", -1, "must be an integer >= 0"),
    ],
)
def test_bad_settings_are_one_line_errors(setting: str, value: object, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        Policy(Settings(**{setting: value}))


def test_messages_show_the_origin_not_the_secret_path() -> None:
    assert origin("https://hooks.example.com/services/T000/SECRET?token=x") == (
        "https://hooks.example.com"
    )


def test_params_join_the_query_and_drop_the_fragment() -> None:
    from jobqueue.outbound import _with_params

    assert _with_params("https://e.com/a?x=1#top", {"y": [2, 3]}) == "https://e.com/a?x=1&y=2&y=3"
    assert _with_params("https://e.com/a", {"q": "a b"}) == "https://e.com/a?q=a+b"
