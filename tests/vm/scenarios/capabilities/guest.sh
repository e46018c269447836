# The agent's `capabilities` line must match the kernel: nothing to do here but let it start.
. /lib/vm/lib.sh
fact lsm "$(cat /sys/kernel/security/lsm)"
