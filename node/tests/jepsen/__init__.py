"""Jepsen-style testing of a real cluster: histories recorded through the official client
(`workloads`, `history`), faults on a seeded schedule (`nemesis`, over `netns` — a
network namespace per replica, nftables rules in a host namespace — or, where namespaces
are unavailable, `tests/netproxy` on loopback; libfaketime (`faketime`) for wall-clock
skew), and the checkers that judge them (`linearizability` for registers, `elle` for list-append
transactions, `checkers` for the bank and set invariants, eventual reads and commit
timestamps). `runner` ties one run together and writes its folder (history.jsonl,
timeline.jsonl, verdict.json); `test_cluster` runs the bounded form in `make test` (a
fresh seed each run, printed), `chaos` the long form and replays (`make chaos SEED=...
TIME=... MIX=... REPLICAS=...`).

Covered: three- and five-replica clusters; kill -9 / SIGTERM and restart, pause,
partitions (isolate, one-way, bridge, majority/minority), packet loss (10/30/60 % of one
replica's packets, both ways), delay (50/200/500 ms on every chunk of one replica's Raft
links), leadership transfer, membership change (remove, wipe, re-add as learner,
promote), wall-clock skew and jumps (±2 h, strobes) on one replica with leadership moved
onto and off it; power loss (`power`, the `disk` mix: kill -9 plus every byte not fsynced
dropped by `powerfs`, a FUSE file system) on one replica at a time; strong and eventual
reads; linearizable registers, serializable bank, unique-insert sets, list-append
transactions checked for G0, G1a, G1b, G1c, G-single, G2 (and their real-time forms:
strict serializability for strong transactions), lost appends, invented data; commit
timestamps ordered by real time and by each key's version order. As root (`make test`,
`make chaos` run the suite inside e2e/isolated.sh) every replica has its own namespace
and address and a partition drops packets between addresses: it cuts Raft links,
followers' relays of client requests to the leader and (isolate; majority/minority, with
the clients on one side) the test's clients; test_network.py shows a cut follower can no
longer relay. The bounded suite runs crash, partition, clock and all on three replicas
and one short five-replica `split` run (majority/minority, isolate).

Known gaps: without root (or `ip`/`nft`) the suite falls back to loopback proxies: a
partition then cuts Raft links only (followers still relay to the leader, clients reach
every replica) and `loss` is skipped. Delay is added by a TCP proxy on the Raft links
(one process in each replica's namespace), not to client requests or relays, and is per
chunk, not per packet; loss is nftables `numgen` on whole packets, so TCP retransmits
hide it except as latency. The admin port stays reachable from the test process in every
partition (the harness's control channel). A replica re-added by the `member` fault is
reached at its peer address directly, not through its proxy (no delay on it). Clock skew
moves CLOCK_REALTIME through libfaketime 0.9.12, built by the harness (faketime.py;
Debian's 0.9.10 broke Python's sleep), not the monotonic clock, and a jump shows within
two seconds (the preload's file cache); without `make faketime` the clockshim/ fallback
moves Python's time.time only. The disk faults (`disk` mix:
power, full, eio) act on powerfs, one replica at a time: a full disk is ENOSPC from the
file system, not a filled device (test_disk_full.py fills a real 16 MiB tmpfs on one
node), and a failed fsync fails every later one too until the fault ends (no single
transient EIO; the node stops at the first anyway). powerfs drops unsynced file data but
keeps every name change (create, rename, unlink). test_power_loss.py shows that a node
acknowledging before fsync loses acknowledged writes under it. read_time reads are not in
the workloads. A seed fixes the fault schedule and the workers' choices, not the thread
interleaving.
"""
