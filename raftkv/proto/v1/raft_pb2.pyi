from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class PeerFrame(_message.Message):
    __slots__ = ("to", "cluster_id", "messages")
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    to: int
    cluster_id: str
    messages: bytes
    def __init__(self, to: _Optional[int] = ..., cluster_id: _Optional[str] = ..., messages: _Optional[bytes] = ..., **kwargs) -> None: ...

class StreamReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
