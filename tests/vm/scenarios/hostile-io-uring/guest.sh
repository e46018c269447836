# Writes whose data the hook would read from another syscall's registers: an io_uring WRITE
# linked to a POLL_ADD on a pipe runs at the exit of a harmless write(2) into the pipe (or in an
# io-wq worker), so the registers show the decoy. The hook trusts only write(2)/writev(2) on the
# very file and fails closed otherwise; new_id of a kernel driver is parsed as the kernel does
# (PCI_ANY_ID, zero padding) and refused while anything is protected.
. /lib/vm/lib.sh
g=$(group_of $VM_DEV_FN0)
fact group $g
bind_vfio $VM_DEV_FN0
hold $g $VM_DEV_FN0 || exit 1
step modprobe e1000
unbind $VM_DEV_FN1
linked() {
	r=$(uring-linked "$@")
	echo "+ uring-linked $*: $r" >&2
	echo "$r" | tail -n 1 | tr ' ' '_'
}
decoy=0000:00:00.0
fact unbind_linked $(linked /sys/bus/pci/drivers/vfio-pci/unbind $VM_DEV_FN0 $decoy)
fact unbind_linked_fixed $(linked --fixed /sys/bus/pci/drivers/vfio-pci/unbind $VM_DEV_FN0 $decoy)
fact bind_linked $(linked /sys/bus/pci/drivers/e1000/bind $VM_DEV_FN1 $decoy)
fact new_id_linked $(linked /sys/bus/pci/drivers/e1000/new_id "8086 100e" "0 0")
fact new_id_any $(try write /sys/bus/pci/drivers/e1000/new_id "ffffffff ffffffff")
fact new_id_padded $(try write /sys/bus/pci/drivers/e1000/new_id "00008086 0000100e")
# A thread rewrites the buffer between the hook's read and the kernel's copy: an allowed
# driver_override (vfio-pci, what the agent's pin says) against e1000, and a new_id the kernel
# would refuse (one field) against one it takes. Decided on effects: nothing gets through.
race() {
	r=$(buffer-race "$@")
	echo "+ buffer-race $*: $r" >&2
	echo "$r" | sed 's/.* ok=\([0-9]*\).*/\1/'
}
fact race_override_ok $(race $(pcidev $VM_DEV_FN1)/driver_override vfio-pci e1000 300)
fact race_new_id_ok $(race /sys/bus/pci/drivers/e1000/new_id "8086" "8086 10d3" 300)
fact fn1_override_after_race "$(cat $(pcidev $VM_DEV_FN1)/driver_override)"
show $VM_DEV_FN0 $VM_DEV_FN1
fact fn0_driver $(driver_of $VM_DEV_FN0)
fact fn1_driver $(driver_of $VM_DEV_FN1)
fact alive yes
