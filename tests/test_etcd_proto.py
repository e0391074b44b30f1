"""raftkv/proto/etcd is etcd's v3 wire schema: names and numbers as etcd v3.5's api/etcdserverpb/rpc.proto,
api/mvccpb/kv.proto and api/authpb/auth.proto have them (the tables below are taken from those files).

A wrong number here would not fail anywhere else: etcd clients would just see garbage or missing fields.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from raftkv.proto.etcd.api.authpb import auth_pb2
from raftkv.proto.etcd.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from raftkv.proto.etcd.api.mvccpb import kv_pb2

ETCD_DIR = Path(rpc_pb2.__file__).resolve().parents[2]  # raftkv/proto/etcd

# message -> {field: number}; the message must have exactly these fields.
FIELDS: dict[type[Message], dict[str, int]] = {
    rpc_pb2.ResponseHeader: {"cluster_id": 1, "member_id": 2, "revision": 3, "raft_term": 4},
    rpc_pb2.RangeRequest: {
        "key": 1, "range_end": 2, "limit": 3, "revision": 4, "sort_order": 5, "sort_target": 6, "serializable": 7,
        "keys_only": 8, "count_only": 9, "min_mod_revision": 10, "max_mod_revision": 11, "min_create_revision": 12,
        "max_create_revision": 13,
    },
    rpc_pb2.RangeResponse: {"header": 1, "kvs": 2, "more": 3, "count": 4},
    rpc_pb2.PutRequest: {
        "key": 1, "value": 2, "lease": 3, "prev_kv": 4, "ignore_value": 5, "ignore_lease": 6,
    },
    rpc_pb2.PutResponse: {"header": 1, "prev_kv": 2},
    rpc_pb2.DeleteRangeRequest: {"key": 1, "range_end": 2, "prev_kv": 3},
    rpc_pb2.DeleteRangeResponse: {"header": 1, "deleted": 2, "prev_kvs": 3},
    rpc_pb2.RequestOp: {"request_range": 1, "request_put": 2, "request_delete_range": 3, "request_txn": 4},
    rpc_pb2.ResponseOp: {
        "response_range": 1, "response_put": 2, "response_delete_range": 3, "response_txn": 4,
    },
    rpc_pb2.Compare: {
        "result": 1, "target": 2, "key": 3, "version": 4, "create_revision": 5, "mod_revision": 6, "value": 7,
        "lease": 8, "range_end": 64,
    },
    rpc_pb2.TxnRequest: {"compare": 1, "success": 2, "failure": 3},
    rpc_pb2.TxnResponse: {"header": 1, "succeeded": 2, "responses": 3},
    rpc_pb2.CompactionRequest: {"revision": 1, "physical": 2},
    rpc_pb2.WatchRequest: {"create_request": 1, "cancel_request": 2, "progress_request": 3},
    rpc_pb2.WatchCreateRequest: {
        "key": 1, "range_end": 2, "start_revision": 3, "progress_notify": 4, "filters": 5, "prev_kv": 6,
        "watch_id": 7, "fragment": 8,
    },
    rpc_pb2.WatchCancelRequest: {"watch_id": 1},
    rpc_pb2.WatchResponse: {
        "header": 1, "watch_id": 2, "created": 3, "canceled": 4, "compact_revision": 5, "cancel_reason": 6,
        "fragment": 7, "events": 11,
    },
    rpc_pb2.LeaseGrantRequest: {"TTL": 1, "ID": 2},
    rpc_pb2.LeaseGrantResponse: {"header": 1, "ID": 2, "TTL": 3, "error": 4},
    rpc_pb2.LeaseKeepAliveRequest: {"ID": 1},
    rpc_pb2.LeaseKeepAliveResponse: {"header": 1, "ID": 2, "TTL": 3},
    rpc_pb2.LeaseTimeToLiveRequest: {"ID": 1, "keys": 2},
    rpc_pb2.LeaseTimeToLiveResponse: {"header": 1, "ID": 2, "TTL": 3, "grantedTTL": 4, "keys": 5},
    rpc_pb2.LeaseLeasesResponse: {"header": 1, "leases": 2},
    rpc_pb2.Member: {"ID": 1, "name": 2, "peerURLs": 3, "clientURLs": 4, "isLearner": 5},
    rpc_pb2.MemberAddResponse: {"header": 1, "member": 2, "members": 3},
    rpc_pb2.AlarmRequest: {"action": 1, "memberID": 2, "alarm": 3},
    rpc_pb2.HashKVResponse: {"header": 1, "hash": 2, "compact_revision": 3},
    rpc_pb2.SnapshotResponse: {"header": 1, "remaining_bytes": 2, "blob": 3},
    rpc_pb2.DowngradeRequest: {"action": 1, "version": 2},
    rpc_pb2.StatusResponse: {
        "header": 1, "version": 2, "dbSize": 3, "leader": 4, "raftIndex": 5, "raftTerm": 6, "raftAppliedIndex": 7,
        "errors": 8, "dbSizeInUse": 9, "isLearner": 10,
    },
    rpc_pb2.AuthUserAddRequest: {"name": 1, "password": 2, "options": 3, "hashedPassword": 4},
    rpc_pb2.AuthStatusResponse: {"header": 1, "enabled": 2, "authRevision": 3},
    kv_pb2.KeyValue: {
        "key": 1, "create_revision": 2, "mod_revision": 3, "version": 4, "value": 5, "lease": 6,
    },
    kv_pb2.Event: {"type": 1, "kv": 2, "prev_kv": 3},
    auth_pb2.User: {"name": 1, "password": 2, "roles": 3, "options": 4},
    auth_pb2.Permission: {"permType": 1, "key": 2, "range_end": 3},
    auth_pb2.Role: {"name": 1, "keyPermission": 2},
}

# A few types, where a wrong one (signed vs unsigned, int vs bytes) would change the encoding.
T = FieldDescriptor
TYPES: dict[tuple[type[Message], str], int] = {
    (rpc_pb2.ResponseHeader, "cluster_id"): T.TYPE_UINT64,
    (rpc_pb2.ResponseHeader, "revision"): T.TYPE_INT64,
    (rpc_pb2.RangeRequest, "key"): T.TYPE_BYTES,
    (rpc_pb2.RangeRequest, "limit"): T.TYPE_INT64,
    (rpc_pb2.Compare, "value"): T.TYPE_BYTES,
    (rpc_pb2.HashKVResponse, "hash"): T.TYPE_UINT32,
    (rpc_pb2.Member, "ID"): T.TYPE_UINT64,
    (rpc_pb2.LeaseGrantRequest, "ID"): T.TYPE_INT64,
    (rpc_pb2.StatusResponse, "leader"): T.TYPE_UINT64,
    (kv_pb2.KeyValue, "create_revision"): T.TYPE_INT64,
    (auth_pb2.User, "name"): T.TYPE_BYTES,
}

# enum full name -> {value: number}
ENUMS: dict[str, dict[str, int]] = {
    "etcdserverpb.RangeRequest.SortOrder": {"NONE": 0, "ASCEND": 1, "DESCEND": 2},
    "etcdserverpb.RangeRequest.SortTarget": {"KEY": 0, "VERSION": 1, "CREATE": 2, "MOD": 3, "VALUE": 4},
    "etcdserverpb.Compare.CompareResult": {"EQUAL": 0, "GREATER": 1, "LESS": 2, "NOT_EQUAL": 3},
    "etcdserverpb.Compare.CompareTarget": {"VERSION": 0, "CREATE": 1, "MOD": 2, "VALUE": 3, "LEASE": 4},
    "etcdserverpb.WatchCreateRequest.FilterType": {"NOPUT": 0, "NODELETE": 1},
    "etcdserverpb.AlarmType": {"NONE": 0, "NOSPACE": 1, "CORRUPT": 2},
    "etcdserverpb.AlarmRequest.AlarmAction": {"GET": 0, "ACTIVATE": 1, "DEACTIVATE": 2},
    "etcdserverpb.DowngradeRequest.DowngradeAction": {"VALIDATE": 0, "ENABLE": 1, "CANCEL": 2},
    "mvccpb.Event.EventType": {"PUT": 0, "DELETE": 1},
    "authpb.Permission.Type": {"READ": 0, "WRITE": 1, "READWRITE": 2},
}

# message -> {oneof: its fields}
ONEOFS: dict[type[Message], dict[str, set[str]]] = {
    rpc_pb2.Compare: {"target_union": {"version", "create_revision", "mod_revision", "value", "lease"}},
    rpc_pb2.RequestOp: {"request": {"request_range", "request_put", "request_delete_range", "request_txn"}},
    rpc_pb2.ResponseOp: {
        "response": {"response_range", "response_put", "response_delete_range", "response_txn"},
    },
    rpc_pb2.WatchRequest: {"request_union": {"create_request", "cancel_request", "progress_request"}},
}

U, C, S, B = "unary", "client-stream", "server-stream", "bidi"
# service -> [(method, input, output, streaming)], in etcd's order.
SERVICES: dict[str, list[tuple[str, str, str, str]]] = {
    "KV": [
        ("Range", "RangeRequest", "RangeResponse", U),
        ("Put", "PutRequest", "PutResponse", U),
        ("DeleteRange", "DeleteRangeRequest", "DeleteRangeResponse", U),
        ("Txn", "TxnRequest", "TxnResponse", U),
        ("Compact", "CompactionRequest", "CompactionResponse", U),
    ],
    "Watch": [("Watch", "WatchRequest", "WatchResponse", B)],
    "Lease": [
        ("LeaseGrant", "LeaseGrantRequest", "LeaseGrantResponse", U),
        ("LeaseRevoke", "LeaseRevokeRequest", "LeaseRevokeResponse", U),
        ("LeaseKeepAlive", "LeaseKeepAliveRequest", "LeaseKeepAliveResponse", B),
        ("LeaseTimeToLive", "LeaseTimeToLiveRequest", "LeaseTimeToLiveResponse", U),
        ("LeaseLeases", "LeaseLeasesRequest", "LeaseLeasesResponse", U),
    ],
    "Cluster": [
        (m, f"{m}Request", f"{m}Response", U)
        for m in ("MemberAdd", "MemberRemove", "MemberUpdate", "MemberList", "MemberPromote")
    ],
    "Maintenance": [
        ("Alarm", "AlarmRequest", "AlarmResponse", U),
        ("Status", "StatusRequest", "StatusResponse", U),
        ("Defragment", "DefragmentRequest", "DefragmentResponse", U),
        ("Hash", "HashRequest", "HashResponse", U),
        ("HashKV", "HashKVRequest", "HashKVResponse", U),
        ("Snapshot", "SnapshotRequest", "SnapshotResponse", S),
        ("MoveLeader", "MoveLeaderRequest", "MoveLeaderResponse", U),
        ("Downgrade", "DowngradeRequest", "DowngradeResponse", U),
    ],
    "Auth": [
        ("AuthEnable", "AuthEnableRequest", "AuthEnableResponse", U),
        ("AuthDisable", "AuthDisableRequest", "AuthDisableResponse", U),
        ("AuthStatus", "AuthStatusRequest", "AuthStatusResponse", U),
        ("Authenticate", "AuthenticateRequest", "AuthenticateResponse", U),
        *(
            (m, f"Auth{m}Request", f"Auth{m}Response", U)
            for m in (
                "UserAdd", "UserGet", "UserList", "UserDelete", "UserChangePassword", "UserGrantRole",
                "UserRevokeRole", "RoleAdd", "RoleGet", "RoleList", "RoleDelete", "RoleGrantPermission",
                "RoleRevokePermission",
            )
        ),
    ],
}


@pytest.mark.parametrize("msg", list(FIELDS), ids=lambda m: m.DESCRIPTOR.full_name)
def test_field_names_and_numbers(msg: type[Message]) -> None:
    desc = msg.DESCRIPTOR
    assert {f.name: f.number for f in desc.fields} == FIELDS[msg]
    for name, number in FIELDS[msg].items():
        assert desc.fields_by_name[name].number == number


def test_field_types() -> None:
    for (msg, name), typ in TYPES.items():
        assert msg.DESCRIPTOR.fields_by_name[name].type == typ, f"{msg.DESCRIPTOR.full_name}.{name}"


def test_packages_and_message_names() -> None:
    assert rpc_pb2.DESCRIPTOR.package == "etcdserverpb"
    assert kv_pb2.DESCRIPTOR.package == "mvccpb"
    assert auth_pb2.DESCRIPTOR.package == "authpb"
    refs: list[tuple[type[Message], str, str]] = [
        (rpc_pb2.RangeResponse, "kvs", "mvccpb.KeyValue"),
        (rpc_pb2.WatchResponse, "events", "mvccpb.Event"),
        (rpc_pb2.AuthRoleGetResponse, "perm", "authpb.Permission"),
        (rpc_pb2.AuthUserAddRequest, "options", "authpb.UserAddOptions"),
    ]
    for msg, field, type_name in refs:
        message_type = msg.DESCRIPTOR.fields_by_name[field].message_type
        assert message_type is not None and message_type.full_name == type_name
    # etcd's rpc.proto defines 95 messages (LeaseCheckpoint* included) and one top-level enum.
    assert len(rpc_pb2.DESCRIPTOR.message_types_by_name) == 95
    assert set(rpc_pb2.DESCRIPTOR.enum_types_by_name) == {"AlarmType"}
    assert set(kv_pb2.DESCRIPTOR.message_types_by_name) == {"KeyValue", "Event"}
    assert set(auth_pb2.DESCRIPTOR.message_types_by_name) == {"UserAddOptions", "User", "Permission", "Role"}


@pytest.mark.parametrize("full_name", list(ENUMS))
def test_enums(full_name: str) -> None:
    pkg = full_name.split(".", 1)[0]
    module = {"etcdserverpb": rpc_pb2, "mvccpb": kv_pb2, "authpb": auth_pb2}[pkg]
    parts = full_name.split(".")[1:]
    if len(parts) == 1:
        enum = module.DESCRIPTOR.enum_types_by_name[parts[0]]
    else:
        enum = module.DESCRIPTOR.message_types_by_name[parts[0]].enum_types_by_name[parts[1]]
    assert enum.full_name == full_name
    assert {v.name: v.number for v in enum.values} == ENUMS[full_name]


@pytest.mark.parametrize("msg", list(ONEOFS), ids=lambda m: m.DESCRIPTOR.full_name)
def test_oneofs(msg: type[Message]) -> None:
    assert {o.name: {f.name for f in o.fields} for o in msg.DESCRIPTOR.oneofs} == ONEOFS[msg]


@pytest.mark.parametrize("service", list(SERVICES))
def test_services(service: str) -> None:
    svc = rpc_pb2.DESCRIPTOR.services_by_name[service]
    assert svc.full_name == f"etcdserverpb.{service}"
    got = []
    for m in svc.methods:
        kind = {(False, False): U, (True, False): C, (False, True): S, (True, True): B}[
            (m.client_streaming, m.server_streaming)
        ]
        got.append((m.name, m.input_type.name, m.output_type.name, kind))
    assert got == SERVICES[service]
    assert hasattr(rpc_pb2_grpc, f"{service}Stub") and hasattr(rpc_pb2_grpc, f"add_{service}Servicer_to_server")


def test_wire_bytes() -> None:
    """Hand-encoded: what an etcd client sends for `put a b --lease=5` and a prefix watch on "k"."""
    put = rpc_pb2.PutRequest(key=b"a", value=b"b", lease=5, prev_kv=True)
    assert put.SerializeToString() == bytes.fromhex("0a0161" "120162" "1805" "2001")
    watch = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k", range_end=b"l", watch_id=3))
    assert watch.SerializeToString() == bytes.fromhex("0a08" "0a016b" "12016c" "3803")
    cmp = rpc_pb2.Compare(result=rpc_pb2.Compare.LESS, target=rpc_pb2.Compare.LEASE, key=b"k", lease=7)
    assert cmp.SerializeToString() == bytes.fromhex("0802" "1004" "1a016b" "4007")


def test_generated_modules_import_only_protobuf_and_grpc() -> None:
    files = sorted(ETCD_DIR.rglob("*.py")) + sorted(ETCD_DIR.rglob("*.pyi"))
    assert any(f.name == "rpc_pb2_grpc.py" for f in files)
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                ok = (
                    top in sys.stdlib_module_names
                    or top == "grpc"
                    or name == "google.protobuf"
                    or name.startswith("google.protobuf.")
                    or name.startswith("raftkv.proto.etcd.")
                )
                assert ok, f"{f.relative_to(ETCD_DIR)} imports {name}"
