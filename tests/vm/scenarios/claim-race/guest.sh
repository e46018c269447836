# The window between a claim and the agent's next pass: vfio-pci takes .0 and a VM claims the
# group while a host driver binds .1 in the same instant. The group was protected in the kernel
# when vfio-pci bound .0, so the very first bind fails (EPERM), and 5.10 does not BUG.
. /lib/vm/lib.sh
g=$(group_of $VM_DEV_FN0)
fact group $g
step modprobe e1000
unbind $VM_DEV_FN0
unbind $VM_DEV_FN1
write vfio-pci $(pcidev $VM_DEV_FN0)/driver_override
write $VM_DEV_FN0 /sys/bus/pci/drivers_probe
r=$(BIND_RACE_HOLD=1 bind-race $g $VM_DEV_FN0 $VM_DEV_FN1 e1000)
echo "$r" | sed 's/^/  bind-race: /'
first=$(echo "$r" | grep '^first_bind')
fact first_bind_errno $(echo "$first" | sed -n 's/^first_bind error \([A-Z]*\) .*/\1/p')
fact first_bind_us $(echo "$first" | sed -n 's/.* after \([0-9]*\) us$/\1/p')
show $VM_DEV_FN0 $VM_DEV_FN1
fact fn1_driver $(driver_of $VM_DEV_FN1)
fact alive yes
