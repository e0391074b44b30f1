"""Runs the one ``Transport`` conformance suite against every implementation."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from raftkv.transport import GrpcTransport, MemoryNetwork, MemoryTransport

from .conformance import Built, MakeTransport, TransportConformance, Wiring
from .helpers import free_port


def _memory(network: MemoryNetwork) -> MakeTransport:
    serial = itertools.count(1)

    def make(node_id: int, w: Wiring, addr: str | None) -> Built:
        t = MemoryTransport(
            network, node_id, w.on_messages, w.on_unreachable, on_removed=w.on_removed,
            on_snapshot=w.on_snapshot, snapshot_dir=w.snapshot_dir, snapshot_sink=w.snapshot_sink,
        )  # fmt: skip
        return Built(t, addr or f"mem:{node_id}.{next(serial)}")

    return make


class TestMemoryTransport(TransportConformance):
    @pytest.fixture
    def make_transport(self) -> MakeTransport:
        return _memory(MemoryNetwork())


class TestGrpcTransport(TransportConformance):
    """On 127.0.0.1, ports picked free at run time, with a short reconnection back-off."""

    @pytest.fixture
    def make_transport(self) -> MakeTransport:
        def make(node_id: int, w: Wiring, addr: str | None) -> Built:
            addr = addr or f"127.0.0.1:{free_port()}"
            t = GrpcTransport(
                node_id, "conformance", addr, w.on_messages, w.on_unreachable, reconnect_backoff_s=(0.02, 0.2),
                on_removed=w.on_removed, on_snapshot=w.on_snapshot, snapshot_dir=w.snapshot_dir,
                snapshot_sink=w.snapshot_sink,
            )  # fmt: skip
            # The server learns that a sender gave up only when gRPC cancels the handler: count the handlers still
            # running, so that a test can wait until the receiver let go before it lets the sink carry on.
            active = 0
            receive = t._receive_snapshot

            async def counted(chunks: Any, context: Any) -> Any:
                nonlocal active
                active += 1
                try:
                    return await receive(chunks, context)
                finally:
                    active -= 1

            t._receive_snapshot = counted  # type: ignore[method-assign]
            return Built(t, addr, lambda: active)

        return make
