# A VM takes both functions of the two-function device: vfio-pci on .0 and .1, group claimed.
. /lib/vm/lib.sh
g=$(group_of $VM_DEV_FN0)
fact group $g
bind_vfio $VM_DEV_FN0
bind_vfio $VM_DEV_FN1
hold $g $VM_DEV_FN0 || exit 1
show $VM_DEV_FN0 $VM_DEV_FN1
sleep 2
release
