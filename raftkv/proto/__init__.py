"""Generated protobuf / gRPC code for raftkv's client (kv.proto) and peer (raft.proto) APIs.

Do not edit raftkv/proto/v1/*: run ``scripts/gen-proto`` after changing proto/; tests/test_proto.py checks that the
committed code matches what the pinned grpcio-tools generates from proto/.
"""
