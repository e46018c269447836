# The iommufd way into a group that is not viable (6.12-iommufd): .1 of the two-function device
# on e1000, .0 on vfio-pci, and .0's cdev /dev/vfio/devices/vfioN opened and bound to /dev/iommu.
# Enforcing, the open is vetoed (EPERM) before VFIO sees it; in --dry-run it goes through with a
# would_veto event, and the kernel itself refuses the bind's DMA-ownership claim of the device
# (iommu_device_claim_dma_owner: EPERM, the group is in use by a host driver).
. /lib/vm/lib.sh
g=$(group_of $VM_DEV_FN0)
fact group $g
step modprobe e1000
sleep 1
unbind $VM_DEV_FN0
bind_vfio $VM_DEV_FN0
show $VM_DEV_FN0 $VM_DEV_FN1
fact fn1_driver $(driver_of $VM_DEV_FN1)
# The group has been non-viable for a while when a VM asks for it; give the agent its pass.
sleep 2
cdev-bind $VM_DEV_FN0 > /tmp/cdev.out 2>/tmp/cdev.err
echo "+ cdev-bind $VM_DEV_FN0: $(tr '\n' ' ' < /tmp/cdev.out)$(cat /tmp/cdev.err)"
fact cdev "$(sed -n 's/^cdev //p' /tmp/cdev.out)"
fact open "$(sed -n 's/^open //p' /tmp/cdev.out | tr ' ' '_')"
fact bind "$(sed -n 's/^bind //p' /tmp/cdev.out | tr ' ' '_')"
sleep 2
