#!/bin/sh
# Run a command in a network and mount namespace of its own: the e2e cluster's host
# namespace, bridges and pod namespaces (and their names under /run/netns, a private
# tmpfs here) exist only inside it, so they vanish with the run however it ends, and two
# runs on one machine never see each other. Loopback is the only interface at the start;
# the harness adds the rest.
set -e
mkdir -p /run/netns
mount -t tmpfs zse2e-netns /run/netns
ip link set lo up
exec "$@"
