# Every write path to every protected file, by an untrusted process: denied with EPERM while the
# agent's own pins went through. Unprotected targets and the policy's trusted writer pass.
. /lib/vm/lib.sh
g=$(group_of $VM_DEV_FN0)
fact group $g
fact fn0_driver $(driver_of $VM_DEV_FN0)
fact fn1_override "$(cat $(pcidev $VM_DEV_FN1)/driver_override)"
hold $g $VM_DEV_FN0 || exit 1
step modprobe e1000
# The agent watches a new driver's bind/unbind/new_id from its next housekeeping pass.
sleep 3
for mode in write pwrite writev io_uring; do
	fact ${mode}_driver_override $(try $mode $(pcidev $VM_DEV_FN1)/driver_override e1000)
	fact ${mode}_bind $(try $mode /sys/bus/pci/drivers/e1000/bind $VM_DEV_FN1)
	fact ${mode}_unbind $(try $mode /sys/bus/pci/drivers/vfio-pci/unbind $VM_DEV_FN0)
	fact ${mode}_new_id $(try $mode /sys/bus/pci/drivers/e1000/new_id "8086 100e")
	fact ${mode}_drivers_probe $(try $mode /sys/bus/pci/drivers_probe $VM_DEV_FN1)
	fact ${mode}_remove $(try $mode $(pcidev $VM_DEV_FN1)/remove 1)
done
# Two iovecs: the hook cannot read the address whole, so it fails closed.
fact split_bind $(try writev-split /sys/bus/pci/drivers/e1000/bind $VM_DEV_FN1)
# A device of an unprotected group is not the enforcer's business.
unbind $VM_DEV_SWITCH
fact unprotected_bind $(try write /sys/bus/pci/drivers/e1000/bind $VM_DEV_SWITCH)
# The policy trusts this executable, but nobody may change a group in use ...
fact trusted_override_in_use $(r=$(trusted-sysfs-write write $(pcidev $VM_DEV_FN1)/driver_override none); echo "$r" | tr ' ' '_')
# ... and it may change the reserved group once it is idle.
release
fact trusted_override $(r=$(trusted-sysfs-write write $(pcidev $VM_DEV_FN1)/driver_override none); echo "$r" | tr ' ' '_')
show $VM_DEV_FN0 $VM_DEV_FN1
fact fn0_driver_after $(driver_of $VM_DEV_FN0)
fact fn1_driver_after $(driver_of $VM_DEV_FN1)
