"""Refuses webhook URLs that would have the service call into its own network (SSRF).

The check is on the addresses a host resolves to, not on its name: names are free to
point anywhere. It runs at submit and again before every delivery attempt, and the
sender then connects to the very address it checked, so a DNS answer that changes in
between (rebinding) cannot slip a private address past it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# AWS, GCP and Azure answer instance credentials here (AWS also on IPv6).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
CGNAT = ipaddress.ip_network("100.64.0.0/10")
# Well-known NAT64 prefix: the last 32 bits are an IPv4 address a gateway would reach.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
SCHEMES = frozenset({"http", "https"})

Resolver = Callable[[str, int], Sequence[str]]


class WebhookRefused(Exception):
    """The URL may not be called; `reason` is a short code, the message says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Allowlist:
    """Hosts and networks an operator lets webhooks reach despite the rules below."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> Allowlist:
        """From a comma-separated list of host names, addresses and CIDRs."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(_normal_host(item))
        return cls(frozenset(hosts), tuple(networks))

    def permits_host(self, host: str) -> bool:
        return _normal_host(host) in self.hosts

    def permits_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def refusal(address: IPAddress) -> str | None:
    """Why a webhook may not be sent to this address, or None if it may."""
    for embedded in _embedded_ipv4(address):
        reason = refusal(embedded)
        if reason:
            return reason
    checks: tuple[tuple[str, bool], ...] = (
        ("unspecified", address.is_unspecified),
        ("cloud_metadata", address in METADATA_ADDRESSES),
        ("loopback", address.is_loopback),
        ("link_local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("cgnat", address.version == 4 and address in CGNAT),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        # Whatever else IANA lists as not globally reachable (e.g. 192.0.0.0/24).
        ("not_global", not address.is_global),
    )
    return next((reason for reason, hit in checks if hit), None)


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 one stands for (mapped, 6to4, NAT64), which reach them."""
    if address.version == 4:
        return []
    assert isinstance(address, ipaddress.IPv6Address)
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address in NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect, and the name to present (Host, TLS SNI)."""

    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def system_resolve(host: str, port: int) -> list[str]:
    """The host's addresses, in the resolver's order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_url(url: str, allow: Allowlist, resolve: Resolver = system_resolve) -> Target:
    """Raise WebhookRefused unless every address of the URL's host may be called.

    Raises OSError when the host does not resolve (a transient failure at delivery).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise WebhookRefused("scheme", f"only http and https URLs are allowed, not {scheme!r}")
    host = _normal_host(parts.hostname or "")
    if not host:
        raise WebhookRefused("no_host", "the URL has no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise WebhookRefused("bad_port", "the URL's port is not a valid port") from exc
    addresses = _addresses(host, port, resolve)
    if not allow.permits_host(host):
        for address in addresses:
            reason = None if allow.permits_address(address) else refusal(address)
            if reason:
                raise WebhookRefused(
                    reason, f"{host} resolves to {address}, a {reason.replace('_', ' ')} address"
                )
    return Target(scheme, host, port, tuple(str(a) for a in addresses))


def _addresses(host: str, port: int, resolve: Resolver) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    resolved = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolve(host, port)]
    if not resolved:
        raise OSError(f"{host} has no addresses")
    return resolved


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()
