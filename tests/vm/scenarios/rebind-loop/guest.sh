# Unbind and rebind e1000 on the device below the switch 20 times: every transition must be seen.
. /lib/vm/lib.sh
dev=$VM_DEV_SWITCH
step modprobe e1000
binds=0
unbinds=0
[ "$(driver_of $dev)" = e1000 ] && binds=1
i=0
while [ $i -lt 20 ]; do
	write $dev /sys/bus/pci/drivers/e1000/unbind > /dev/null && unbinds=$((unbinds + 1))
	write $dev /sys/bus/pci/drivers/e1000/bind > /dev/null && binds=$((binds + 1))
	i=$((i + 1))
done
show $dev
fact device $dev
fact binds $binds
fact unbinds $unbinds
