"""Jepsen-style testing of a real cluster: histories recorded through the official client
(`workloads`, `history`), faults on a seeded schedule (`nemesis`, over `tests/netproxy`),
and the checkers that judge them (`linearizability` for registers, `checkers` for the bank
and set invariants). `runner` ties one run together; `test_cluster` runs the bounded form
in `make test` and the long form with JEPSEN_SEEDS / JEPSEN_MIXES / JEPSEN_SECONDS.

Known gaps: partitions cut replica-to-replica (Raft) links only; a follower still relays
client requests to the leader's client port directly. A replica re-added by the `member`
fault is reached at its peer port directly, not through a proxy. Clock skew (libfaketime)
and disk faults (FUSE) are not injected yet.
"""
