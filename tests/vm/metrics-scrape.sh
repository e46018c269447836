# Feeds every dashboard panel while a real Prometheus on the host scrapes the agent through a
# forwarded port: a group held by a VM (owner user), the kernel refusing a host driver next to it
# (a kernel refusal, EBUSY), and a bind of a reserved device (a veto), repeated every 2 s until the
# host says it is done (a connection on port 9999) or 150 s have passed.
. /lib/vm/lib.sh
# The network: /init loads no NIC driver (virtio-pci is a module before 6.12).
modprobe virtio_pci 2>/dev/null
step modprobe virtio_net
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0
fact network $(ip -o addr show eth0 | grep -q 10.0.2.15 && echo up || echo down)
g=$(group_of $VM_DEV_FN0)
fact group $g
bind_vfio $VM_DEV_FN0
write none $(pcidev $VM_DEV_FN1)/driver_override
step modprobe e1000
hold $g $VM_DEV_FN0 || exit 1
clear_override $VM_DEV_FN1
nc -l -p 9999 > /tmp/host-done &
i=0
while [ ! -s /tmp/host-done ] && [ $i -lt 75 ]; do
	write $VM_DEV_FN1 /sys/bus/pci/drivers/e1000/bind > /dev/null
	fact refusal_$i $LAST_ERR
	write $VM_DEV_SWITCH /sys/bus/pci/drivers/e1000/bind > /dev/null
	fact veto_$i $LAST_ERR
	sleep 2
	i=$((i + 1))
done
fact rounds $i
fact host_done "$(cat /tmp/host-done)"
