# A VM-like holder parks its group, container and device fds in an SCM_RIGHTS message and closes
# its own: /proc shows no VFIO fd, yet the group stays claimed. Protection comes from the kernel's
# state (.0 bound to vfio-pci, the claim, the open file), not from /proc, so the pin on .1 stays
# and a host driver cannot take it: autoprobe after modprobe and a sysfs bind both fail, and 5.10
# does not BUG.
. /lib/vm/lib.sh
g=$(group_of $VM_DEV_FN0)
fact group $g
bind_vfio $VM_DEV_FN0
hold --park $g $VM_DEV_FN0 || exit 1
# shellcheck disable=SC2010 # counts the fd links that point at /dev/vfio
fact visible_vfio_fds $(ls -l /proc/$HOLDER_PID/fd 2>/dev/null | grep -c /dev/vfio)
# A few housekeeping passes: nothing may be unpinned because /proc shows no holder.
sleep 3
fact fn1_override "$(cat $(pcidev $VM_DEV_FN1)/driver_override)"
step modprobe e1000
sleep 1
fact fn1_after_autoprobe $(driver_of $VM_DEV_FN1)
write $VM_DEV_FN1 /sys/bus/pci/drivers/e1000/bind
fact sysfs_bind $LAST_ERR
show $VM_DEV_FN0 $VM_DEV_FN1
fact fn1_driver $(driver_of $VM_DEV_FN1)
fact alive yes
