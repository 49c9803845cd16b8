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
#
# In a PID namespace of its own (`make e2e`: unshare --pid --fork --mount-proc), this
# script is its init (pid 1): it runs the command as a child, then checks that nothing
# else is left in the namespace. A survivor fails the run (exit 70) after being listed
# and killed; the kernel would kill it anyway when this script exits, so a crashed or
# killed harness cannot leave processes behind either.
set -e
mount --make-rshared /
mkdir -p /run/netns
mount -t tmpfs zse2e-netns /run/netns
ip link set lo up
if [ "$$" -ne 1 ]; then
	exec "$@"
fi
status=0
"$@" || status=$?
survivors=""
for dir in /proc/[0-9]*; do
	pid=${dir#/proc/}
	[ "$pid" = 1 ] || [ "$pid" = "$$" ] && continue
	[ -r "$dir/cmdline" ] || continue
	cmd=$(tr '\0' ' ' < "$dir/cmdline" 2>/dev/null || true)
	[ -n "$cmd" ] || continue  # a zombie, or gone meanwhile
	survivors="$survivors
  $pid: $cmd"
done
if [ -n "$survivors" ]; then
	echo "isolated.sh: processes of the run outlived it:$survivors" >&2
	kill -9 -1 2>/dev/null || true
	[ "$status" -ne 0 ] || status=70
fi
exit "$status"
