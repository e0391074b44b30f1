"""raftkv: a Raft-replicated key-value store daemon.

The pieces most users want: ``raftkv.client.Client`` (async) and ``raftkv.client.SyncClient``; the ``raftkv``
command (``raftkv --help``). The consensus core is ``raftkv.raft``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
