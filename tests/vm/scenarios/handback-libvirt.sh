# libvirt's <hostdev managed='yes'>: both functions of the GPU-like card detached to vfio-pci
# (virsh nodedev-detach), the group held as a VM holds it while a hostile actor keeps trying
# to put the host drivers back, the VM shut down, then both reattached to their host drivers
# (virsh nodedev-reattach). Idle, the group may be handed back; in use, nothing gets through.
. /lib/vm/lib.sh
vga=$VM_GPU_VGA
audio=$VM_GPU_AUDIO
g=$(group_of $vga)
fact group $g
vga_host=$(driver_of $vga)
audio_host=$(driver_of $audio)
fact vga_host $vga_host
fact audio_host $audio_host
detach_to_vfio $vga
detach_to_vfio $audio
fact vga_detached $(driver_of $vga)
fact audio_detached $(driver_of $audio)
hold $g $vga || exit 1
hostile_start $vga=$vga_host $audio=$audio_host
# What the kernel protects, from the pinned maps; an uninstall is refused while a VM holds it.
enforcer status --json > /tmp/status.json 2>&1
echo "+ enforcer status --json: $(cat /tmp/status.json)"
fact status_in_use "$(grep -o '"group":"'$g'","state":"[a-z_]*"' /tmp/status.json | cut -d'"' -f8)"
enforcer detach > /tmp/detach.out 2>&1
fact detach_in_use_rc $?
echo "+ enforcer detach: $(cat /tmp/detach.out)"
sleep 3
hostile_stop
fact vga_in_use $(driver_of $vga)
fact audio_in_use $(driver_of $audio)
release
# The release event reaches the agent; the kernel's count is already zero.
sleep 1
enforcer status --json > /tmp/status.json 2>&1
echo "+ enforcer status --json: $(cat /tmp/status.json)"
fact status_released "$(grep -o '"group":"'$g'","state":"[a-z_]*"' /tmp/status.json | cut -d'"' -f8)"
reattach $vga 0
reattach $audio 1
fact vga_final $(driver_of $vga)
fact audio_final $(driver_of $audio)
fact alive yes
