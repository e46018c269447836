# The agent's own faults must not lift a veto (issue 19, items 3 and 4). An agent whose stdout
# is a pipe nobody reads and whose soft RLIMIT_NOFILE starts at 256 is flooded with 3,000 idle
# connections on its metrics port, twice: while the group is held (the hotplug slot's power,
# the root port's remove and the companion's driver_override must stay refused), then, handed
# back with the companion on e1000, while it is not viable (the open of /dev/vfio/N must stay
# refused). /healthz and /readyz must answer during each flood, every refusal hold after it,
# and the agent's descriptors stay within the connection cap.
. /lib/vm/lib.sh
g=$(group_of $VM_DEV_FN0)
fact group $g
addr=127.0.0.1:9477
bind_vfio $VM_DEV_FN0
# Replace the node's agent by one with a stalled stdout and a low soft descriptor limit.
first=$(pidof enforcer)
kill -TERM $first
i=0
while [ -e /proc/$first ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mkfifo /tmp/stall
# Opened for reading and writing and never read: a log shipper that stopped.
exec 3<> /tmp/stall
# shellcheck disable=SC3045 # busybox ash has ulimit -S
(ulimit -S -n 256; exec enforcer --metrics-addr $addr > /tmp/stall 2> /tmp/faults.err) &
agent=$!
if conn-flood --ready $addr 120; then fact ready yes; else fact ready no; fi
fact nofile_raised $(grep -c "RLIMIT_NOFILE raised from 256" /tmp/faults.err)
fact fds_base $(ls /proc/$agent/fd | wc -l)

flood() {
	conn-flood $addr 3000 8 > /tmp/flood.$1 &
	flood_pid=$!
	sleep 3
	fact fds_$1 $(ls /proc/$agent/fd | wc -l)
}
flood_end() {
	wait $flood_pid
	echo "+ conn-flood $1: $(cat /tmp/flood.$1)"
	fact probes_failed_$1 $(sed 's/.*"probes_failed": \([0-9]*\).*/\1/' /tmp/flood.$1)
	fact probe_max_ms_$1 $(sed 's/.*"probe_max_ms": \([0-9]*\).*/\1/' /tmp/flood.$1)
	fact probes_ok_$1 $(sed 's/.*"probes_ok": \([0-9]*\).*/\1/' /tmp/flood.$1)
}

# Held: .0 on vfio-pci and open, .1 unbound (pinned by the agent).
hold $g $VM_DEV_FN0 || exit 1
step modprobe e1000
port=$(basename "$(dirname "$(readlink -f $(pcidev $VM_DEV_FN0))")")
slot=
for s in /sys/bus/pci/slots/*; do
	[ -e $s/address ] && [ "$(cat $s/address)" = "${VM_DEV_FN0%.*}" ] && slot=$s
done
echo "+ port $port, slot ${slot:-none}"
held_writes() {
	if [ -n "$slot" ]; then fact slot_power_$1 $(try write $slot/power 0); else fact slot_power_$1 no_slot; fi
	fact port_remove_$1 $(try write $(pcidev $port)/remove 1)
	fact override_$1 $(try write $(pcidev $VM_DEV_FN1)/driver_override e1000)
}
flood held
held_writes during
flood_end held
sleep 1
held_writes after
release
sleep 1

# Handed back, .1 on e1000: the group is not viable, a VM's open of it is refused.
write "" $(pcidev $VM_DEV_FN1)/driver_override
write $VM_DEV_FN1 /sys/bus/pci/drivers_probe
show $VM_DEV_FN0 $VM_DEV_FN1
fact fn1_host $(driver_of $VM_DEV_FN1)
sleep 1
# Output the stalled stdout cannot take: vetoed opens, each a veto event.
open-flood /dev/vfio/$g 6000 > /tmp/opens.out
echo "+ open-flood: $(cat /tmp/opens.out)"
vfio_open() {
	if hold $g >&2; then
		release >&2
		echo ok
	else
		echo refused
	fi
}
flood open
fact vfio_open_during $(vfio_open)
flood_end open
sleep 1
fact vfio_open_after $(vfio_open)

# stdout read again: what the queue kept comes out, then the shutdown line.
cat /tmp/stall > /tmp/faults.out &
reader=$!
sleep 2
kill -TERM $agent
wait $agent
exec 3>&-
sleep 1
kill $reader 2>/dev/null
fact shutdown_printed $(grep -c '"type":"shutdown"' /tmp/faults.out)
fact lines_after_stall $(wc -l < /tmp/faults.out)
fact dropped_said $(grep -c "lines dropped while stdout was not read" /tmp/faults.err)
fact read_failures_logged $(grep -c "keeping the last known state" /tmp/faults.err)
grep -v "DEBUG" /tmp/faults.err | tail -n 30 | sed 's/^/  agent: /'
fact fn0_driver $(driver_of $VM_DEV_FN0)
fact alive yes
