"""Real network faults between real nodes: one Linux network namespace per node.

Layout (all names carry a random tag, so several test runs never collide)::

    root namespace: bridge rk<tag>br  10.231.Y.1/24   <- clients run here and reach every node
       |-- veth rk<tag>h1 ==== rk<tag>p1 (namespace rk<tag>n1)  10.231.Y.11
       |-- veth rk<tag>h2 ==== rk<tag>p2 (namespace rk<tag>n2)  10.231.Y.12
       ...

Faults are iptables rules in a chain ``RAFTKV`` inside each node's namespace (hooked from INPUT and OUTPUT), so they
touch only traffic between nodes, never the clients' traffic from the bridge address:

- ``partition(groups)``: every node drops packets from nodes outside its group (both directions are cut);
- ``block(frm, to)``: ``to`` drops packets from ``frm`` (one-way loss; the other direction still flows);
- ``loss(node, fraction)``: ``node`` drops that fraction of the packets it receives from peers (iptables
  ``statistic``), a lossy link;
- ``delay(node, ms, jitter_ms)``: tc netem on the node's interface, *when the kernel has netem* (``netem_available``);
  some kernels (this project's CI machine among them) lack the ``sch_netem`` module, and then delay faults are
  refused with a clear message rather than faked.

``heal()`` removes every rule; ``teardown()`` removes the namespaces, interfaces and bridge (also after a crash of
the caller: ``cleanup_stale()`` removes leftovers of earlier runs by name).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence

from ..errors import ClusterError

CHAIN = "RAFTKV"
NAME_PREFIX = "rk"


class NetnsUnavailable(ClusterError):
    """Network namespaces (or iptables) cannot be used here; the reason says why."""


def _run(args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise ClusterError(f"`{' '.join(args)}` failed: {(r.stderr or r.stdout).strip()}")
    return r


def unavailable_reason() -> str | None:
    """None if per-node namespaces with iptables faults work here, else why not (one line)."""
    if os.geteuid() != 0:
        return "network namespaces need root (run as root, or use process faults only)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            hint = " (apt-get install iptables)" if tool == "iptables" else " (apt-get install iproute2)"
            return f"the `{tool}` command is missing{hint}"
    probe = f"{NAME_PREFIX}probe{secrets.token_hex(2)}"
    r = _run(["ip", "netns", "add", probe], check=False)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    try:
        r = _run(["ip", "netns", "exec", probe, "iptables", "-L", "-n"], check=False)
        if r.returncode != 0:
            return f"iptables does not work inside a namespace: {(r.stderr or r.stdout).strip()}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return None


def cleanup_stale() -> list[str]:
    """Remove namespaces and links left by runs that died before their teardown. Returns what it removed."""
    removed = []
    for line in _run(["ip", "netns", "list"], check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(NAME_PREFIX) and len(name) <= 12 and "n" in name[len(NAME_PREFIX):]:
            _run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    for line in _run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(NAME_PREFIX) and (name.endswith("br") or "h" in name[len(NAME_PREFIX):]):
                _run(["ip", "link", "del", name], check=False)
                removed.append(name)
    return removed


class NetnsHosts:
    """``n`` hosts for a cluster, one network namespace each. Use as a context manager (setup / teardown)."""

    def __init__(self, n: int, *, tag: str | None = None) -> None:
        if not 1 <= n <= 40:
            raise ClusterError(f"between 1 and 40 namespaced nodes, not {n}")
        self.n = n
        self.tag = tag or secrets.token_hex(2)
        self.octet = self._free_octet()
        self.bridge = f"{NAME_PREFIX}{self.tag}br"
        self.bridge_ip = f"10.231.{self.octet}.1"
        self.netem_available = False
        self._up = False

    # -- names and addresses ------------------------------------------------------------------------------------
    def ns(self, node: int) -> str:
        return f"{NAME_PREFIX}{self.tag}n{node}"

    def ip(self, node: int) -> str:
        return f"10.231.{self.octet}.{10 + node}"

    def _host_if(self, node: int) -> str:
        return f"{NAME_PREFIX}{self.tag}h{node}"

    def _ns_if(self, node: int) -> str:
        return f"{NAME_PREFIX}{self.tag}p{node}"

    @property
    def ips(self) -> list[str]:
        return [self.ip(i) for i in range(1, self.n + 1)]

    def exec_prefix(self, node: int) -> list[str]:
        """Run a command inside node's namespace: ``[*exec_prefix(i), *argv]``."""
        return ["ip", "netns", "exec", self.ns(node)]

    @staticmethod
    def _free_octet() -> int:
        used = _run(["ip", "-4", "-o", "addr", "show"], check=False).stdout
        for _ in range(64):
            o = 1 + secrets.randbelow(250)
            if f"10.231.{o}." not in used:
                return o
        raise ClusterError("no free 10.231.x.0/24 subnet for the namespaces")

    # -- lifecycle --------------------------------------------------------------------------------------------
    def setup(self) -> NetnsHosts:
        reason = unavailable_reason()
        if reason:
            raise NetnsUnavailable(f"network namespaces are unavailable: {reason}")
        try:
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
            self._up = True
            _run(["ip", "addr", "add", f"{self.bridge_ip}/24", "dev", self.bridge])
            _run(["ip", "link", "set", self.bridge, "up"])
            for i in range(1, self.n + 1):
                ns, h, p = self.ns(i), self._host_if(i), self._ns_if(i)
                _run(["ip", "netns", "add", ns])
                _run(["ip", "link", "add", h, "type", "veth", "peer", "name", p])
                _run(["ip", "link", "set", p, "netns", ns])
                _run(["ip", "link", "set", h, "master", self.bridge])
                _run(["ip", "link", "set", h, "up"])
                x = ["ip", "netns", "exec", ns]
                _run([*x, "ip", "link", "set", "lo", "up"])
                _run([*x, "ip", "addr", "add", f"{self.ip(i)}/24", "dev", p])
                _run([*x, "ip", "link", "set", p, "up"])
                _run([*x, "iptables", "-N", CHAIN])
                _run([*x, "iptables", "-I", "INPUT", "-j", CHAIN])
            x = ["ip", "netns", "exec", self.ns(1)]
            netem = ["tc", "qdisc", "add", "dev", self._ns_if(1), "root", "netem", "delay", "1ms"]
            probe = _run([*x, *netem], check=False)
            self.netem_available = probe.returncode == 0
            if self.netem_available:
                _run([*x, "tc", "qdisc", "del", "dev", self._ns_if(1), "root"], check=False)
        except BaseException:
            self.teardown()
            raise
        return self

    def teardown(self) -> None:
        """Remove everything this object created (safe to call twice, and after a partial setup)."""
        for i in range(1, self.n + 1):
            _run(["ip", "netns", "del", self.ns(i)], check=False)
            _run(["ip", "link", "del", self._host_if(i)], check=False)
        _run(["ip", "link", "del", self.bridge], check=False)
        self._up = False

    def __enter__(self) -> NetnsHosts:
        return self.setup()

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    # -- faults -----------------------------------------------------------------------------------------------
    def _ipt(self, node: int, *rule: str) -> None:
        _run(["ip", "netns", "exec", self.ns(node), "iptables", *rule])

    def heal(self) -> None:
        """Remove every partition, block and loss rule (and netem delays)."""
        for i in range(1, self.n + 1):
            self._ipt(i, "-F", CHAIN)
            if self.netem_available:
                _run(["ip", "netns", "exec", self.ns(i), "tc", "qdisc", "del", "dev", self._ns_if(i), "root"],
                     check=False)

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Cut every link between nodes of different groups, in both directions (replaces earlier rules)."""
        self.heal()
        group_of = {n: gi for gi, g in enumerate(groups) for n in g}
        for a in range(1, self.n + 1):
            for b in range(1, self.n + 1):
                if a != b and a in group_of and b in group_of and group_of[a] != group_of[b]:
                    self._ipt(a, "-A", CHAIN, "-s", self.ip(b), "-j", "DROP")

    def isolate(self, node: int) -> None:
        self.partition([[node], [i for i in range(1, self.n + 1) if i != node]])

    def block(self, frm: int, to: int) -> None:
        """One-way: ``to`` no longer receives anything from ``frm`` (added to the current rules)."""
        self._ipt(to, "-A", CHAIN, "-s", self.ip(frm), "-j", "DROP")

    def loss(self, node: int, fraction: float) -> None:
        """``node`` drops ``fraction`` (0..1) of the packets it receives from each other node (one iptables rule per
        peer: a rule may name only one source)."""
        if not 0.0 < fraction <= 1.0:
            raise ClusterError(f"loss fraction must be in (0, 1], got {fraction}")
        for peer in range(1, self.n + 1):
            if peer != node:
                stat = ["-m", "statistic", "--mode", "random", "--probability", f"{fraction:.4f}"]
                self._ipt(node, "-A", CHAIN, "-s", self.ip(peer), *stat, "-j", "DROP")

    def delay(self, node: int, delay_ms: int, jitter_ms: int = 0) -> None:
        """Delay every packet ``node`` sends by ``delay_ms`` ± ``jitter_ms`` (tc netem; needs the kernel module)."""
        if not self.netem_available:
            raise NetnsUnavailable("tc netem is not available on this kernel (no sch_netem): delay faults are skipped")
        args = ["delay", f"{delay_ms}ms"] + ([f"{jitter_ms}ms"] if jitter_ms else [])
        _run(["ip", "netns", "exec", self.ns(node), "tc", "qdisc", "replace", "dev", self._ns_if(node), "root",
              "netem", *args])

    def rules(self) -> dict[int, list[str]]:
        """The current rules per node (for logs and tests)."""
        out = {}
        for i in range(1, self.n + 1):
            r = _run(["ip", "netns", "exec", self.ns(i), "iptables", "-S", CHAIN], check=False)
            out[i] = [line for line in r.stdout.splitlines() if line.startswith("-A")]
        return out


__all__ = ["NetnsHosts", "NetnsUnavailable", "cleanup_stale", "unavailable_reason"]
