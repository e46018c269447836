# A hostile root goes around the pins by removing what is above the group: the root port above
# the two-function device (remove, then rescan would re-create both functions without
# driver_override), its hotplug slot's power, and the resets. With .0 on vfio-pci and held, every
# one is vetoed in-kernel from the topology the agent loaded; the guest keeps running.
. /lib/vm/lib.sh
g=$(group_of $VM_DEV_FN0)
fact group $g
bind_vfio $VM_DEV_FN0
hold $g $VM_DEV_FN0 || exit 1
step modprobe e1000
port=$(basename "$(dirname "$(readlink -f $(pcidev $VM_DEV_FN0))")")
fact port $port
fact port_remove $(try write $(pcidev $port)/remove 1)
slot=
for s in /sys/bus/pci/slots/*; do
	[ -e $s/address ] && [ "$(cat $s/address)" = "${VM_DEV_FN0%.*}" ] && slot=$s
done
echo "+ slot of ${VM_DEV_FN0%.*}: ${slot:-none}"
if [ -n "$slot" ]; then fact slot_power $(try write $slot/power 0); else fact slot_power no_slot; fi
if [ -e $(pcidev $VM_DEV_FN0)/reset ]; then fact fn0_reset $(try write $(pcidev $VM_DEV_FN0)/reset 1); else fact fn0_reset absent; fi
if [ -e $(pcidev $port)/reset_subordinate ]; then
	fact port_reset_subordinate $(try write $(pcidev $port)/reset_subordinate 1)
else
	fact port_reset_subordinate absent
fi
# A device of an unprotected group is still the operator's to remove.
fact alone_remove $(try write $(pcidev $VM_DEV_ALONE)/remove 1)
write 1 /sys/bus/pci/rescan
sleep 1
show $VM_DEV_FN0 $VM_DEV_FN1
fact fn0_driver $(driver_of $VM_DEV_FN0)
fact fn1_driver $(driver_of $VM_DEV_FN1)
fact alive yes
