# kill -9 of the agent (a crash, an OOM kill, a DaemonSet rollout) leaves the pinned programs and
# maps in place: every protected write still fails while no agent runs, and the next agent adopts
# the pinned state instead of starting blind.
. /lib/vm/lib.sh
g=$(group_of $VM_DEV_FN0)
fact group $g
bind_vfio $VM_DEV_FN0
# The agent pins the companion when vfio-pci binds .0. Without BPF LSM that pin is the only
# guard, so wait for it as a VM start would (seconds later in the field); its latency is a fact.
i=0
while [ "$(cat $(pcidev $VM_DEV_FN1)/driver_override)" != vfio-pci ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
fact pin_after_ms $((i * 100))
hold $g $VM_DEV_FN0 || exit 1
step modprobe e1000
unbind $VM_DEV_FN1
sleep 2
# Killed in the steady state: the write-time check (attached for a few seconds after the writes
# above) has gone back to standby, so nothing that outlives the agent judges a write.
i=0
while [ -e /sys/fs/bpf/iommu-enforcer/links/file_permission ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
fact write_check_settled_ds $i
agent=$(pidof enforcer)
kill -KILL $agent
i=0
while [ -e /proc/$agent ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
fact agent_killed $([ -e /proc/$agent ] && echo no || echo yes)
fact pinned_links $(ls /sys/fs/bpf/iommu-enforcer/links | wc -l)
# Without BPF LSM (5.10 booted without lsm=...,bpf) nothing can refuse root's write to
# driver_override, and a bind after it would BUG() 5.10: there, only what the pins hold is tried.
if grep -q bpf /sys/kernel/security/lsm; then
	fact override_without_agent $(try write $(pcidev $VM_DEV_FN1)/driver_override e1000)
fi
fact bind_without_agent $(try write /sys/bus/pci/drivers/e1000/bind $VM_DEV_FN1)
# Unvetoed, unbinding a device the holder uses would block until the holder lets go.
if grep -q bpf /sys/kernel/security/lsm; then
	fact unbind_without_agent $(try write /sys/bus/pci/drivers/vfio-pci/unbind $VM_DEV_FN0)
fi
# A node clean-up while no agent runs: the pins and their bpffs hold the only references to
# the programs and the state. With BPF LSM they guard themselves while the group is in use.
if grep -q bpf /sys/kernel/security/lsm; then
	pin=$(ls /sys/fs/bpf/iommu-enforcer/links | head -1)
	fact pin_rm "$(rm /sys/fs/bpf/iommu-enforcer/links/$pin 2>&1 >/dev/null | errname_of)"
	fact pin_mv "$(mv /sys/fs/bpf/iommu-enforcer/links/$pin /sys/fs/bpf/moved 2>&1 >/dev/null | errname_of)"
	fact map_rm "$(rm /sys/fs/bpf/iommu-enforcer/maps-v*/GROUPS 2>&1 >/dev/null | errname_of)"
	fact bpffs_umount "$(umount /sys/fs/bpf 2>&1 >/dev/null | errname_of)"
	enforcer detach > /tmp/detach.out 2>&1
	fact detach_in_use $?
	sed 's/^/  detach: /' /tmp/detach.out
	fact links_after_cleanup $(ls /sys/fs/bpf/iommu-enforcer/links | wc -l)
	fact bind_after_cleanup $(try write /sys/bus/pci/drivers/e1000/bind $VM_DEV_FN1)
fi
fact fn1_without_agent $(driver_of $VM_DEV_FN1)
enforcer > /tmp/second.out 2> /tmp/second.err &
second=$!
i=0
while ! grep -q '"type":"ready"' /tmp/second.out && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
fact second_ready $(grep -q '"type":"ready"' /tmp/second.out && echo yes || echo no)
fact second_adopted $(grep -c "adopting the protection state" /tmp/second.err)
if grep -q bpf /sys/kernel/security/lsm; then
	fact override_second_agent $(try write $(pcidev $VM_DEV_FN1)/driver_override e1000)
fi
sleep 1
kill -TERM $second
wait $second
sed 's/^/  second agent: /' /tmp/second.out /tmp/second.err
fact second_vetoes $(grep '"kind":"veto"' /tmp/second.out | grep -c '"action":"vetoed"')
# The records the hooks made while no agent ran wait in the pinned ring for the next agent.
fact second_pin_vetoes $(grep '"kind":"veto"' /tmp/second.out | grep -c '"rule":"protected_pins"')
fact fn0_driver $(driver_of $VM_DEV_FN0)
fact fn1_driver $(driver_of $VM_DEV_FN1)
fact alive yes
