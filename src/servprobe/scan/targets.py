"""nmap's target syntax: what hosts a scan covers, generated lazily.

Accepted, like nmap: IPv4 addresses; CIDR on addresses or hostnames (`10.0.0.0/8`,
`scanme.example/28`); octet ranges and lists (`192.168.0-3.1-254`, `10.0.1,3,5-7.1`, `*`,
open ranges `10.0.0.-5` / `10.0.0.250-`); hostnames (resolved when iterated); IPv6 addresses
and prefixes (with `-6`); `-iL FILE` (`-` = stdin); `--exclude` and `--excludefile`.

Parsing checks syntax up front (so a typo exits 2 before any packet is sent) but never
expands: every spec is a small object that yields addresses on demand, so a /8 costs the
same memory as one address. Name resolution happens while iterating (a target list of a
million names does not wait for a million lookups before the first scan), and a name that
does not resolve is a warning and is skipped, as in nmap.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TextIO


class TargetError(ValueError):
    """A target that cannot be parsed; `text` is the offending target, for the message."""

    def __init__(self, message: str, text: str) -> None:
        super().__init__(f"{message}: {text!r}")
        self.text = text


@dataclass(frozen=True, slots=True)
class HostTarget:
    """One address to scan; `hostname` is the name the user gave, if any."""

    address: str
    hostname: str | None = None
    family: int = socket.AF_INET
    # per-port inputs (servprobe.scan.inputs): the ports listed for this host, which are
    # scanned instead of the -p selection: (("tcp", (22, 80)), ("udp", (53,)))
    ports: tuple[tuple[str, tuple[int, ...]], ...] | None = None


# ---------------------------------------------------------------------------------------------
# spec kinds


@dataclass(frozen=True, slots=True)
class OctetSpec:
    """IPv4 with a set of values per octet: `10.0.0-3.1,5,9-12`, `*`, or a plain address."""

    text: str
    octets: tuple[tuple[tuple[int, int], ...], ...]  # per octet: sorted (lo, hi) ranges

    def count(self) -> int:
        n = 1
        for ranges in self.octets:
            n *= sum(hi - lo + 1 for lo, hi in ranges)
        return n

    def __iter__(self) -> Iterator[HostTarget]:
        values = [
            [v for lo, hi in ranges for v in range(lo, hi + 1)] for ranges in self.octets
        ]
        for a, b, c, d in itertools.product(*values):
            yield HostTarget(f"{a}.{b}.{c}.{d}")

    def contains(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if addr.version != 4:
            return False
        for value, ranges in zip(addr.packed, self.octets, strict=True):
            if not any(lo <= value <= hi for lo, hi in ranges):
                return False
        return True


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """An address with a prefix length (IPv4 CIDR or an IPv6 prefix); nmap scans every
    address in the block, network and broadcast addresses included."""

    text: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    hostname: str | None = None

    def count(self) -> int:
        return self.network.num_addresses

    def __iter__(self) -> Iterator[HostTarget]:
        family = socket.AF_INET if self.network.version == 4 else socket.AF_INET6
        first = int(self.network.network_address)
        cls = ipaddress.IPv4Address if self.network.version == 4 else ipaddress.IPv6Address
        # counting integers keeps this O(1) in memory, whatever the block size
        for i in range(first, first + self.network.num_addresses):
            yield HostTarget(str(cls(i)), self.hostname, family)

    def contains(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return addr.version == self.network.version and addr in self.network


@dataclass(frozen=True, slots=True)
class NameSpec:
    """A hostname, optionally with a prefix length applied to its first address."""

    text: str
    name: str
    prefix: int | None
    family: int
    resolver: Callable[[str, int], list[str]] = field(repr=False, compare=False)
    warn: Callable[[str], None] = field(repr=False, compare=False)

    def count(self) -> int:
        if self.prefix is None:
            return 1
        bits = 32 if self.family == socket.AF_INET else 128
        return 1 << (bits - self.prefix)

    def _addresses(self) -> list[str]:
        try:
            return self.resolver(self.name, self.family)
        except OSError:
            return []

    def __iter__(self) -> Iterator[HostTarget]:
        addrs = self._addresses()
        if not addrs:
            self.warn(f"Failed to resolve \"{self.name}\".")
            return
        # nmap scans the first address a name resolves to (it mentions the others)
        first = addrs[0]
        if self.prefix is None:
            yield HostTarget(first, self.name, self.family)
            return
        net = ipaddress.ip_network(f"{first}/{self.prefix}", strict=False)
        yield from NetworkSpec(self.text, net, None)

    def contains(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        for first in self._addresses()[:1]:
            if self.prefix is None:
                return ipaddress.ip_address(first) == addr
            net = ipaddress.ip_network(f"{first}/{self.prefix}", strict=False)
            return addr.version == net.version and addr in net
        return False


Spec = OctetSpec | NetworkSpec | NameSpec


# ---------------------------------------------------------------------------------------------
# parsing

# RFC 1123 labels, plus `_` which real networks use in names nmap accepts
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?$")
_OCTETISH = re.compile(r"^[0-9*,\-]+$")


def default_resolver(name: str, family: int) -> list[str]:
    """Addresses of `name` in `family`, in resolver order, without duplicates."""
    infos = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]).split("%", 1)[0], None)
    return list(seen)


def _warn_stderr(message: str) -> None:
    print(f"servprobe: warning: {message}", file=sys.stderr)


def _parse_octet(part: str, text: str) -> tuple[tuple[int, int], ...]:
    if part == "":
        raise TargetError("empty octet in IPv4 target", text)
    ranges: list[tuple[int, int]] = []
    for item in part.split(","):
        if item == "":
            raise TargetError("empty item in octet list", text)
        if item == "*":
            ranges.append((0, 255))
            continue
        if "-" in item:
            lo_s, _, hi_s = item.partition("-")
            if "-" in hi_s:
                raise TargetError("bad octet range", text)
            # checked before int(): "*5-7" must be a TargetError, not a ValueError
            if not (lo_s.isdigit() or lo_s == "") or not (hi_s.isdigit() or hi_s == ""):
                raise TargetError("bad octet range", text)
            lo = int(lo_s) if lo_s else 0
            hi = int(hi_s) if hi_s else 255
        else:
            if not item.isdigit():
                raise TargetError("bad octet", text)
            lo = hi = int(item)
        if lo > 255 or hi > 255:
            raise TargetError("octet out of range 0-255", text)
        if lo > hi:
            raise TargetError("octet range goes backwards", text)
        ranges.append((lo, hi))
    # nmap keeps a bitmap per octet: "1,1-3" is 1, 2, 3 once each
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return tuple(merged)


def _parse_prefix(text: str, prefix_s: str, bits: int) -> int:
    if not (prefix_s.isascii() and prefix_s.isdigit()):  # "²" is a digit to str.isdigit
        raise TargetError("bad prefix length", text)
    prefix = int(prefix_s)
    if prefix > bits:
        raise TargetError(f"prefix length must be 0-{bits}", text)
    return prefix


def parse_target(
    text: str,
    *,
    ipv6: bool = False,
    resolver: Callable[[str, int], list[str]] = default_resolver,
    warn: Callable[[str], None] = _warn_stderr,
) -> Spec:
    """Parse one target expression (no whitespace inside) into a lazily expanded spec."""
    if not text or any(c.isspace() for c in text):
        raise TargetError("empty or malformed target", text)
    host, slash, prefix_s = text.partition("/")
    if slash and not prefix_s:
        raise TargetError("missing prefix length after '/'", text)
    family = socket.AF_INET6 if ipv6 else socket.AF_INET

    if ":" in host:
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            addr = ipaddress.IPv6Address(host)
        except ValueError:
            raise TargetError("not a valid IPv6 address", text) from None
        if not ipv6:
            raise TargetError("IPv6 target needs -6", text)
        prefix = _parse_prefix(text, prefix_s, 128) if slash else 128
        return NetworkSpec(text, ipaddress.IPv6Network(f"{addr}/{prefix}", strict=False))

    if _OCTETISH.match(host.replace(".", "")) and "." in host:
        parts = host.split(".")
        if len(parts) != 4:
            raise TargetError("IPv4 target needs 4 octets", text)
        if ipv6:
            raise TargetError("IPv4 target in an IPv6 scan (-6)", text)
        octets = tuple(_parse_octet(p, text) for p in parts)
        if slash:
            if any(len(r) != 1 or r[0][0] != r[0][1] for r in octets):
                raise TargetError("CIDR prefix on an octet range", text)
            prefix = _parse_prefix(text, prefix_s, 32)
            # from the parsed octets: ipaddress refuses "07", which the octet syntax accepts
            base = ".".join(str(r[0][0]) for r in octets)
            return NetworkSpec(text, ipaddress.IPv4Network(f"{base}/{prefix}", strict=False))
        return OctetSpec(text, octets)

    if host.isdigit():
        raise TargetError("not an IPv4 address or hostname", text)
    if not _HOSTNAME.match(host) or host.replace(".", "").replace("-", "").isdigit():
        raise TargetError("not a valid hostname or address", text)
    prefix = _parse_prefix(text, prefix_s, 128 if ipv6 else 32) if slash else None
    return NameSpec(text, host.rstrip("."), prefix, family, resolver, warn)


def split_targets(text: str) -> list[str]:
    """Target expressions in a line of text: whitespace-separated, `#` starts a comment."""
    return text.split("#", 1)[0].split()


def read_target_file(path: str, stdin: TextIO | None = None) -> Iterator[str]:
    """Target expressions from an -iL file, streamed; `-` reads standard input."""
    if path == "-":
        fh = stdin or sys.stdin
        for line in fh:
            yield from split_targets(line)
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            yield from split_targets(line)


# ---------------------------------------------------------------------------------------------
# the whole target list


class Exclusions:
    """--exclude / --excludefile: address checks without expanding anything."""

    def __init__(self, specs: Iterable[Spec] = ()) -> None:
        self.specs = list(specs)

    def __bool__(self) -> bool:
        return bool(self.specs)

    def excluded(self, address: str) -> bool:
        if not self.specs:
            return False
        addr = ipaddress.ip_address(address)
        return any(spec.contains(addr) for spec in self.specs)


@dataclass
class TargetList:
    """Every host a scan covers, in the order given; iterate to generate them lazily."""

    specs: list[Spec] = field(default_factory=list)
    exclusions: Exclusions = field(default_factory=Exclusions)
    # -iL sources are re-read when iterated rather than held in memory
    files: list[tuple[str, Callable[[str], Spec]]] = field(default_factory=list)

    def count(self) -> int:
        """Addresses before exclusions (an upper bound, for progress)."""
        total = sum(s.count() for s in self.specs)
        for path, parse in self.files:
            if path != "-":
                total += sum(parse(t).count() for t in read_target_file(path))
        return total

    def __iter__(self) -> Iterator[HostTarget]:
        for spec in self._all_specs():
            for host in spec:
                if self.exclusions.excluded(host.address):
                    continue
                yield host

    def _all_specs(self) -> Iterator[Spec]:
        yield from self.specs
        for path, parse in self.files:
            for text in read_target_file(path):
                yield parse(text)


def build_target_list(
    targets: Iterable[str],
    *,
    input_file: str | None = None,
    exclude: Iterable[str] = (),
    exclude_file: str | None = None,
    ipv6: bool = False,
    resolver: Callable[[str, int], list[str]] = default_resolver,
    warn: Callable[[str], None] = _warn_stderr,
    stdin: TextIO | None = None,
) -> TargetList:
    """Parse every target and exclusion now (syntax errors raise TargetError before any
    scanning); expansion and name resolution wait until the list is iterated."""

    def parse(text: str) -> Spec:
        return parse_target(text, ipv6=ipv6, resolver=resolver, warn=warn)

    specs = [parse(t) for t in targets]
    tl = TargetList(specs=specs)
    if input_file is not None:
        if input_file == "-":
            # stdin cannot be read twice: parse it now (specs stay unexpanded)
            tl.specs.extend(parse(t) for t in read_target_file("-", stdin))
        else:
            try:
                # a syntax pass that holds nothing but the current line
                for t in read_target_file(input_file):
                    parse(t)
            except OSError as exc:
                raise TargetError(f"cannot read target file ({exc.strerror})", input_file) from None
            tl.files.append((input_file, parse))
    ex_texts: list[str] = []
    for item in exclude:
        ex_texts.extend(x for x in item.split(",") if x)
    if exclude_file is not None:
        try:
            ex_texts.extend(read_target_file(exclude_file, stdin))
        except OSError as exc:
            raise TargetError(f"cannot read exclude file ({exc.strerror})", exclude_file) from None
    # exclusions may be of either family, whatever -6 says
    ex_specs: list[Spec] = []
    for t in ex_texts:
        try:
            ex_specs.append(parse_target(t, ipv6=":" in t, resolver=resolver, warn=warn))
        except TargetError as exc:
            raise TargetError(f"bad --exclude entry ({exc.args[0].split(':')[0]})", t) from None
    tl.exclusions = Exclusions(ex_specs)
    return tl


def reverse_dns(address: str) -> str | None:
    """The PTR name of an address, or None (blocking: run it in an executor)."""
    try:
        name = socket.gethostbyaddr(address)[0]
    except (OSError, UnicodeError):
        return None
    return name or None
