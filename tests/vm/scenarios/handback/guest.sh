# Handing the GPU-like card back to the host, as the stacks users run do it, each with a hostile
# actor that keeps trying to put the host drivers back while a VM holds the group (every try
# refused, no kernel BUG). Two flows in one boot, one after the other on the same card:
# 1. libvirt's <hostdev managed='yes'>: both functions detached to vfio-pci (virsh
#    nodedev-detach), the group held as a VM holds it, the VM shut down, both reattached to
#    their host drivers (virsh nodedev-reattach); enforcer status and detach along the way.
# 2. NVIDIA's DRA driver with passthrough: 20 ResourceClaims in a row, each prepared (vfio-pci),
#    held, released and unprepared (back to the host drivers through their own bind files).
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

echo "+ flow 2: DRA, 20 claims"
prepared=0
handed_back=0
cycle=0
while [ $cycle -lt 20 ]; do
	cycle=$((cycle + 1))
	echo "+ claim $cycle: prepare"
	detach_to_vfio $vga
	detach_to_vfio $audio
	[ "$(driver_of $vga)" = vfio-pci ] && [ "$(driver_of $audio)" = vfio-pci ] && prepared=$((prepared + 1))
	hold $g $vga || break
	hostile_start $vga=$vga_host $audio=$audio_host
	sleep 0.2
	hostile_stop
	release
	echo "+ claim $cycle: unprepare"
	ok=1
	for pair in $vga=$vga_host $audio=$audio_host; do
		d=${pair%%=*}
		host=${pair#*=}
		write $d $(pcidev $d)/driver/unbind || ok=0
		write "" $(pcidev $d)/driver_override || ok=0
		write $d /sys/bus/pci/drivers/$host/bind || ok=0
		[ "$(driver_of $d)" = "$host" ] || ok=0
	done
	handed_back=$((handed_back + ok))
done
fact dra_claims $cycle
fact dra_prepared $prepared
fact dra_handed_back $handed_back
fact dra_vga_final $(driver_of $vga)
fact dra_audio_final $(driver_of $audio)
fact alive yes
