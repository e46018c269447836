# 6.x: with the group held by a VM, e1000 tries .1 by sysfs bind and then by autoprobe; the kernel
# refuses both with -EBUSY. The group stays held so the final audit sees .1 unbound in a user group.
. /lib/vm/lib.sh
g=$(group_of $VM_DEV_FN0)
fact group $g
bind_vfio $VM_DEV_FN0
# Keep e1000 off .1 while it loads, so that .1 is free when the group is claimed.
write none $(pcidev $VM_DEV_FN1)/driver_override
step modprobe e1000
hold $g $VM_DEV_FN0 || exit 1
clear_override $VM_DEV_FN1
write $VM_DEV_FN1 /sys/bus/pci/drivers/e1000/bind
fact sysfs_bind $LAST_ERR
step rmmod e1000
echo "reloading e1000: autoprobe tries $VM_DEV_FN1 again"
step modprobe e1000
show $VM_DEV_FN0 $VM_DEV_FN1
fact fn1_driver $(driver_of $VM_DEV_FN1)
