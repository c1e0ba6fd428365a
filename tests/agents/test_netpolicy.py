"""The outbound policy: allowlist matching, refused address ranges, and the decision for a host."""

import asyncio
import socket
import threading
from ipaddress import ip_address

import pytest
from django.core.exceptions import ImproperlyConfigured

from agentrunner.netpolicy import (
    Allowlist,
    DestinationNotAllowed,
    NetPolicy,
    blocked_reason,
    is_localhost_name,
    normalize_host,
    resolve,
)

PUBLIC_V4 = "93.184.216.34"


class FakeResolver:
    """Answers from a fixed table and records every lookup; an unknown name is a test bug."""

    def __init__(self, table: dict[str, list[str]] | None = None):
        self.table = {name: [ip_address(a) for a in addresses] for name, addresses in (table or {}).items()}
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int):
        self.lookups.append(host)
        return self.table[host]


def policy(*entries: str, external: bool = False, resolver: FakeResolver | None = None) -> NetPolicy:
    return NetPolicy(allow_external=external, allowlist=Allowlist.parse(entries), resolver=resolver or FakeResolver())


def check(policy: NetPolicy, host: str, port: int):
    return asyncio.run(policy.acheck(host, port))


# --- allowlist -----------------------------------------------------------------------------------


def test_allowlist__parses_hosts_suffixes_addresses_and_cidrs():
    allowlist = Allowlist.parse(["API.Internal.", "*.svc.example", "10.1.0.0/16", "127.0.0.1", "[::1]", "fd00::/8", ""])

    assert allowlist.hosts == {"api.internal"}
    assert allowlist.suffixes == (".svc.example",)
    assert [str(n) for n in allowlist.networks] == ["10.1.0.0/16", "127.0.0.1/32", "::1/128", "fd00::/8"]


def test_allowlist__accepts_a_comma_separated_string():
    assert Allowlist.parse("a.example, 10.0.0.0/8").hosts == {"a.example"}


def test_allowlist__parses_entries_with_a_port_apart_from_those_for_every_port():
    allowlist = Allowlist.parse(
        ["api.internal", "API.Internal.:8443", "*.svc.example:443", "127.0.0.1:8080", "[::1]:8080", "10.0.0.0/8:5432"]
    )

    assert allowlist.hosts == {"api.internal"}
    assert allowlist.suffixes == () and allowlist.networks == ()
    assert sorted(allowlist.ports) == [443, 5432, 8080, 8443]
    assert allowlist.ports[8443].hosts == {"api.internal"}
    assert allowlist.ports[443].suffixes == (".svc.example",)
    assert [str(n) for n in allowlist.ports[8080].networks] == ["127.0.0.1/32", "::1/128"]
    assert [str(n) for n in allowlist.ports[5432].networks] == ["10.0.0.0/8"]


@pytest.mark.parametrize(
    "entry",
    [
        "*",
        "*.",
        "a.*.example",
        "bad*entry",
        "10.0.0.0/33",
        "http://x/y",
        "host:",
        "host:0",
        "host:65536",
        "host:http",
        "host:８０",  # full-width digits
        "a:b:c",
        "[::1",
        "[::1]8080",
        "[::1]:",
        "[::1]:99999",
        "[bad*]:80",
    ],
)
def test_allowlist__refuses_entries_it_cannot_match(entry):
    with pytest.raises(ValueError, match="allowlist entry"):
        Allowlist.parse([entry])


@pytest.mark.parametrize(
    ("host", "port", "allowed"),
    [
        ("api.internal", 8443, True),
        ("api.internal", 443, False),  # the entry names another port
        ("API.INTERNAL.", 8443, True),
        ("other.internal", 80, True),  # no port: every port, as before ports existed
        ("other.internal", 65535, True),
        ("a.svc.example", 443, True),
        ("a.svc.example", 80, False),
        ("api.internal", None, False),  # no port given: entries for one port do not count
    ],
)
def test_allowlist__host_matching_with_ports(host, port, allowed):
    allowlist = Allowlist.parse(["api.internal:8443", "other.internal", "*.svc.example:443"])

    assert allowlist.allows_host(host, port) is allowed


