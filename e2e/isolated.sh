#!/bin/sh
# Run a command in a network and mount namespace of its own: the e2e cluster's host
# namespace, bridges and pod namespaces (and their names under /run/netns, a private
# tmpfs here) exist only inside it, so they vanish with the run however it ends, and two
# runs on one machine never see each other. Loopback is the only interface at the start;
# the harness adds the rest.
#
# The mount tree is made shared again inside (unshare --propagation private cut it from
# the host's first): `ip netns exec` gives each process a mount namespace of its own, a
# slave copy, and only with propagation does an unmount here (the Jepsen suite's power
# cut of a replica's FUSE disk) reach the copies held by the other replicas' processes;
# otherwise the FUSE daemon never sees its unmount while any replica still runs.
set -e
mount --make-rshared /
mkdir -p /run/netns
mount -t tmpfs zse2e-netns /run/netns
ip link set lo up
exec "$@"
