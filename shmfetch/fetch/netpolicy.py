"""SSRF policy: which IP addresses a fetch may connect to.

Decision for one address, first match wins:

1. ``deny_networks`` (explicit deny) -> denied. Explicit deny beats explicit allow, so an operator can
   punch a hole into an allowed range (allow 10.0.0.0/8, deny 10.0.0.1/32).
2. ``allow_networks`` (explicit allow) -> allowed, even if the default policy would deny it.
3. Default: denied unless the address is globally routable (see ``DEFAULT_DENY`` and ``_default_denied``).

IPv6 addresses that embed an IPv4 address (IPv4-mapped ``::ffff:0:0/96``, IPv4-compatible ``::/96``,
NAT64 ``64:ff9b::/96`` and 6to4 ``2002::/16``) are judged by the embedded IPv4 address as well: each of
the three steps looks at both forms, so ``::ffff:10.0.0.1`` is denied exactly like ``10.0.0.1`` and
``::ffff:127.0.0.1`` is allowed by an allow entry of ``127.0.0.1/32``. The prefixes themselves are not
denied (DNS64 networks give every host a ``64:ff9b::`` address), only what they carry.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Listed explicitly rather than trusting only ``is_global``: its exact coverage has changed between
# Python releases (multicast, for one, counts as "global" there).
DEFAULT_DENY: tuple[str, ...] = (
    "0.0.0.0/8",  # "this network", unspecified
    "10.0.0.0/8",  # RFC 1918
    "100.64.0.0/10",  # CGNAT shared space
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local, incl. cloud metadata 169.254.169.254
    "172.16.0.0/12",  # RFC 1918
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # TEST-NET-1
    "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
    "192.168.0.0/16",  # RFC 1918
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # TEST-NET-2
    "203.0.113.0/24",  # TEST-NET-3
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, incl. broadcast 255.255.255.255
    "::/128",  # unspecified
    "::1/128",  # loopback
    "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): translates to private space
    "100::/64",  # discard-only
    "2001::/23",  # IETF protocol assignments, incl. Teredo 2001::/32
    "2001:db8::/32",  # documentation
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "fec0::/10",  # site-local (deprecated)
    "ff00::/8",  # multicast
)
_DEFAULT_DENY_NETS: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in DEFAULT_DENY)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPAT = ipaddress.ip_network("::/96")


class BlockedAddress(Exception):
    """The host resolved to an address the policy denies; the message names the address."""


class DnsError(Exception):
    """The host name could not be resolved."""


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4), or None."""
    if ip.version == 4:
        return None
    assert isinstance(ip, ipaddress.IPv6Address)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _COMPAT and int(ip) > 1):  # ::, ::1 are not compat addresses
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _forms(ip: IPAddress) -> list[IPAddress]:
    v4 = embedded_ipv4(ip)
    return [ip] if v4 is None else [ip, v4]


def _default_denied(ip: IPAddress) -> bool:
    v4 = embedded_ipv4(ip)
    if v4 is not None:
        return _default_denied(v4)
    if any(ip in net for net in _DEFAULT_DENY_NETS if net.version == ip.version):
        return True
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_link_local


def _parse_nets(nets: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in nets)


def _in_any(ip: IPAddress, nets: tuple[IPNetwork, ...]) -> IPNetwork | None:
    for form in _forms(ip):
        for net in nets:
            if net.version == form.version and form in net:
                return net
    return None


class NetPolicy:
    """Decides whether an address may be connected to. Immutable, so it is safe to share between threads."""

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()):
        self.allow = _parse_nets(allow)
        self.deny = _parse_nets(deny)

    def check(self, ip: str | IPAddress) -> str | None:
        """None if ``ip`` may be connected to, otherwise the reason it is denied."""
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        if addr.version == 6 and addr.scope_id:  # type: ignore[union-attr]
            addr = ipaddress.IPv6Address(str(addr).split("%", 1)[0])
        net = _in_any(addr, self.deny)
        if net is not None:
            return f"address {addr} is in deny_networks {net}"
        if _in_any(addr, self.allow) is not None:
            return None
        if any(_default_denied(f) for f in _forms(addr)):
            return f"address {addr} is not globally routable (denied by default)"
        return None

    def allowed(self, ip: str | IPAddress) -> bool:
        return self.check(ip) is None


def _dns_reason(e: BaseException) -> str:
    """``name or service not known``: the resolver's words without ``[Errno -2]``."""
    if isinstance(e, socket.gaierror) and e.strerror:
        return e.strerror[:1].lower() + e.strerror[1:]
    return "not a valid host name" if isinstance(e, UnicodeError) else str(e)


def resolve(host: str, port: int, timeout: float) -> list[str]:
    """All addresses of ``host`` (IPv4 and IPv6), in the resolver's order, within ``timeout`` seconds.

    getaddrinfo cannot be interrupted, so it runs in a daemon thread that we stop waiting for at the
    deadline; a hung resolver then costs a parked thread, not a stuck fetch.
    """
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    box: list = []
    done = threading.Event()

    def run() -> None:
        try:
            box.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as e:  # handed to the waiting thread
            box.append(e)
        done.set()

    threading.Thread(target=run, name="shmfetch-dns", daemon=True).start()
    if not done.wait(max(timeout, 0.0)):
        raise TimeoutError(f"DNS lookup of {host} did not finish in time")
    res = box[0]
    if isinstance(res, BaseException):
        if isinstance(res, (socket.gaierror, UnicodeError)):
            raise DnsError(f"cannot resolve {host}: {_dns_reason(res)}")
        raise res
    out: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in res:
        addr = sockaddr[0].split("%", 1)[0]
        if addr not in out:
            out.append(addr)
    if not out:
        raise DnsError(f"cannot resolve {host}: no addresses")
    return out


def vet(policy: NetPolicy, addrs: list[str]) -> None:
    """Raise BlockedAddress unless every address is allowed: one bad answer taints the name."""
    for a in addrs:
        why = policy.check(a)
        if why is not None:
            raise BlockedAddress(why)
