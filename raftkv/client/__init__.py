"""The raftkv client: an async :class:`Client` and a thin synchronous :class:`SyncClient`.

::

    async with Client(["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"]) as c:
        meta = await c.put("greeting", "hello")
        kv = await c.get("greeting")            # KeyValue(key=b'greeting', value=b'hello', ...) or None

    with SyncClient(["127.0.0.1:8001"]) as c:   # the same methods, blocking
        c.put(b"k", b"v")

What the client guarantees:

* **Leader discovery.** Writes go to the node that took the last one: the leader, or a follower that forwards
  writes to it (the default, ``forward_proposals``). A node that does not take writes answers ``NotLeader`` with the
  leader's client address, and the client goes there (the address need not be in the endpoint list). A node that
  cannot be reached, or answers ``Unavailable``, makes the client try the next endpoint, backing off exponentially
  with jitter (50 ms doubling to 1 s) -- all within one overall deadline (``timeout_s``) that no
  request ever exceeds: every attempt's gRPC deadline is the time that remains. A refused connection moves on to
  the next endpoint at once, and when every endpoint refused (nothing listens at any of them: no server can have
  seen the request) the request fails at once with :class:`~raftkv.errors.Unavailable` saying so, instead of
  waiting out the deadline; while some endpoint answers (an election, a node restarting) it waits.
* **Exactly-once writes.** Every write carries a session ``(client_id, seq)``; a retry of that write carries the same
  pair, so the cluster applies it at most once. The client owns ``lanes`` sessions (client ids ``base + lane``):
  a write takes an idle lane for its whole life, so at most one request per session id is ever outstanding.
* **A write is reported successful only when it was acknowledged.** Every error says whether the request may have
  changed anything, in ``applied`` ("no" or "unknown", see :mod:`raftkv.errors`). When the deadline passes after an
  attempt whose outcome is unknown (a timeout, a lost connection, a leader change after the write was forwarded),
  the write raises :class:`~raftkv.errors.Timeout` with ``applied="unknown"``: it may or may not have been applied.
* **Single attempt** (``single_attempt=True``, one endpoint): every call is exactly one RPC to that endpoint, with no
  retry, redirect or coalescing, and raises the error that attempt got, for tools and tests that must know what
  one request did.
* **Read-your-writes and monotonic reads.** The client remembers the highest applied index any response showed it
  and sends it as ``min_index`` on reads, so even a stale read on another node never goes back in time.
* **Coalescing** (``coalesce=True``, the default). A gRPC call costs the server far more than a small operation, so
  concurrent puts, gets, deletes and increments share calls: per endpoint at most two calls sent this way are in
  flight; an operation that finds one of them free goes out at once (alone, as its ordinary unary RPC), and
  operations arriving while both are busy wait and go together, as one ``Batch`` RPC of up to 256 independent
  operations (not atomic: each keeps its own session and its own result or error), as soon as a call returns. Only
  an operation's first attempt is coalesced; its retries are unary calls with the same session, and an attempt in a
  batch counts exactly as a unary attempt does for redirects, deadlines and unknown outcomes (a batch that fails as a
  whole leaves every write in it with an unknown outcome, unless it certainly never reached the server). A server
  without ``Batch`` (an older version) makes the client stop coalescing for that endpoint and send the operations
  as unary calls.

Errors are the ones of :mod:`raftkv.errors`, rebuilt from the gRPC status and its trailing metadata.

The package, one module per concern (everything public is re-exported here, so ``from raftkv.client import X``
is all a user needs):

* :mod:`~raftkv.client.models` -- the API's values (``KeyValue``, ``PutResult``, ``Compare``, ``TxnOp``,
  ``NodeStatus``, ``ClusterHealth`` ...), ``compare`` and ``cluster_health``, and their protobuf form;
* :mod:`~raftkv.client.discovery` -- where the cluster is (``resolve_endpoints``, ``local_cluster_dir``);
* :mod:`~raftkv.client.rpc_errors` -- gRPC failures to raftkv errors (``error_from_rpc``, ``transport_failure``);
* :mod:`~raftkv.client.retry` -- the back-off and what the retry loop decides and says when it gives up;
* :mod:`~raftkv.client.coalescer` -- the per-endpoint queues that send concurrent operations as one Batch RPC;
* :mod:`~raftkv.client.aio` -- the async :class:`Client`;
* :mod:`~raftkv.client.sync` -- :class:`SyncClient`, the blocking wrapper.
"""

from .aio import Client
from .discovery import CLUSTER_FILE, DEFAULT_CLUSTER_DIR, local_cluster_dir, resolve_endpoints
from .leases import Lease
from .models import (
    CONSISTENCY_LEVELS,
    ClusterHealth,
    Compare,
    Consistency,
    DeleteResult,
    KeyValue,
    LeaseInfo,
    Member,
    MemberList,
    NodeStatus,
    OnConflict,
    PutResult,
    RangeResult,
    TxnOp,
    TxnOpOutcome,
    TxnResult,
    WatchBatch,
    WatchEvent,
    cluster_health,
    compare,
)
from .recipes import Election, Lock, LockLost
from .retry import BACKOFF_MAX_S, BACKOFF_MIN_S
from .rpc_errors import META_CURRENT_BIN, error_from_rpc, transport_failure
from .sync import SyncClient, SyncElection, SyncLease, SyncLock

__all__ = [
    "BACKOFF_MAX_S",
    "BACKOFF_MIN_S",
    "CLUSTER_FILE",
    "CONSISTENCY_LEVELS",
    "DEFAULT_CLUSTER_DIR",
    "META_CURRENT_BIN",
    "Client",
    "ClusterHealth",
    "Compare",
    "Consistency",
    "DeleteResult",
    "Election",
    "KeyValue",
    "Lease",
    "LeaseInfo",
    "Lock",
    "LockLost",
    "Member",
    "MemberList",
    "NodeStatus",
    "OnConflict",
    "PutResult",
    "RangeResult",
    "SyncClient",
    "SyncElection",
    "SyncLease",
    "SyncLock",
    "TxnOp",
    "TxnOpOutcome",
    "TxnResult",
    "WatchBatch",
    "WatchEvent",
    "cluster_health",
    "compare",
    "error_from_rpc",
    "local_cluster_dir",
    "resolve_endpoints",
    "transport_failure",
]