@pytest.mark.parametrize(
    ("address", "port", "allowed"),
    [
        ("127.0.0.1", 8080, True),
        ("127.0.0.1", 8081, False),
        ("::1", 8080, True),
        ("::1", 80, False),
        ("::ffff:127.0.0.1", 8080, True),  # the same destination as 127.0.0.1
        ("10.9.9.9", 1, True),  # a CIDR without a port: every port
    ],
)
def test_allowlist__address_matching_with_ports(address, port, allowed):
    allowlist = Allowlist.parse(["127.0.0.1:8080", "[::1]:8080", "10.0.0.0/8"])

    assert allowlist.allows_address(ip_address(address), port) is allowed


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("api.internal", True),
        ("API.INTERNAL", True),
        ("api.internal.", True),
        ("x.api.internal", False),  # exact entries do not cover subdomains
        ("a.svc.example", True),
        ("deep.a.svc.example", True),
        ("svc.example", False),  # *.suffix does not cover the suffix itself
        ("evilsvc.example", False),
        ("svc.example.evil.com", False),
    ],
)
def test_allowlist__host_matching(host, allowed):
    allowlist = Allowlist.parse(["api.internal", "*.svc.example"])

    assert allowlist.allows_host(host) is allowed


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.1.2.3", True),
        ("10.2.0.1", False),
        ("127.0.0.1", True),
        ("127.0.0.2", False),
        ("::ffff:10.1.2.3", True),  # the same destination as 10.1.2.3
        ("fd00::1", True),
        ("fe80::1", False),
    ],
)
def test_allowlist__address_matching(address, allowed):
    allowlist = Allowlist.parse(["10.1.0.0/16", "127.0.0.1", "fd00::/8"])

    assert allowlist.allows_address(ip_address(address)) is allowed


