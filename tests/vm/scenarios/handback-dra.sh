# NVIDIA's DRA driver with passthrough, per ResourceClaim: prepare binds the GPU-like card's
# functions to vfio-pci, the VM holds the group (a hostile actor keeps trying to put the host
# drivers back meanwhile), unprepare gives them back to their host drivers through the drivers'
# own bind files. 20 claims in a row: every hand-back goes through, nothing hostile does.
. /lib/vm/lib.sh
vga=$VM_GPU_VGA
audio=$VM_GPU_AUDIO
g=$(group_of $vga)
fact group $g
vga_host=$(driver_of $vga)
audio_host=$(driver_of $audio)
fact vga_host $vga_host
fact audio_host $audio_host
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
	sleep 0.5
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
fact claims $cycle
fact prepared $prepared
fact handed_back $handed_back
fact vga_final $(driver_of $vga)
fact audio_final $(driver_of $audio)
fact alive yes
