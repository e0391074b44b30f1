"""Where the cluster is: endpoints given, from the environment, or from a local cluster's ``cluster.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ConfigError

__all__ = ["CLUSTER_FILE", "DEFAULT_CLUSTER_DIR", "local_cluster_dir", "resolve_endpoints"]

CLUSTER_FILE = "cluster.json"
"""The file ``raftkv cluster up`` writes into its directory; :func:`resolve_endpoints` reads ``endpoints`` from it."""
DEFAULT_CLUSTER_DIR = ".raftkv-cluster"


def resolve_endpoints(endpoints: str | None = None, cluster_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Where the cluster is: ``endpoints`` (comma-separated ``HOST:PORT``), else ``$RAFTKV_ENDPOINTS``, else the
    ``cluster.json`` of a local cluster (``cluster_dir``, else ``$RAFTKV_CLUSTER_DIR``, else ``./.raftkv-cluster``)."""
    source = _endpoint_list(endpoints)
    if source is not None:
        eps = [e.strip() for e in source.split(",") if e.strip()]
        for e in eps:
            host, sep, port = e.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ConfigError(f"bad endpoint {e!r}: expected HOST:PORT")
        return eps
    explicit = _explicit_cluster_dir(cluster_dir)
    d = Path(explicit if explicit else DEFAULT_CLUSTER_DIR)
    f = d / CLUSTER_FILE
    if f.is_file():
        try:
            data = json.loads(f.read_text())
            eps = [str(e) for e in data["endpoints"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"cannot read the endpoints from {f}: {e}") from None
        if eps:
            return eps
    if explicit:
        raise ConfigError(f"no local cluster in {d} (no {CLUSTER_FILE}): start one with `raftkv cluster up --dir {d}`")
    raise ConfigError(
        "no endpoints: pass --endpoints, set RAFTKV_ENDPOINTS, or start a local cluster with `raftkv cluster up`"
    )


def local_cluster_dir(endpoints: str | None = None, cluster_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The local cluster directory whose ``cluster.json`` :func:`resolve_endpoints` reads for these arguments; None
    when the endpoints come from ``endpoints`` or ``$RAFTKV_ENDPOINTS``."""
    if _endpoint_list(endpoints) is not None:
        return None
    return Path(_explicit_cluster_dir(cluster_dir) or DEFAULT_CLUSTER_DIR)


def _endpoint_list(endpoints: str | None) -> str | None:
    for source in (endpoints, os.environ.get("RAFTKV_ENDPOINTS")):
        if source and source.strip():
            return source
    return None


def _explicit_cluster_dir(cluster_dir: str | os.PathLike[str] | None) -> str | os.PathLike[str] | None:
    return cluster_dir if cluster_dir is not None else os.environ.get("RAFTKV_CLUSTER_DIR") or None
