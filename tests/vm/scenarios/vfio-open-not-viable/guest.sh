# A VM asks for a group whose companion function is on a host driver: the group is not viable.
# Enforcing, the open of /dev/vfio/N is vetoed (EPERM) before VFIO sees it; in --dry-run it goes
# through with a would_veto event, and the kernel refuses the claim itself (6.x: EPERM).
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
if hold $g; then
	fact hold ok
	release
else
	fact hold "$(tr '\n' ' ' < /tmp/holder.$g.out | tr ' ' '_')"
fi
