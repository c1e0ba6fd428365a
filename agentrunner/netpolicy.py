"""Outbound request policy (SSRF guard): which destinations agents may connect to.

Rules, in order:

1. A host name on the allowlist (exact, or `*.suffix` for any name below the suffix) is always allowed,
   whatever it resolves to. An entry may name a port (`api.internal:8443`, `10.0.0.0/8:5432`, `[::1]:8080`):
   it then allows that port only; without one, every port.
2. `localhost` and `*.localhost` are loopback names (RFC 6761), whatever a resolver says: unless allowlisted
   by name, they are refused by name, without a DNS query.
3. Otherwise every address the name resolves to must pass: an address inside an allowlisted CIDR is allowed;
   an address that is not public (loopback, private, link-local, metadata, multicast, CGNAT, reserved, their
   IPv4-in-IPv6 forms, ...) is refused; a public address is allowed only when ALLOW_EXTERNAL_REQUESTS is on.
   When no address could pass (external requests off, no CIDR for the port), the name is refused without a
   DNS query.

A malformed allowlist entry is refused at start-up by a system check (`agentrunner.checks`); `from_settings`
raises ImproperlyConfigured as a backstop.

Checking is not enough on its own: the caller must connect to the very address it checked, or a name can
resolve to a public address for the check and to 127.0.0.1 for the connection (DNS rebinding). `NetPolicy.acheck`
returns the checked addresses for that purpose; see `PinnedTransport` in `agentrunner.agents.builtin.http_request`.

`acheck` is a coroutine for async agents: the name is resolved by the event loop's `getaddrinfo` (in its
thread pool), never by a blocking call on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

_CARRIER_GRADE_NAT = ip_network("100.64.0.0/10")
_PRIVATE = (ip_network("10.0.0.0/8"), ip_network("172.16.0.0/12"), ip_network("192.168.0.0/16"), ip_network("fc00::/7"))
_NAT64 = ip_network("64:ff9b::/96")
_METADATA = (ip_address("169.254.169.254"), ip_address("fd00:ec2::254"))
_TEMPORARY_DNS_ERRORS = frozenset({socket.EAI_AGAIN})
LOCALHOST_NAMES = ("localhost",)


class DestinationNotAllowed(Exception):
    """The outbound policy refuses this destination."""

    def __init__(self, detail: str):
        self.detail = detail
        super().__init__(f"destination not allowed: {detail}")


class ResolutionFailed(Exception):
    """The host name does not resolve."""

    def __init__(self, host: str, *, temporary: bool):
        self.host = host
        self.temporary = temporary
        super().__init__(f"cannot resolve {host}" + (" (temporary DNS failure)" if temporary else ""))


def normalize_host(host: str) -> str:
    """Return the host as compared by the policy: lowercase, no brackets, no trailing dot, IDNA (ASCII) form."""
    name = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    if not name.isascii():
        # Left as is when IDNA refuses it: it then resolves to nothing and matches no allowlist entry.
        with contextlib.suppress(UnicodeError):
            name = name.encode("idna").decode("ascii")
    return name


def ip_literal(host: str) -> IPAddress | None:
    """Return the address if the host is an IP literal (dotted IPv4 or IPv6), else None."""
    try:
        return ip_address(normalize_host(host))
    except ValueError:
        return None


def is_localhost_name(host: str) -> bool:
    name = normalize_host(host)
    return name in LOCALHOST_NAMES or name.endswith(".localhost")


def embedded_ipv4(address: IPv6Address) -> tuple[str, IPv4Address] | None:
    """Return (form, IPv4 address) for IPv6 addresses that reach an IPv4 address, else None."""
    if address.ipv4_mapped is not None:
        return "an IPv4-mapped form", address.ipv4_mapped
    if address in _NAT64:
        return "a NAT64 form", IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return "a 6to4 form", address.sixtofour
    if int(address) >> 32 == 0 and int(address) > 1:  # ::a.b.c.d, deprecated but still routed by some stacks
        return "an IPv4-compatible form", IPv4Address(int(address))
    return None


def blocked_reason(address: IPAddress) -> str | None:
    """Return why a non-public address is refused ("a private address"), or None for a public address."""
    if isinstance(address, IPv6Address):
        embedded = embedded_ipv4(address)
        if embedded is not None:
            form, ipv4 = embedded
            reason = blocked_reason(ipv4)
            return f"{form} of {ipv4}, {reason}" if reason else None
        if address.is_site_local:
            return "a site-local address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address in _METADATA:
        return "a link-local address (the cloud metadata service)"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address in _CARRIER_GRADE_NAT:
        return "a carrier-grade NAT address"
    if any(address in network for network in _PRIVATE if network.version == address.version):
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:  # documentation, benchmarking, 0.0.0.0/8, 192.0.0.0/24, ...
        return "a special-purpose address"
    return None


@dataclass(frozen=True)
class Allowlist:
    """Host names (exact or `*.suffix`) and networks that are always allowed, on every port or on one.

    An entry without a port allows every port; `entry:port` (`[IPv6]:port` for an IPv6 address or network)
    allows that port only. The port compared is the one connected to: 443 or 80 when a URL names none.
    """

    hosts: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # ".example.com" for "*.example.com"
    networks: tuple[IPNetwork, ...] = ()
    ports: Mapping[int, Allowlist] = field(default_factory=dict)  # the entries written with that port

    @classmethod
    def parse(cls, entries: Iterable[str] | str) -> Allowlist:
        """Parse "host", "*.suffix", "10.0.0.0/8", "127.0.0.1" or "::1" entries, each optionally with ":port"
        ("[::1]:8080" for IPv6); raise ValueError naming the first entry that is none of them."""
        if isinstance(entries, str):
            entries = entries.split(",")
        rules: dict[int | None, tuple[set[str], list[str], list[IPNetwork]]] = {None: (set(), [], [])}
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            target, port = _split_port(entry)
            hosts, suffixes, networks = rules.setdefault(port, (set(), [], []))
            try:
                networks.append(ip_network(target, strict=False))
                continue
            except ValueError:
                pass
            name = normalize_host(target)
            if name.startswith("*.") and "*" not in name[2:] and len(name) > 2:
                suffixes.append(name[1:])
            elif name and "*" not in name and "/" not in name and ":" not in name and "[" not in name:
                hosts.add(name)
            else:
                raise ValueError(f"allowlist entry {entry!r} is not a host name, *.suffix, IP address or CIDR")
        built = {
            port: cls(hosts=frozenset(hosts), suffixes=tuple(suffixes), networks=tuple(networks))
            for port, (hosts, suffixes, networks) in rules.items()
        }
        any_port = built.pop(None)
        return cls(hosts=any_port.hosts, suffixes=any_port.suffixes, networks=any_port.networks, ports=built)

    def allows_host(self, host: str, port: int | None = None) -> bool:
        """True if an entry for every port, or one for `port`, names the host."""
        name = normalize_host(host)
        if name in self.hosts or any(name.endswith(suffix) for suffix in self.suffixes):
            return True
        on_port = self.ports.get(port)
        return on_port is not None and on_port.allows_host(name)

    def allows_address(self, address: IPAddress, port: int | None = None) -> bool:
        """True if an entry for every port, or one for `port`, covers the address."""
        candidates = [address]
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)  # the same destination as the IPv4 address
        if any(a in network for a in candidates for network in self.networks if network.version == a.version):
            return True
        on_port = self.ports.get(port)
        return on_port is not None and on_port.allows_address(address)

    def has_networks(self, port: int | None = None) -> bool:
        """True if some address could be allowed on `port` (by an entry for every port or for that one)."""
        on_port = self.ports.get(port)
        return bool(self.networks) or (on_port is not None and bool(on_port.networks))


def _split_port(entry: str) -> tuple[str, int | None]:
    """Split "host:port" or "[IPv6]:port" into the host (or address, or network) and the port, if any."""
    if "://" in entry:
        raise ValueError(f"allowlist entry {entry!r} is a URL: write its host (and :port) only")
    if entry.startswith("["):
        inside, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"allowlist entry {entry!r} is not of the form [IPv6] or [IPv6]:port")
        return inside, _port(rest[1:], entry) if rest else None
    if entry.count(":") != 1:  # no port, or a bare IPv6 address or network (which takes a port in brackets only)
        return entry, None
    target, _, port = entry.partition(":")
    return target, _port(port, entry)


def _port(text: str, entry: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise ValueError(f"allowlist entry {entry!r} has an invalid port {text!r}: use 1 to 65535")
    return int(text)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Return every address `host` resolves to for TCP, in the resolver's order, without duplicates."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(normalize_host(host), port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ResolutionFailed(host, temporary=exc.errno in _TEMPORARY_DNS_ERRORS) from None
    except UnicodeError:  # a label too long for IDNA
        raise ResolutionFailed(host, temporary=False) from None
    addresses: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ip_address(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ResolutionFailed(host, temporary=False)
    return addresses


@dataclass(frozen=True)
class NetPolicy:
    """Decide whether a destination may be connected to; build with `from_settings()` at call time."""

    allow_external: bool = False
    allowlist: Allowlist = field(default_factory=Allowlist)
    resolver: Callable[[str, int], Awaitable[list[IPAddress]]] = resolve

    @classmethod
    def from_settings(cls) -> NetPolicy:
        # The system check refuses a malformed entry at start-up; this is the backstop (settings changed since).
        try:
            allowlist = Allowlist.parse(settings.HTTP_AGENT_ALLOWLIST)
        except ValueError as exc:
            raise ImproperlyConfigured(f"HTTP_AGENT_ALLOWLIST: {exc}") from None
        return cls(allow_external=bool(settings.ALLOW_EXTERNAL_REQUESTS), allowlist=allowlist)

    def check_address(self, address: IPAddress, *, host: str | None = None, port: int | None = None) -> None:
        """Raise DestinationNotAllowed unless the policy allows connecting to `address` (as `host`) on `port`."""
        if self.allowlist.allows_address(address, port):
            return
        subject = f"{address} is" if host is None or ip_literal(host) == address else f"{host} resolves to {address},"
        reason = blocked_reason(address)
        if reason is not None:
            raise DestinationNotAllowed(f"{subject} {reason}; add it to HTTP_AGENT_ALLOWLIST to allow it")
        if not self.allow_external:
            raise DestinationNotAllowed(
                f"{subject} an external address and ALLOW_EXTERNAL_REQUESTS is off; "
                "add it to HTTP_AGENT_ALLOWLIST to allow it"
            )

    async def acheck(self, host: str, port: int) -> list[IPAddress]:
        """Resolve `host` and check every address; return them (connect only to these) or raise.

        Raises DestinationNotAllowed, or ResolutionFailed when the name does not resolve.
        """
        name = normalize_host(host)
        if self.allowlist.allows_host(name, port):
            return await self.resolver(name, port)
        if is_localhost_name(name):  # loopback by definition, whatever a resolver would answer: ask none
            raise DestinationNotAllowed(f"{name} is a loopback name; add it to HTTP_AGENT_ALLOWLIST to allow it")
        literal = ip_literal(name)
        if literal is None and not self.allow_external and not self.allowlist.has_networks(port):
            # Nothing a name could resolve to is allowed: refuse without a DNS query (queries can leak data too).
            raise DestinationNotAllowed(
                f"{name} is not in HTTP_AGENT_ALLOWLIST and ALLOW_EXTERNAL_REQUESTS is off; "
                "add it to HTTP_AGENT_ALLOWLIST to allow it"
            )
        addresses = [literal] if literal is not None else await self.resolver(name, port)
        for address in addresses:
            self.check_address(address, host=name, port=port)
        return addresses
