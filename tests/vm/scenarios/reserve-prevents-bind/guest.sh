# The 5.10 crash, prevented: .0's group is held by a VM while a host driver tries to take .1, by
# autoprobe after its module loads and by a sysfs bind. Enforcing, the agent pinned .0 to vfio-pci
# and .1 to none at start, so neither reaches really_probe and the guest keeps running; with BPF
# LSM the bind write is also vetoed. In --dry-run (6.x only) nothing is pinned: the same sequence
# shows would_veto and the kernel's own refusal.
. /lib/vm/lib.sh
g=$(group_of $VM_DEV_FN0)
fact group $g
fact fn0_override "$(cat $(pcidev $VM_DEV_FN0)/driver_override)"
fact fn1_override "$(cat $(pcidev $VM_DEV_FN1)/driver_override)"
# Dry-run: the agent pinned nothing, so hand .0 to vfio-pci the way a device plugin would.
[ "$(driver_of $VM_DEV_FN0)" = vfio-pci ] || bind_vfio $VM_DEV_FN0
show $VM_DEV_FN0 $VM_DEV_FN1
hold $g $VM_DEV_FN0 || exit 1
step modprobe e1000
sleep 1
fact fn1_after_autoprobe $(driver_of $VM_DEV_FN1)
write $VM_DEV_FN1 /sys/bus/pci/drivers/e1000/bind
fact sysfs_bind $LAST_ERR
show $VM_DEV_FN0 $VM_DEV_FN1
fact fn1_driver $(driver_of $VM_DEV_FN1)
fact alive yes
