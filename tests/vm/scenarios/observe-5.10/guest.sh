# 5.10: binds and VFIO opens are observed (no DMA-ownership functions on this kernel). Nothing here
# binds a kernel driver into a held group: that is the BUG_ON this kernel crashes on.
. /lib/vm/lib.sh
dev=$VM_DEV_SWITCH
g=$(group_of $dev)
fact group $g
fact device $dev
echo "group $g:" $(ls /sys/kernel/iommu_groups/$g/devices)
bind_vfio $dev
hold $g $dev || exit 1
sleep 1
release
unbind $dev
clear_override $dev
step modprobe e1000
show $dev $VM_DEV_FN0 $VM_DEV_FN1
