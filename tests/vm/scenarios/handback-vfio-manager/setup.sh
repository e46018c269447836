# Sourced by /init before the agent starts: the cgroup2 tree the kubelet's cgroups live in (the
# agent resolves a trusted container's cgroup there). No runtime state yet: containerd's state
# directory appears later, as when the runtime starts after the agent.
CG=/sys/fs/cgroup
grep -q "^[^ ]* $CG cgroup2 " /proc/mounts || mount -t cgroup2 cgroup2 $CG
grep "cgroup2" /proc/mounts
