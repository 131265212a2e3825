"""Which network addresses an image URL may reach (SSRF protection).

A host is resolved here, every address it resolves to is checked, and the checked addresses are what the
fetcher connects to (:mod:`moesaic.inputs.fetch` pins them), so DNS rebinding cannot swap in another one.
Refused by default: loopback, private (RFC 1918, ULA ``fc00::/7``), shared/CGNAT ``100.64.0.0/10``,
link-local, cloud metadata endpoints, unspecified, multicast, reserved and anything else not globally
routable — also when wrapped in IPv6 (``::ffff:a.b.c.d``, ``::a.b.c.d``, 6to4, NAT64).
"""

from __future__ import annotations

import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from moesaic.errors import FetchError, URLPolicyError
from moesaic.inputs.policy import ImagePolicy

__all__ = ["IPAddress", "refusal_reason", "is_allowlisted", "resolve_host", "checked_addresses", "host_allowed"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IPv6
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_resolver_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="moesaic-dns")


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or int(ip) >> 32 == 0:  # NAT64 prefix, or deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address (``None`` when it is)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        inner = _embedded_v4(ip)
        if ip.is_unspecified:
            return "the unspecified address"
        if ip.is_loopback:
            return "a loopback address"
        if inner is not None:
            reason = refusal_reason(inner)
            return f"an IPv6 address wrapping {inner}, {reason}" if reason else None
    if ip in _METADATA:
        return "a cloud metadata endpoint"
    checks = (
        (ip.is_unspecified, "the unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT, "a shared (CGNAT) address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private, "a private or special-purpose address"),
        (not ip.is_global, "not a globally routable address"),
    )
    return next((reason for hit, reason in checks if hit), None)


def is_allowlisted(host: str, ip: IPAddress, policy: ImagePolicy) -> bool:
    """True when the policy names this host, or an address/CIDR that contains ``ip``."""
    entries = policy.allow_private_hosts
    if not entries:
        return False
    if host.lower().rstrip(".") in entries:
        return True
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    for entry in entries:
        try:
            network = ipaddress.ip_network(entry.strip("[]"), strict=False)
        except ValueError:
            continue  # a host name, compared above
        if any(c.version == network.version and c in network for c in candidates):
            return True
    return False


def host_allowed(host: str, policy: ImagePolicy) -> bool:
    """``allow_hosts``: empty means any host; ``"a.com"`` exact, ``".a.com"``/``"*.a.com"`` also sub-domains."""
    if not policy.allow_hosts:
        return True
    host = host.lower().rstrip(".")
    for entry in policy.allow_hosts:
        if entry.startswith(("*.", ".")):
            suffix = entry.lstrip("*")
            if host.endswith(suffix) or host == suffix[1:]:
                return True
        elif host == entry:
            return True
    return False


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def resolve_host(host: str, port: int, timeout_s: float) -> list[IPAddress]:
    """All addresses ``host`` resolves to (an IP literal resolves to itself), in resolver order."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    future = _resolver_pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout_s)
    except FutureTimeout:
        raise FetchError(
            f"resolving {host} took longer than {timeout_s:g}s", "check the host name or try again"
        ) from None
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise FetchError(f"cannot resolve host {host}: {exc}", "check the host name in the URL") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise FetchError(f"host {host} resolved to no address", "check the host name in the URL")
    return addresses


def checked_addresses(host: str, port: int, policy: ImagePolicy, timeout_s: float) -> list[IPAddress]:
    """Resolve ``host`` and refuse it if *any* address is not public and not allow-listed."""
    if not host_allowed(host, policy):
        raise URLPolicyError(
            f"host {host} is not in the allowed hosts ({', '.join(sorted(policy.allow_hosts))})",
            "use an image from an allowed host, or send the image as base64 / a data URL",
        )
    addresses = resolve_host(host, port, timeout_s)
    for ip in addresses:
        reason = refusal_reason(ip)
        if reason and not is_allowlisted(host, ip, policy):
            via = "" if _literal(host) is not None else f" (resolved from {host})"
            raise URLPolicyError(
                f"refusing to fetch from {ip}{via}: it is {reason}",
                "use a public http(s) URL or send the image as base64 / a data URL; to allow this host on "
                f"purpose add it to allow_private_hosts (e.g. {host!r} or {str(ip)!r})",
            )
    return addresses
