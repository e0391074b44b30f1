from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Consistency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINEARIZABLE: _ClassVar[Consistency]
    LEASE: _ClassVar[Consistency]
    STALE: _ClassVar[Consistency]
    BOUNDED: _ClassVar[Consistency]

class OnConflict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REJECT: _ClassVar[OnConflict]
    SIBLINGS: _ClassVar[OnConflict]
LINEARIZABLE: Consistency
LEASE: Consistency
STALE: Consistency
BOUNDED: Consistency
REJECT: OnConflict
SIBLINGS: OnConflict

class Session(_message.Message):
    __slots__ = ("client_id", "seq")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    seq: int
    def __init__(self, client_id: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class VectorClock(_message.Message):
    __slots__ = ("nodes", "counters")
    NODES_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedScalarFieldContainer[int]
    counters: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, nodes: _Optional[_Iterable[int]] = ..., counters: _Optional[_Iterable[int]] = ...) -> None: ...

class Sibling(_message.Message):
    __slots__ = ("value", "node", "revision")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    value: bytes
    node: int
    revision: int
    def __init__(self, value: _Optional[bytes] = ..., node: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...

class KeyValue(_message.Message):
    __slots__ = ("key", "value", "create_revision", "mod_revision", "version", "vclock", "siblings", "lease")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CREATE_REVISION_FIELD_NUMBER: _ClassVar[int]
    MOD_REVISION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VCLOCK_FIELD_NUMBER: _ClassVar[int]
    SIBLINGS_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    vclock: VectorClock
    siblings: _containers.RepeatedCompositeFieldContainer[Sibling]
    lease: int
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., create_revision: _Optional[int] = ..., mod_revision: _Optional[int] = ..., version: _Optional[int] = ..., vclock: _Optional[_Union[VectorClock, _Mapping]] = ..., siblings: _Optional[_Iterable[_Union[Sibling, _Mapping]]] = ..., lease: _Optional[int] = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("node_id", "term", "index", "leader_id", "leader_contact_ms", "revision")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_CONTACT_MS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    term: int
    index: int
    leader_id: int
    leader_contact_ms: int
    revision: int
    def __init__(self, node_id: _Optional[int] = ..., term: _Optional[int] = ..., index: _Optional[int] = ..., leader_id: _Optional[int] = ..., leader_contact_ms: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...

class ReadOptions(_message.Message):
    __slots__ = ("consistency", "min_index", "max_staleness_ms", "fail_if_stale", "timeout_ms")
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    MIN_INDEX_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_MS_FIELD_NUMBER: _ClassVar[int]
    FAIL_IF_STALE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    consistency: Consistency
    min_index: int
    max_staleness_ms: int
    fail_if_stale: bool
    timeout_ms: int
    def __init__(self, consistency: _Optional[_Union[Consistency, str]] = ..., min_index: _Optional[int] = ..., max_staleness_ms: _Optional[int] = ..., fail_if_stale: _Optional[bool] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class Compare(_message.Message):
    __slots__ = ("key", "target", "op", "value", "number", "exists", "vclock")
    class Target(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        VALUE: _ClassVar[Compare.Target]
        VERSION: _ClassVar[Compare.Target]
        MOD_REVISION: _ClassVar[Compare.Target]
        CREATE_REVISION: _ClassVar[Compare.Target]
        EXISTS: _ClassVar[Compare.Target]
        VCLOCK: _ClassVar[Compare.Target]
    VALUE: Compare.Target
    VERSION: Compare.Target
    MOD_REVISION: Compare.Target
    CREATE_REVISION: Compare.Target
    EXISTS: Compare.Target
    VCLOCK: Compare.Target
    class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        EQUAL: _ClassVar[Compare.Op]
        NOT_EQUAL: _ClassVar[Compare.Op]
        GREATER: _ClassVar[Compare.Op]
        LESS: _ClassVar[Compare.Op]
    EQUAL: Compare.Op
    NOT_EQUAL: Compare.Op
    GREATER: Compare.Op
    LESS: Compare.Op
    KEY_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    VCLOCK_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    target: Compare.Target
    op: Compare.Op
    value: bytes
    number: int
    exists: bool
    vclock: VectorClock
    def __init__(self, key: _Optional[bytes] = ..., target: _Optional[_Union[Compare.Target, str]] = ..., op: _Optional[_Union[Compare.Op, str]] = ..., value: _Optional[bytes] = ..., number: _Optional[int] = ..., exists: _Optional[bool] = ..., vclock: _Optional[_Union[VectorClock, _Mapping]] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("key", "value", "session", "conditions", "context", "on_conflict", "lease")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ON_CONFLICT_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    session: Session
    conditions: _containers.RepeatedCompositeFieldContainer[Compare]
    context: VectorClock
    on_conflict: OnConflict
    lease: int
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., session: _Optional[_Union[Session, _Mapping]] = ..., conditions: _Optional[_Iterable[_Union[Compare, _Mapping]]] = ..., context: _Optional[_Union[VectorClock, _Mapping]] = ..., on_conflict: _Optional[_Union[OnConflict, str]] = ..., lease: _Optional[int] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("header", "kv")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KV_FIELD_NUMBER: _ClassVar[int]
    header: Header
    kv: KeyValue
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., kv: _Optional[_Union[KeyValue, _Mapping]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("key", "read", "revision")
    KEY_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    read: ReadOptions
    revision: int
    def __init__(self, key: _Optional[bytes] = ..., read: _Optional[_Union[ReadOptions, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("header", "found", "kv")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    KV_FIELD_NUMBER: _ClassVar[int]
    header: Header
    found: bool
    kv: KeyValue
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., found: _Optional[bool] = ..., kv: _Optional[_Union[KeyValue, _Mapping]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("key", "session", "conditions")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    session: Session
    conditions: _containers.RepeatedCompositeFieldContainer[Compare]
    def __init__(self, key: _Optional[bytes] = ..., session: _Optional[_Union[Session, _Mapping]] = ..., conditions: _Optional[_Iterable[_Union[Compare, _Mapping]]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("header", "deleted", "index")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    header: Header
    deleted: bool
    index: int
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., deleted: _Optional[bool] = ..., index: _Optional[int] = ...) -> None: ...

class RangeRequest(_message.Message):
    __slots__ = ("prefix", "start_after", "limit", "keys_only", "read", "revision")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    START_AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    KEYS_ONLY_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    prefix: bytes
    start_after: bytes
    limit: int
    keys_only: bool
    read: ReadOptions
    revision: int
    def __init__(self, prefix: _Optional[bytes] = ..., start_after: _Optional[bytes] = ..., limit: _Optional[int] = ..., keys_only: _Optional[bool] = ..., read: _Optional[_Union[ReadOptions, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class RangeResponse(_message.Message):
    __slots__ = ("header", "kvs", "more")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KVS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    header: Header
    kvs: _containers.RepeatedCompositeFieldContainer[KeyValue]
    more: bool
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., kvs: _Optional[_Iterable[_Union[KeyValue, _Mapping]]] = ..., more: _Optional[bool] = ...) -> None: ...

class TxnRequest(_message.Message):
    __slots__ = ("compares", "success", "failure", "session")
    COMPARES_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    compares: _containers.RepeatedCompositeFieldContainer[Compare]
    success: _containers.RepeatedCompositeFieldContainer[TxnOp]
    failure: _containers.RepeatedCompositeFieldContainer[TxnOp]
    session: Session
    def __init__(self, compares: _Optional[_Iterable[_Union[Compare, _Mapping]]] = ..., success: _Optional[_Iterable[_Union[TxnOp, _Mapping]]] = ..., failure: _Optional[_Iterable[_Union[TxnOp, _Mapping]]] = ..., session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class TxnOp(_message.Message):
    __slots__ = ("type", "key", "value", "delta", "lease")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        GET: _ClassVar[TxnOp.Type]
        PUT: _ClassVar[TxnOp.Type]
        DELETE: _ClassVar[TxnOp.Type]
        INCR: _ClassVar[TxnOp.Type]
    GET: TxnOp.Type
    PUT: TxnOp.Type
    DELETE: TxnOp.Type
    INCR: TxnOp.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    type: TxnOp.Type
    key: bytes
    value: bytes
    delta: int
    lease: int
    def __init__(self, type: _Optional[_Union[TxnOp.Type, str]] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., delta: _Optional[int] = ..., lease: _Optional[int] = ...) -> None: ...

class TxnOpResult(_message.Message):
    __slots__ = ("found", "kv", "value", "error")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    KV_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    found: bool
    kv: KeyValue
    value: int
    error: str
    def __init__(self, found: _Optional[bool] = ..., kv: _Optional[_Union[KeyValue, _Mapping]] = ..., value: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class TxnResponse(_message.Message):
    __slots__ = ("header", "succeeded", "results")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    header: Header
    succeeded: bool
    results: _containers.RepeatedCompositeFieldContainer[TxnOpResult]
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., succeeded: _Optional[bool] = ..., results: _Optional[_Iterable[_Union[TxnOpResult, _Mapping]]] = ...) -> None: ...

class CompactRequest(_message.Message):
    __slots__ = ("revision", "session")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    session: Session
    def __init__(self, revision: _Optional[int] = ..., session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class CompactResponse(_message.Message):
    __slots__ = ("header", "compacted")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    COMPACTED_FIELD_NUMBER: _ClassVar[int]
    header: Header
    compacted: int
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., compacted: _Optional[int] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("key", "range_end", "prefix", "start_revision", "prev_kv", "no_put", "no_delete", "progress_notify_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    RANGE_END_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    PREV_KV_FIELD_NUMBER: _ClassVar[int]
    NO_PUT_FIELD_NUMBER: _ClassVar[int]
    NO_DELETE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_NOTIFY_MS_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    range_end: bytes
    prefix: bool
    start_revision: int
    prev_kv: bool
    no_put: bool
    no_delete: bool
    progress_notify_ms: int
    def __init__(self, key: _Optional[bytes] = ..., range_end: _Optional[bytes] = ..., prefix: _Optional[bool] = ..., start_revision: _Optional[int] = ..., prev_kv: _Optional[bool] = ..., no_put: _Optional[bool] = ..., no_delete: _Optional[bool] = ..., progress_notify_ms: _Optional[int] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("type", "kv", "prev_kv")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PUT: _ClassVar[WatchEvent.Type]
        DELETE: _ClassVar[WatchEvent.Type]
    PUT: WatchEvent.Type
    DELETE: WatchEvent.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KV_FIELD_NUMBER: _ClassVar[int]
    PREV_KV_FIELD_NUMBER: _ClassVar[int]
    type: WatchEvent.Type
    kv: KeyValue
    prev_kv: KeyValue
    def __init__(self, type: _Optional[_Union[WatchEvent.Type, str]] = ..., kv: _Optional[_Union[KeyValue, _Mapping]] = ..., prev_kv: _Optional[_Union[KeyValue, _Mapping]] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("header", "events", "created", "canceled", "cancel_reason", "compact_revision")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CANCELED_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REASON_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    header: Header
    events: _containers.RepeatedCompositeFieldContainer[WatchEvent]
    created: bool
    canceled: bool
    cancel_reason: str
    compact_revision: int
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., events: _Optional[_Iterable[_Union[WatchEvent, _Mapping]]] = ..., created: _Optional[bool] = ..., canceled: _Optional[bool] = ..., cancel_reason: _Optional[str] = ..., compact_revision: _Optional[int] = ...) -> None: ...

class LeaseGrantRequest(_message.Message):
    __slots__ = ("ttl", "id", "session")
    TTL_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ttl: int
    id: int
    session: Session
    def __init__(self, ttl: _Optional[int] = ..., id: _Optional[int] = ..., session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class LeaseGrantResponse(_message.Message):
    __slots__ = ("header", "id", "ttl")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    header: Header
    id: int
    ttl: int
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., id: _Optional[int] = ..., ttl: _Optional[int] = ...) -> None: ...

class LeaseRevokeRequest(_message.Message):
    __slots__ = ("id", "session")
    ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    id: int
    session: Session
    def __init__(self, id: _Optional[int] = ..., session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class LeaseRevokeResponse(_message.Message):
    __slots__ = ("header", "deleted")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    header: Header
    deleted: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., deleted: _Optional[_Iterable[bytes]] = ...) -> None: ...

class LeaseKeepAliveRequest(_message.Message):
    __slots__ = ("ids", "min_index")
    IDS_FIELD_NUMBER: _ClassVar[int]
    MIN_INDEX_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    min_index: int
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., min_index: _Optional[int] = ...) -> None: ...

class LeaseKeepAliveResponse(_message.Message):
    __slots__ = ("header", "ids", "ttls")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    TTLS_FIELD_NUMBER: _ClassVar[int]
    header: Header
    ids: _containers.RepeatedScalarFieldContainer[int]
    ttls: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., ids: _Optional[_Iterable[int]] = ..., ttls: _Optional[_Iterable[int]] = ...) -> None: ...

class LeaseTimeToLiveRequest(_message.Message):
    __slots__ = ("id", "keys")
    ID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    id: int
    keys: bool
    def __init__(self, id: _Optional[int] = ..., keys: _Optional[bool] = ...) -> None: ...

class LeaseTimeToLiveResponse(_message.Message):
    __slots__ = ("header", "id", "ttl", "granted_ttl", "keys")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    GRANTED_TTL_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    header: Header
    id: int
    ttl: int
    granted_ttl: int
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., id: _Optional[int] = ..., ttl: _Optional[int] = ..., granted_ttl: _Optional[int] = ..., keys: _Optional[_Iterable[bytes]] = ...) -> None: ...

class LeaseListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LeaseListResponse(_message.Message):
    __slots__ = ("header", "ids")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    header: Header
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., ids: _Optional[_Iterable[int]] = ...) -> None: ...

class IncrRequest(_message.Message):
    __slots__ = ("key", "delta", "session")
    KEY_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    delta: int
    session: Session
    def __init__(self, key: _Optional[bytes] = ..., delta: _Optional[int] = ..., session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class IncrResponse(_message.Message):
    __slots__ = ("header", "value", "kv")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    KV_FIELD_NUMBER: _ClassVar[int]
    header: Header
    value: int
    kv: KeyValue
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., value: _Optional[int] = ..., kv: _Optional[_Union[KeyValue, _Mapping]] = ...) -> None: ...

class BatchRequest(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[BatchOp]
    def __init__(self, ops: _Optional[_Iterable[_Union[BatchOp, _Mapping]]] = ...) -> None: ...

class BatchOp(_message.Message):
    __slots__ = ("put", "get", "delete", "incr")
    PUT_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    INCR_FIELD_NUMBER: _ClassVar[int]
    put: PutRequest
    get: GetRequest
    delete: DeleteRequest
    incr: IncrRequest
    def __init__(self, put: _Optional[_Union[PutRequest, _Mapping]] = ..., get: _Optional[_Union[GetRequest, _Mapping]] = ..., delete: _Optional[_Union[DeleteRequest, _Mapping]] = ..., incr: _Optional[_Union[IncrRequest, _Mapping]] = ...) -> None: ...

class BatchResponse(_message.Message):
    __slots__ = ("header", "results")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    header: Header
    results: _containers.RepeatedCompositeFieldContainer[BatchResult]
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., results: _Optional[_Iterable[_Union[BatchResult, _Mapping]]] = ...) -> None: ...

class BatchResult(_message.Message):
    __slots__ = ("put", "get", "delete", "incr", "error")
    PUT_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    INCR_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    put: PutResponse
    get: GetResponse
    delete: DeleteResponse
    incr: IncrResponse
    error: BatchError
    def __init__(self, put: _Optional[_Union[PutResponse, _Mapping]] = ..., get: _Optional[_Union[GetResponse, _Mapping]] = ..., delete: _Optional[_Union[DeleteResponse, _Mapping]] = ..., incr: _Optional[_Union[IncrResponse, _Mapping]] = ..., error: _Optional[_Union[BatchError, _Mapping]] = ...) -> None: ...

class BatchError(_message.Message):
    __slots__ = ("code", "message", "metadata", "current")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    metadata: _containers.ScalarMap[str, str]
    current: bytes
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., current: _Optional[bytes] = ...) -> None: ...

class MemberListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MemberListResponse(_message.Message):
    __slots__ = ("header", "members", "cluster_id")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    header: Header
    members: _containers.RepeatedCompositeFieldContainer[Member]
    cluster_id: str
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., cluster_id: _Optional[str] = ...) -> None: ...

class MemberAddRequest(_message.Message):
    __slots__ = ("id", "peer_addr", "client_addr", "learner")
    ID_FIELD_NUMBER: _ClassVar[int]
    PEER_ADDR_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDR_FIELD_NUMBER: _ClassVar[int]
    LEARNER_FIELD_NUMBER: _ClassVar[int]
    id: int
    peer_addr: str
    client_addr: str
    learner: bool
    def __init__(self, id: _Optional[int] = ..., peer_addr: _Optional[str] = ..., client_addr: _Optional[str] = ..., learner: _Optional[bool] = ...) -> None: ...

class MemberPromoteRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class MemberRemoveRequest(_message.Message):
    __slots__ = ("id", "force")
    ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    id: int
    force: bool
    def __init__(self, id: _Optional[int] = ..., force: _Optional[bool] = ...) -> None: ...

class MemberChangeResponse(_message.Message):
    __slots__ = ("header", "members", "cluster_id")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    header: Header
    members: _containers.RepeatedCompositeFieldContainer[Member]
    cluster_id: str
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., cluster_id: _Optional[str] = ...) -> None: ...

class TransferLeaderRequest(_message.Message):
    __slots__ = ("to",)
    TO_FIELD_NUMBER: _ClassVar[int]
    to: int
    def __init__(self, to: _Optional[int] = ...) -> None: ...

class TransferLeaderResponse(_message.Message):
    __slots__ = ("header", "leader_id")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    header: Header
    leader_id: int
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., leader_id: _Optional[int] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotData(_message.Message):
    __slots__ = ("chunk", "total_bytes", "index")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    total_bytes: int
    index: int
    def __init__(self, chunk: _Optional[bytes] = ..., total_bytes: _Optional[int] = ..., index: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Member(_message.Message):
    __slots__ = ("id", "peer_addr", "client_addr", "learner")
    ID_FIELD_NUMBER: _ClassVar[int]
    PEER_ADDR_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDR_FIELD_NUMBER: _ClassVar[int]
    LEARNER_FIELD_NUMBER: _ClassVar[int]
    id: int
    peer_addr: str
    client_addr: str
    learner: bool
    def __init__(self, id: _Optional[int] = ..., peer_addr: _Optional[str] = ..., client_addr: _Optional[str] = ..., learner: _Optional[bool] = ...) -> None: ...

class PeerProgress(_message.Message):
    __slots__ = ("id", "match", "next", "state", "active")
    ID_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    id: int
    match: int
    next: int
    state: str
    active: bool
    def __init__(self, id: _Optional[int] = ..., match: _Optional[int] = ..., next: _Optional[int] = ..., state: _Optional[str] = ..., active: _Optional[bool] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("header", "role", "commit", "applied", "last_index", "cluster_id", "members", "progress", "vote", "version", "read_only", "read_only_reason", "removed", "revision", "corruption", "stats")
    class StatsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    LAST_INDEX_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    VOTE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_REASON_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CORRUPTION_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    header: Header
    role: str
    commit: int
    applied: int
    last_index: int
    cluster_id: str
    members: _containers.RepeatedCompositeFieldContainer[Member]
    progress: _containers.RepeatedCompositeFieldContainer[PeerProgress]
    vote: int
    version: str
    read_only: bool
    read_only_reason: str
    removed: bool
    revision: int
    corruption: str
    stats: _containers.ScalarMap[str, int]
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., role: _Optional[str] = ..., commit: _Optional[int] = ..., applied: _Optional[int] = ..., last_index: _Optional[int] = ..., cluster_id: _Optional[str] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., progress: _Optional[_Iterable[_Union[PeerProgress, _Mapping]]] = ..., vote: _Optional[int] = ..., version: _Optional[str] = ..., read_only: _Optional[bool] = ..., read_only_reason: _Optional[str] = ..., removed: _Optional[bool] = ..., revision: _Optional[int] = ..., corruption: _Optional[str] = ..., stats: _Optional[_Mapping[str, int]] = ...) -> None: ...

class CheckClusterRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MemberHash(_message.Message):
    __slots__ = ("id", "hash", "error", "mismatch")
    ID_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_FIELD_NUMBER: _ClassVar[int]
    id: int
    hash: str
    error: str
    mismatch: bool
    def __init__(self, id: _Optional[int] = ..., hash: _Optional[str] = ..., error: _Optional[str] = ..., mismatch: _Optional[bool] = ...) -> None: ...

class CheckClusterResponse(_message.Message):
    __slots__ = ("header", "index", "members", "majority_hash", "ok")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    MAJORITY_HASH_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    header: Header
    index: int
    members: _containers.RepeatedCompositeFieldContainer[MemberHash]
    majority_hash: str
    ok: bool
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., index: _Optional[int] = ..., members: _Optional[_Iterable[_Union[MemberHash, _Mapping]]] = ..., majority_hash: _Optional[str] = ..., ok: _Optional[bool] = ...) -> None: ...

class StateHashRequest(_message.Message):
    __slots__ = ("index",)
    INDEX_FIELD_NUMBER: _ClassVar[int]
    index: int
    def __init__(self, index: _Optional[int] = ...) -> None: ...

class StateHashResponse(_message.Message):
    __slots__ = ("header", "index", "hash")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    header: Header
    index: int
    hash: str
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., index: _Optional[int] = ..., hash: _Optional[str] = ...) -> None: ...
