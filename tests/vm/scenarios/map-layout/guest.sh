# Upgrade and rollback across a map layout change (README, "Upgrade and rollback"). The boot's
# agent pins its state under maps-v<MAP_LAYOUT>; `--map-layout 3` (hidden, tests only) plays a
# version whose pinned maps differ. Same layout: the next agent adopts the state. Another
# layout: the agent refuses to start and replaces nothing, the old programs keep enforcing, and
# detach refuses without --force; once the group is released, detach --force and the other
# version starts fresh. Then the same back (the rollback).
. /lib/vm/lib.sh
root=/sys/fs/bpf/iommu-enforcer
layouts() { ls -d $root/maps-v* 2>/dev/null | sed 's|.*/||' | tr '\n' ' ' | sed 's/ $//'; }
# start_agent OUT [ARGS...]: an agent in the background until ready; AGENT is its pid, READY
# yes or no (not a command substitution: the agent must be this shell's child).
start_agent() {
	out=$1
	shift
	enforcer "$@" > $out.out 2> $out.err &
	AGENT=$!
	i=0
	while ! grep -q '"type":"ready"' $out.out && [ $i -lt 1200 ] && [ -e /proc/$AGENT ]; do sleep 0.1; i=$((i + 1)); done
	READY=no
	grep -q '"type":"ready"' $out.out && READY=yes
}
stop_agent() {
	kill -TERM $AGENT
	wait $AGENT
	sed "s/^/  $1: /" $2.err
}
g=$(group_of $VM_DEV_FN0)
fact group $g
bind_vfio $VM_DEV_FN0
i=0
while [ "$(cat $(pcidev $VM_DEV_FN1)/driver_override)" != vfio-pci ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
hold $g $VM_DEV_FN0 || exit 1
step modprobe e1000
boot=$(pidof enforcer)
kill -TERM $boot
i=0
while [ -e /proc/$boot ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
fact boot_layouts "$(layouts)"
links=$(ls $root/links | wc -l)
fact links $links

# The same layout (an upgrade or rollback that keeps MAP_LAYOUT): adopted.
start_agent /tmp/same
fact same_ready $READY
fact same_adopted $(grep -c "adopting the protection state" /tmp/same.err)
stop_agent same /tmp/same

# An upgrade to another layout while the group is in use: refused before anything is loaded.
enforcer --map-layout 3 > /tmp/up.out 2> /tmp/up.err
fact upgrade_rc $?
sed 's/^/  upgrade: /' /tmp/up.err
fact upgrade_names_layout $(grep -q "map layout v2" /tmp/up.err && echo yes || echo no)
fact upgrade_stdout_lines $(wc -l < /tmp/up.out)
fact links_after_refusal $(ls $root/links | wc -l)
fact layouts_after_refusal "$(layouts)"
# The old programs still enforce from their maps.
fact bind_after_refusal $(try write /sys/bus/pci/drivers/e1000/bind $VM_DEV_FN1)
# Its detach cannot read layout 2's use: refused without --force.
enforcer detach --map-layout 3 > /tmp/detach.out 2>&1
fact upgrade_detach_rc $?
sed 's/^/  detach: /' /tmp/detach.out
release
enforcer detach --map-layout 3 --force > /tmp/detach.out 2>&1
fact upgrade_detach_force_rc $?
sed 's/^/  detach --force: /' /tmp/detach.out
fact layouts_after_detach "$(layouts)"
start_agent /tmp/upgraded --map-layout 3
fact upgraded_ready $READY
fact upgraded_layouts "$(layouts)"
stop_agent upgraded /tmp/upgraded

# The rollback: the same refusal the other way, then a fresh start on layout 2.
enforcer > /tmp/back.out 2> /tmp/back.err
fact rollback_rc $?
sed 's/^/  rollback: /' /tmp/back.err
fact rollback_names_layout $(grep -q "map layout v3" /tmp/back.err && echo yes || echo no)
enforcer detach > /tmp/detach.out 2>&1
fact rollback_detach_rc $?
enforcer detach --force > /tmp/detach.out 2>&1
fact rollback_detach_force_rc $?
start_agent /tmp/rolled
fact rolled_back_ready $READY
fact rolled_back_layouts "$(layouts)"
stop_agent rolled-back /tmp/rolled
fact fn0_driver $(driver_of $VM_DEV_FN0)
fact alive yes
