# The write-time check (the LSM program on file_permission) runs only while something needs it:
# read(2) and write(2) run no program in the steady state, a group in use included. What a
# descriptor's open cannot decide is counted in the kernel and arms the check; until it is
# armed, what only it could judge is refused with EAGAIN (a bus-wide unbind while a group is in
# use), and so is the VFIO open that would put a group in use while such a descriptor is open.
. /lib/vm/lib.sh
links=/sys/fs/bpf/iommu-enforcer/links
vga=$VM_GPU_VGA
audio=$VM_GPU_AUDIO
g=$(group_of $vga)
fact group $g
# Whether the write-time program is attached, once it settles (the agent keeps it a few
# seconds after the last thing that asked for it).
settled() {
	i=0
	while [ -e $links/file_permission ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
	if [ -e $links/file_permission ]; then echo attached; else echo detached; fi
}
armed() {
	i=0
	while [ ! -e $links/file_permission ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	if [ -e $links/file_permission ]; then echo attached; else echo detached; fi
}
AGENT=$(pidof enforcer)
step detach_to_vfio $vga
step detach_to_vfio $audio
hold $g || fact hold failed
# 1. A group in use, nothing else going on: no program on the read/write path.
fact steady_in_use "$(settled)"
# 2. A bus-wide unbind opened while the group is in use and the check is not armed: refused
# at open (EAGAIN), which arms it; then the open passes and the write is judged (EPERM).
err=$( { exec 5> /sys/bus/pci/drivers/vfio-pci/unbind; } 2>&1 )
fact unbind_open_unarmed "$(echo "$err" | errname_of)"
fact armed_after_refusal "$(armed)"
fact unbind_in_use "$(sysfs-write write /sys/bus/pci/drivers/vfio-pci/unbind $vga | tr ' ' '_')"
fact vga_driver "$(driver_of $vga)"
release
# 3. A descriptor opened while the group is idle, with the agent stopped so that nothing arms
# the check: the VFIO open that would put the group in use is refused until it is armed.
fact idle_settled "$(settled)"
kill -STOP $AGENT
exec 6> $(pcidev $vga)/driver_override
fact held_open ok
if hold $g; then
	fact vfio_open_unarmed ok
	release
else
	fact vfio_open_unarmed "$(tr '\n' ' ' < /tmp/holder.$g.out | grep -o 'E[A-Z]*' | head -1)"
fi
kill -CONT $AGENT
fact armed_for_descriptor "$(armed)"
if hold $g; then fact vfio_open_armed ok; else fact vfio_open_armed failed; fi
# The descriptor opened before the group was in use is judged at its write.
err=$( { echo e1000 >&6; } 2>&1 )
fact held_write "$(echo "$err" | errname_of)"
exec 6>&-
release
# 4. Nothing open, nothing held: the check goes again.
fact final "$(settled)"
fact vga_final "$(driver_of $vga)"
