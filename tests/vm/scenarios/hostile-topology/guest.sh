# A hostile root goes around the pins by removing what is above the group: the root port above
# the two-function device (remove, then rescan would re-create both functions without
# driver_override), its hotplug slot's power, and the resets. With .0 on vfio-pci and held, every
# one is vetoed in-kernel from the topology the agent loaded; the guest keeps running.
. /lib/vm/lib.sh
g=$(group_of $VM_DEV_FN0)
fact group $g
bind_vfio $VM_DEV_FN0
port=$(basename "$(dirname "$(readlink -f $(pcidev $VM_DEV_FN0))")")
fact port $port
# Descriptors opened read-write while the group is idle, used once a VM holds it: the device's
# BAR (a write and a writable mapping) and the port's config space (Secondary Bus Reset).
rm -f /tmp/poke.go
bar-poke $(pcidev $VM_DEV_FN0)/resource0 0 00 /tmp/poke.go > /tmp/poke.bar &
bar_pid=$!
bar-poke $(pcidev $port)/config 62 40 /tmp/poke.go > /tmp/poke.sbr &
sbr_pid=$!
i=0
while [ $i -lt 100 ] && ! { grep -q opened /tmp/poke.bar && grep -q opened /tmp/poke.sbr; }; do sleep 0.1; i=$((i + 1)); done
secondary() { dd if=$(pcidev $port)/config bs=1 skip=25 count=1 2>/dev/null | od -An -tu1 | tr -d ' '; }
fact secondary_before $(secondary)
hold $g $VM_DEV_FN0 || exit 1
step modprobe e1000
: > /tmp/poke.go
wait $bar_pid $sbr_pid
echo "+ pre-opened resource0: $(tail -1 /tmp/poke.bar); port config: $(tail -1 /tmp/poke.sbr)"
fact preopened_bar "$(tail -1 /tmp/poke.bar)"
fact preopened_config "$(tail -1 /tmp/poke.sbr)"
# Opened now: refused at the open (config write: Secondary Bus Reset, then bus numbers).
fact port_sbr "$(bar-poke $(pcidev $port)/config 62 40)"
fact port_bus_numbers "$(bar-poke $(pcidev $port)/config 25 09)"
fact fn0_bar "$(bar-poke $(pcidev $VM_DEV_FN0)/resource0 0 00)"
# Reads stay allowed (lspci -vvv).
fact port_config_read $(dd if=$(pcidev $port)/config bs=64 count=1 2>/dev/null | wc -c)
fact secondary_after $(secondary)
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
