# A VM takes a device the iommufd way (6.12-iommufd: CONFIG_IOMMUFD, CONFIG_VFIO_DEVICE_CDEV):
# both functions of the two-function device on vfio-pci (the group is viable), then .0's cdev
# /dev/vfio/devices/vfioN opened and bound to /dev/iommu (VFIO_DEVICE_BIND_IOMMUFD), which claims
# DMA ownership of the device, not of the group.
. /lib/vm/lib.sh
g=$(group_of $VM_DEV_FN0)
fact group $g
bind_vfio $VM_DEV_FN0
bind_vfio $VM_DEV_FN1
show $VM_DEV_FN0 $VM_DEV_FN1
cdev-bind $VM_DEV_FN0 > /tmp/cdev.out 2>/tmp/cdev.err
echo "+ cdev-bind $VM_DEV_FN0: $(tr '\n' ' ' < /tmp/cdev.out)$(cat /tmp/cdev.err)"
fact cdev "$(sed -n 's/^cdev //p' /tmp/cdev.out)"
fact open "$(sed -n 's/^open //p' /tmp/cdev.out | tr ' ' '_')"
fact bind "$(sed -n 's/^bind //p' /tmp/cdev.out | tr ' ' '_')"
sleep 2
