"""
Network namespaces joined by veth pairs, for tests that cut nodes off from
each other while they keep running.

A L{Network} makes namespaces (C{ip netns add}) and veth pairs between
them, or between one of them and the test's own namespace, each pair with
a /30 of one private C{10.231.N.0/24} chosen per run among the ranges no
interface of the machine uses.  Nothing gets a default route: traffic can
only go to loopback and to the other end of a pair, so the test's packets
never leave the namespaces it made.  L{Link.cut} drops every packet
between the two ends without telling either (the link stays up, the way a
switch or a cable fails); L{Link.heal} undoes it.  L{Network.close} kills
what still runs in the namespaces and deletes them and their links, and
is registered as a clean-up when the network is made, so it runs even
when the test fails.

Making and deleting namespaces are blocking calls of a few milliseconds,
made from test set-up and clean-up.  Everything needs root and the C{ip}
command of iproute2; L{skipReason} says when they are missing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import uuid
from typing import Any, Optional

#: The private range the networks are made in: 10.231.N.0/24.
PREFIX = "10.231"
#: The ip command, by its full path (a process is started under it).
IP = shutil.which("ip") or "ip"
#: A link-layer address no interface has: packets sent to it are dropped
#: by the receiving end.
NOWHERE = "02:00:00:00:00:00"


def ip(*args: str, check: bool = True) -> str:
    """
    Run C{ip ARGS} and return its output.

    @raise RuntimeError: it failed and C{check} is set.
    """
    done = subprocess.run(
        [IP, *args], capture_output=True, text=True, timeout=30, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


_skip: Optional[list] = None


def skipReason() -> Optional[str]:
    """
    Why namespaces cannot be made here, or L{None}; for C{skip} attributes.
    Tried once per run by making and deleting a namespace.
    """
    global _skip
    if _skip is None:
        _skip = [_whyNot()]
    return _skip[0]


def _whyNot() -> Optional[str]:
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    name = f"mqprobe{uuid.uuid4().hex[:8]}"
    try:
        ip("netns", "add", name)
    except RuntimeError as e:
        return f"network namespaces cannot be made here: {e}"
    ip("netns", "del", name, check=False)
    return None


def freeRange() -> int:
    """
    An N such that no interface of this namespace has an address in
    C{10.231.N.0/24}.
    """
    used = set(re.findall(rf"inet {re.escape(PREFIX)}\.(\d+)\.", ip("-4", "addr")))
    for _ in range(1000):
        n = uuid.uuid4().int % 256
        if str(n) not in used:
            return n
    raise RuntimeError(f"no free {PREFIX}.N.0/24 range")


class Link:
    """
    A veth pair: one end in namespace C{left} (L{None}: the test's own),
    the other in C{right}, with addresses C{leftAddress}, C{rightAddress}.
    """

    def __init__(
        self,
        left: Optional[str],
        right: str,
        names: tuple,
        addresses: tuple,
    ) -> None:
        self.left, self.right = left, right
        self.leftName, self.rightName = names
        self.leftAddress, self.rightAddress = addresses
        self.isCut = False

    def _ends(self) -> list:
        return [
            (self.left, self.leftName, self.rightAddress),
            (self.right, self.rightName, self.leftAddress),
        ]

    def cut(self) -> None:
        """
        Drop every packet between the ends from now on: each end sends to
        a link-layer address the other does not answer to, so connections
        and SYNs go unanswered rather than refused.
        """
        for namespace, device, peer in self._ends():
            ip(
                *_inside(namespace),
                "neigh",
                "replace",
                peer,
                "lladdr",
                NOWHERE,
                "nud",
                "permanent",
                "dev",
                device,
            )
        self.isCut = True

    def heal(self) -> None:
        """
        Let packets through again (the ends find each other by ARP).
        """
        for namespace, device, peer in self._ends():
            ip(*_inside(namespace), "neigh", "del", peer, "dev", device, check=False)
        self.isCut = False


def _inside(namespace: Optional[str]) -> tuple:
    return () if namespace is None else ("-n", namespace)


class Network:
    """
    The namespaces and links of one test; names are unique per run.

    @param testCase: the test; L{close} is added to its clean-ups.
    """

    def __init__(self, testCase: Any) -> None:
        self._tag = uuid.uuid4().hex[:6]
        self._range = freeRange()
        self.namespaces: list = []
        self.links: list = []
        testCase.addCleanup(self.close)

    def namespace(self, label: str) -> str:
        """
        Make a namespace with loopback up and return its name.
        """
        name = f"mq{self._tag}{label}"
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def link(self, left: Optional[str], right: str) -> Link:
        """
        Join C{left} (L{None}: the test's own namespace) and C{right} by a
        veth pair, each end with an address of its own /30.
        """
        index = len(self.links)
        if index >= 64:
            raise RuntimeError("at most 64 links per network")
        names = (f"mq{self._tag}{index}l", f"mq{self._tag}{index}r")
        base = f"{PREFIX}.{self._range}."
        addresses = (base + str(4 * index + 1), base + str(4 * index + 2))
        ip("link", "add", names[0], "type", "veth", "peer", "name", names[1])
        link = Link(left, right, names, addresses)
        self.links.append(link)
        for namespace, device, address in (
            (left, names[0], addresses[0]),
            (right, names[1], addresses[1]),
        ):
            if namespace is not None:
                ip("link", "set", device, "netns", namespace)
            inside = _inside(namespace)
            ip(*inside, "addr", "add", f"{address}/30", "dev", device)
            ip(*inside, "link", "set", device, "up")
        return link

    def command(self, namespace: str, argv: list) -> list:
        """
        C{argv} run inside C{namespace} (C{ip netns exec} replaces itself
        with the command, so its process id is the command's).
        """
        return [IP, "netns", "exec", namespace, *argv]

    def close(self) -> None:
        """
        Kill what still runs in the namespaces, then delete the links and
        the namespaces; never fails.
        """
        for namespace in self.namespaces:
            for pid in ip("netns", "pids", namespace, check=False).split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
        for link in self.links:
            ip(*_inside(link.left), "link", "del", link.leftName, check=False)
        for namespace in self.namespaces:
            ip("netns", "del", namespace, check=False)
        self.links, self.namespaces = [], []
