# 6.x: e1000 holds .1 first, then a VM tries to claim the group: the kernel refuses with -EPERM.
. /lib/vm/lib.sh
g=$(group_of $VM_DEV_FN0)
fact group $g
bind_vfio $VM_DEV_FN0
step modprobe e1000
show $VM_DEV_FN0 $VM_DEV_FN1
fact fn1_driver $(driver_of $VM_DEV_FN1)
if hold $g $VM_DEV_FN0; then
	echo "UNEXPECTED: the claim succeeded"
	release
fi
