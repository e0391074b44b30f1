"""raftkv against etcd with a C client: h2load (nghttp2) sending gRPC-framed etcd v3 requests to the leader.

    python -m bench.h2load_bench                          # put, range (linearizable, serializable), txn; 1/64/256
    python -m bench.h2load_bench --workloads put --seconds 5
    python -m bench.h2load_bench --output json

Both systems get the very same bytes: each request is a gRPC frame (a zero byte, the message length, the
serialized ``etcdserverpb`` request) POSTed to ``/etcdserverpb.KV/<Method>`` over cleartext HTTP/2 by h2load, so the
client costs next to nothing and what is measured is the servers. In flight: 1 (1 connection, 1 stream), 64 (4
connections x 16 streams), 256 (8 x 32). Fresh 3-member clusters of each system (fsync on, defaults), rows
interleaved (raftkv then etcd for each workload and depth). h2load counts HTTP statuses, and gRPC errors travel in
trailers with HTTP 200: so every put row is checked against the store's revision (it must have grown by the puts
h2load counted), and one request of every kind is sent through a gRPC client first and must succeed.

Needs ``h2load`` (Debian ``nghttp2-client``) and etcd (``bench/etcd.sh``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from raftkv import localcluster
from raftkv.proto.etcd.api.etcdserverpb import rpc_pb2 as pb
from raftkv.proto.etcd.api.etcdserverpb import rpc_pb2_grpc as pb_grpc

from .etcd import EtcdCluster, find_etcd

DEPTHS = {1: (1, 1), 64: (4, 16), 256: (8, 32)}
WORKLOADS = ("put", "range", "range-serializable", "txn")


def request(workload: str, value: bytes) -> tuple[str, bytes]:
    """The method and the serialized request of ``workload``."""
    if workload == "put":
        return "Put", pb.PutRequest(key=b"bench/k", value=value).SerializeToString()
    if workload == "range":
        return "Range", pb.RangeRequest(key=b"bench/k").SerializeToString()
    if workload == "range-serializable":
        return "Range", pb.RangeRequest(key=b"bench/k", serializable=True).SerializeToString()
    cmp = pb.Compare(key=b"bench/k", target=pb.Compare.VERSION, result=pb.Compare.GREATER, version=0)
    op = pb.RequestOp(request_put=pb.PutRequest(key=b"bench/k", value=value))
    return "Txn", pb.TxnRequest(compare=[cmp], success=[op]).SerializeToString()


def frame(body: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(body)) + body


def check_once(endpoint: str, workload: str, value: bytes) -> int:
    """Send ``workload`` once through a gRPC client (it must succeed); return the store's revision after."""
    with grpc.insecure_channel(endpoint) as ch:
        kv = pb_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
        method, body = request(workload, value)
        req_type = {"Put": pb.PutRequest, "Range": pb.RangeRequest, "Txn": pb.TxnRequest}[method]
        resp = getattr(kv, method)(req_type.FromString(body), timeout=10)
        if workload == "txn" and not resp.succeeded:
            raise SystemExit("the txn's compare did not hold: the bench request is wrong")
        return int(kv.Range(pb.RangeRequest(key=b"bench/k"), timeout=10).header.revision)


def h2load(endpoint: str, workload: str, value: bytes, depth: int, seconds: float, tmp: Path) -> dict[str, Any]:
    method, body = request(workload, value)
    data = tmp / f"{workload}.bin"
    data.write_bytes(frame(body))
    conns, streams = DEPTHS[depth]
    cmd = ["h2load", f"http://{endpoint}/etcdserverpb.KV/{method}", "-d", str(data), "-c", str(conns),
           "-m", str(streams), "-D", str(max(1, round(seconds))), "--warm-up-time=1",
           "-H", "content-type: application/grpc", "-H", "te: trailers"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    lat = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", out)
    if not (rps and done and lat):
        raise SystemExit(f"h2load said:\n{out}")
    return {"req_per_s": float(rps.group(1)), "succeeded": int(done.group(2)), "failed": int(done.group(3)),
            "latency_min": lat.group(1), "latency_max": lat.group(2), "latency_mean": lat.group(3)}


def leader_endpoint(system: str, endpoints: list[str]) -> str:
    for ep in endpoints:
        with grpc.insecure_channel(ep) as ch:
            st = pb_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=10)  # type: ignore[no-untyped-call]
            if st.leader == st.header.member_id:
                return ep
    raise SystemExit(f"no {system} leader among {endpoints}")


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    value = b"v" * args.value_size
    rows: list[dict[str, Any]] = []
    root = Path(tempfile.mkdtemp(prefix="raftkv-h2load-"))
    binary = find_etcd()
    if binary is None:
        raise SystemExit("etcd is not installed: bench/etcd.sh")
    try:
        for workload in args.workloads:
            for depth in args.depths:
                for system in ("raftkv", "etcd"):
                    d = root / f"{system}-{workload}-{depth}"
                    etcd: EtcdCluster | None = None
                    try:
                        if system == "raftkv":
                            info = localcluster.up(d, 3, tick_ms=100, sync=True, timeout_s=60.0)
                            endpoints = info.endpoints
                        else:
                            etcd = EtcdCluster.up(d, 3, binary=binary)
                            endpoints = etcd.endpoints
                        time.sleep(1.0)
                        lead = leader_endpoint(system, endpoints)
                        before = check_once(lead, workload, value)
                        r = h2load(lead, workload, value, depth, args.seconds, root)
                        after = check_once(lead, workload, value)
                        writes = workload in ("put", "txn")
                        if writes and after - before - 1 < r["succeeded"]:
                            raise SystemExit(f"{system} {workload}: h2load counted {r['succeeded']} successes but "
                                             f"the revision moved by {after - before - 1}: requests failed")
                        row = {"system": system, "workload": workload, "in_flight": depth, **r}
                        rows.append(row)
                        print(f"{system:6} {workload:19} {depth:4} {r['req_per_s']:9,.0f} req/s  mean "
                              f"{r['latency_mean']}", file=sys.stderr, flush=True)
                    finally:
                        if etcd is not None:
                            etcd.down()
                        elif (d / localcluster.CLUSTER_FILE).exists():
                            localcluster.down(d, purge=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", type=lambda s: tuple(s.split(",")), default=WORKLOADS)
    p.add_argument("--depths", type=lambda s: tuple(int(x) for x in s.split(",")), default=tuple(DEPTHS))
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per row (default 10)")
    p.add_argument("--value-size", type=int, default=256)
    p.add_argument("--output", choices=("table", "json"), default="table")
    args = p.parse_args(argv)
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is not installed: apt-get install nghttp2-client")
    bad = [w for w in args.workloads if w not in WORKLOADS] + [str(d) for d in args.depths if d not in DEPTHS]
    if bad:
        raise SystemExit(f"unknown workloads or depths: {', '.join(bad)}")
    rows = run(args)
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return 0
    by = {(r["system"], r["workload"], r["in_flight"]): r for r in rows}
    print(f"{'workload':19} {'in flight':>9} {'raftkv req/s':>13} {'etcd req/s':>11} {'ratio':>6}  mean latency "
          "raftkv / etcd")
    for w in args.workloads:
        for d in args.depths:
            a, b = by.get(("raftkv", w, d)), by.get(("etcd", w, d))
            if a and b:
                print(f"{w:19} {d:9} {a['req_per_s']:13,.0f} {b['req_per_s']:11,.0f} "
                      f"{a['req_per_s'] / b['req_per_s']:6.2f}  {a['latency_mean']} / {b['latency_mean']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
