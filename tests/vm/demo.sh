# Demonstration for `cargo xtask vm`: the GPU + audio case on the two-function device.
# vfio-pci takes .0, a "VM" holds the group, then the kernel driver of .1 tries to attach.
. /lib/vm/lib.sh
dev=$VM_DEV_FN0
companion=$VM_DEV_FN1
g=$(group_of $dev)
echo "two-function device: $dev and $companion, IOMMU group $g:" $(ls /sys/kernel/iommu_groups/$g/devices)

bind_vfio $dev
hold $g $dev || exit 1
case "$(uname -r)" in
5.*)
	# Before 5.19 the kernel BUGs in the VFIO group notifier here (docs/design.md section 1).
	echo "kernel $(uname -r): not binding e1000 to $companion (it would crash this kernel)"
	;;
*)
	# Enforcing, the agent pinned the group's members when the group was opened: e1000 never
	# reaches $companion (ENODEV). With --dry-run the kernel itself refuses it (EBUSY, no dmesg).
	echo "loading e1000: autoprobe tries $companion"
	step modprobe e1000
	write $companion /sys/bus/pci/drivers/e1000/bind
	;;
esac
show $dev $companion
sleep 1
release
# Enforcing, these may be vetoed (EPERM) while the agent still protects the group.
unbind $dev
clear_override $dev
true