# --- refused ranges ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.255.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.0.0.5", "a private address"),
        ("172.16.0.1", "a private address"),
        ("172.31.255.255", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fc00::1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("169.254.169.254", "a link-local address (the cloud metadata service)"),
        ("fd00:ec2::254", "a link-local address (the cloud metadata service)"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("224.0.0.1", "a multicast address"),
        ("239.255.255.250", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("100.64.0.1", "a carrier-grade NAT address"),
        ("100.127.255.255", "a carrier-grade NAT address"),
        ("240.0.0.1", "a reserved address"),
        ("255.255.255.255", "a reserved address"),
        ("0.1.2.3", "a special-purpose address"),
        ("192.0.2.1", "a special-purpose address"),
        ("198.18.0.1", "a special-purpose address"),
        ("2001:db8::1", "a special-purpose address"),
        ("fec0::1", "a site-local address"),
        ("::ffff:127.0.0.1", "an IPv4-mapped form of 127.0.0.1, a loopback address"),
        ("::ffff:10.0.0.1", "an IPv4-mapped form of 10.0.0.1, a private address"),
        (
            "::ffff:169.254.169.254",
            "an IPv4-mapped form of 169.254.169.254, a link-local address (the cloud metadata service)",
        ),
        ("::ffff:0.0.0.0", "an IPv4-mapped form of 0.0.0.0, an unspecified address"),
        ("64:ff9b::a00:1", "a NAT64 form of 10.0.0.1, a private address"),
        ("2002:7f00:1::", "a 6to4 form of 127.0.0.1, a loopback address"),
        ("::7f00:1", "an IPv4-compatible form of 127.0.0.1, a loopback address"),
    ],
)
def test_blocked_reason__non_public_ranges(address, reason):
    assert blocked_reason(ip_address(address)) == reason


@pytest.mark.parametrize(
    "address",
    [PUBLIC_V4, "8.8.8.8", "172.32.0.1", "172.15.255.255", "100.128.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"],
)
def test_blocked_reason__public_addresses_pass(address):
    assert blocked_reason(ip_address(address)) is None


# --- decisions -----------------------------------------------------------------------------------


def test_check__public_address_refused_while_external_requests_are_off():
    with pytest.raises(DestinationNotAllowed) as exc:
        check(policy("127.0.0.1"), PUBLIC_V4, 80)

    assert str(exc.value) == (
        f"destination not allowed: {PUBLIC_V4} is an external address and ALLOW_EXTERNAL_REQUESTS is off; "
        "add it to HTTP_AGENT_ALLOWLIST to allow it"
    )


def test_check__public_address_allowed_with_external_requests():
    assert check(policy(external=True), PUBLIC_V4, 443) == [ip_address(PUBLIC_V4)]


def test_check__private_address_message_names_the_address_and_the_setting():
    with pytest.raises(DestinationNotAllowed) as exc:
        check(policy(external=True), "10.0.0.5", 80)

    assert str(exc.value) == (
        "destination not allowed: 10.0.0.5 is a private address; add it to HTTP_AGENT_ALLOWLIST to allow it"
    )


def test_check__allowlisted_cidr_is_allowed_even_with_external_requests_off():
    resolver = FakeResolver({"db.internal": ["10.1.2.3"]})

    assert check(policy("10.1.0.0/16", resolver=resolver), "db.internal", 5432) == [ip_address("10.1.2.3")]
    assert check(policy("10.1.0.0/16"), "10.1.9.9", 80) == [ip_address("10.1.9.9")]


def test_check__allowlisted_name_is_allowed_whatever_it_resolves_to():
    resolver = FakeResolver({"api.internal": ["10.9.9.9"], "a.svc.example": ["192.168.0.7"]})
    allowed = policy("api.internal", "*.svc.example", resolver=resolver)

    assert check(allowed, "api.internal", 80) == [ip_address("10.9.9.9")]
    assert check(allowed, "A.svc.example.", 80) == [ip_address("192.168.0.7")]


def test_check__name_resolving_to_a_private_address_is_refused_naming_both():
    resolver = FakeResolver({"intranet.example": ["10.0.0.5"]})

    with pytest.raises(DestinationNotAllowed, match="intranet.example resolves to 10.0.0.5, a private address"):
        check(policy(external=True, resolver=resolver), "intranet.example", 80)


def test_check__every_resolved_address_must_pass():
    resolver = FakeResolver({"mixed.example": [PUBLIC_V4, "169.254.169.254"]})

    with pytest.raises(DestinationNotAllowed, match="169.254.169.254, a link-local address"):
        check(policy(external=True, resolver=resolver), "mixed.example", 80)


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "app.localhost", "foo.LocalHost.", "a.b.localhost"])
def test_check__localhost_names_refused_unless_allowlisted(host):
    # Even if a resolver answers with a public address for it.
    resolver = FakeResolver({normalize_host(host): [PUBLIC_V4]})

    with pytest.raises(DestinationNotAllowed, match="is a loopback name"):
        check(policy(external=True, resolver=resolver), host, 80)
    assert check(policy("localhost", "*.localhost", resolver=resolver), host, 80) == [ip_address(PUBLIC_V4)]


@pytest.mark.parametrize("host", ["localhost", "Localhost.", "foo.localhost", "FOO.localhost."])
@pytest.mark.parametrize(
    "entries",
    [
        (),
        ("127.0.0.1", "::1"),  # every address localhost could have: still a name, refused as one
        ("0.0.0.0/0", "::/0"),
        ("api.internal",),
    ],
)
def test_check__localhost_names_refused_without_a_dns_lookup(host, entries):
    resolver = FakeResolver()

    with pytest.raises(DestinationNotAllowed, match=f"{normalize_host(host)} is a loopback name"):
        check(policy(*entries, external=True, resolver=resolver), host, 80)
    assert resolver.lookups == []


def test_check__localhost_allowlisted_by_name_and_port():
    resolver = FakeResolver({"localhost": ["127.0.0.1"], "app.localhost": ["127.0.0.1"]})
    allowed = policy("localhost:8080", "*.localhost:9000", resolver=resolver)

    assert check(allowed, "localhost", 8080) == [ip_address("127.0.0.1")]
    assert check(allowed, "app.localhost", 9000) == [ip_address("127.0.0.1")]
    with pytest.raises(DestinationNotAllowed, match="loopback name"):
        check(allowed, "localhost", 8081)
    assert resolver.lookups == ["localhost", "app.localhost"]


