"""Generated protobuf / gRPC code for etcd's v3 API (packages etcdserverpb, mvccpb, authpb), served by raftkv.

Do not edit raftkv/proto/etcd/api/*: the schema is proto/raftkv/proto/etcd/api/; run ``scripts/gen-proto`` after
changing it (tests/test_proto.py checks the committed code is up to date).
"""
