"""Fault-injection tooling: recording client histories and checking them for linearizability."""