def test_check__an_entry_with_a_port_allows_that_port_only():
    resolver = FakeResolver({"api.internal": ["10.9.9.9"], "db.internal": ["10.1.2.3"]})
    allowed = policy("api.internal:8443", "10.1.0.0/16:5432", "127.0.0.1:8080", "[::1]:8080", resolver=resolver)

    assert check(allowed, "api.internal", 8443) == [ip_address("10.9.9.9")]
    assert check(allowed, "db.internal", 5432) == [ip_address("10.1.2.3")]
    assert check(allowed, "127.0.0.1", 8080) == [ip_address("127.0.0.1")]
    assert check(allowed, "[::1]", 8080) == [ip_address("::1")]
    with pytest.raises(DestinationNotAllowed, match="api.internal is not in HTTP_AGENT_ALLOWLIST"):
        check(allowed, "api.internal", 443)
    with pytest.raises(DestinationNotAllowed, match="db.internal is not in HTTP_AGENT_ALLOWLIST"):
        check(allowed, "db.internal", 5433)
    with pytest.raises(DestinationNotAllowed, match="127.0.0.1 is a loopback address"):
        check(allowed, "127.0.0.1", 8081)
    with pytest.raises(DestinationNotAllowed, match="::1 is a loopback address"):
        check(allowed, "::1", 80)


def test_check__no_dns_lookup_when_cidrs_are_for_other_ports_only():
    resolver = FakeResolver()

    with pytest.raises(DestinationNotAllowed, match="example.com is not in HTTP_AGENT_ALLOWLIST"):
        check(policy("10.0.0.0/8:5432", resolver=resolver), "example.com", 443)
    assert resolver.lookups == []


def test_check__no_dns_lookup_when_no_address_could_be_allowed():
    resolver = FakeResolver()

    with pytest.raises(DestinationNotAllowed, match="example.com is not in HTTP_AGENT_ALLOWLIST"):
        check(policy("api.internal", resolver=resolver), "example.com", 443)
    assert resolver.lookups == []


def test_check__ip_literals_are_not_resolved():
    resolver = FakeResolver()

    with pytest.raises(DestinationNotAllowed, match="::1 is a loopback address"):
        check(policy(external=True, resolver=resolver), "[::1]", 80)
    assert resolver.lookups == []


def test_from_settings__reads_settings_at_call_time(settings):
    settings.ALLOW_EXTERNAL_REQUESTS = True
    settings.HTTP_AGENT_ALLOWLIST = ["10.0.0.0/8", "api.internal"]

    built = NetPolicy.from_settings()

    assert built.allow_external is True
    assert built.allowlist.hosts == {"api.internal"}
    settings.HTTP_AGENT_ALLOWLIST = ["nope*"]
    with pytest.raises(ImproperlyConfigured, match="HTTP_AGENT_ALLOWLIST"):
        NetPolicy.from_settings()


def test_resolve__uses_the_system_resolver_without_duplicates():
    assert asyncio.run(resolve("127.0.0.1", 80)) == [ip_address("127.0.0.1")]
    assert ip_address("127.0.0.1") in asyncio.run(resolve("localhost", 80))  # from /etc/hosts, no network needed


def test_resolve__waits_in_a_thread_leaving_the_event_loop_free(monkeypatch):
    system_getaddrinfo = socket.getaddrinfo
    loop_ran = threading.Event()

    def slow_getaddrinfo(*args, **kwargs):
        # Set only by a coroutine on the loop: if the lookup blocked the loop, this would time out.
        assert loop_ran.wait(timeout=5), "the event loop was blocked during the lookup"
        return system_getaddrinfo(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)

    async def scenario():
        lookup = asyncio.create_task(resolve("127.0.0.1", 80))
        await asyncio.sleep(0)  # the lookup starts and waits
        loop_ran.set()
        return await lookup

    assert asyncio.run(scenario()) == [ip_address("127.0.0.1")]


def test_is_localhost_name():
    assert is_localhost_name("localhost") and is_localhost_name("a.LOCALHOST.")
    assert not is_localhost_name("localhost.example.com") and not is_localhost_name("mylocalhost")
