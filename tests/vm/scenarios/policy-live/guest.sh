# The policy is live: updated the way the kubelet updates a ConfigMap volume (a new timestamped
# directory, a ..data_tmp symlink renamed over ..data), the agent applies it without a restart.
# Reserving the GPU-like card's group (vfio-pci, rebind) pins and rebinds both functions within
# 2 s and the LSM refuses a write the reservation forbids; a broken file is rejected (line and
# column) and the reservation holds; a valid file without the reservation is applied, the pins
# are no longer restored, and the card goes back to its host drivers.
. /lib/vm/lib.sh
D=/etc/iommu-enforcer
vga=$VM_GPU_VGA
audio=$VM_GPU_AUDIO
g=$(group_of $vga)
fact group $g
audio_host=$(driver_of $audio)
fact audio_host $audio_host
fact layout "$(readlink $D/policy.toml)"
show $vga $audio
override() { cat $(pcidev $1)/driver_override; }
# Centiseconds since boot.
now() { awk '{ printf "%d", $1 * 100 }' /proc/uptime; }

n=0
# configmap TEXT: the kubelet's atomic update of the volume.
configmap() {
	n=$((n + 1))
	ts=..2026_12_07_00_0${n}_00.00000000$n
	mkdir $D/$ts
	printf '%s\n' "$1" > $D/$ts/policy.toml
	old=$(readlink $D/..data)
	ln -s $ts $D/..data_tmp
	SWAPPED_AT=$(now)
	mv -T $D/..data_tmp $D/..data
	rm -rf "${D:?}/$old"
	echo "+ configmap update: ..data -> $ts:"
	sed 's/^/  | /' $D/policy.toml
}
# wait_lines KIND N: until the agent printed N events of KIND (10 s at most); prints the count.
wait_lines() {
	i=0
	while [ $i -lt 100 ]; do
		c=$(grep -c "\"kind\":\"$1\"" /tmp/agent.out)
		[ "$c" -ge "$2" ] && break
		sleep 0.1
		i=$((i + 1))
	done
	echo "$c"
}
fact applied_at_start $(wait_lines policy_applied 1)
fact fn1_override_before "$(override $audio)"

# 1. Reserve the group for passthrough: both functions moved to vfio-pci.
configmap "[[reserve]]
group = \"$g\"
driver = \"vfio-pci\"
rebind = true"
pinned=no
while [ $(($(now) - SWAPPED_AT)) -le 200 ]; do
	if [ "$(override $vga)" = vfio-pci ] && [ "$(override $audio)" = vfio-pci ]; then
		pinned=yes
		break
	fi
	sleep 0.05
done
echo "  pinned after $(($(now) - SWAPPED_AT))0 ms"
fact pinned_within_2s $pinned
fact applied_after_reserve $(wait_lines policy_applied 2)
i=0
while [ $i -lt 50 ] && ! { [ "$(driver_of $vga)" = vfio-pci ] && [ "$(driver_of $audio)" = vfio-pci ]; }; do sleep 0.1; i=$((i + 1)); done
fact vga_reserved "$(driver_of $vga)"
fact audio_reserved "$(driver_of $audio)"
write $audio_host $(pcidev $audio)/driver_override
fact reserved_write $LAST_ERR

# 2. A broken file (line 4 misses a bracket): rejected, the reservation holds.
configmap "[[reserve]]
group = \"$g\"
driver = \"vfio-pci\"
[[reserve]"
fact rejected $(wait_lines policy_rejected 1)
write $audio_host $(pcidev $audio)/driver_override
fact broken_write $LAST_ERR
fact fn1_override_broken "$(override $audio)"

# 3. The reservation dropped: applied, and a cleared pin stays cleared.
configmap "# nothing reserved
protect_user_groups = true"
fact applied_after_drop $(wait_lines policy_applied 3)
clear_override $audio
fact dropped_clear $LAST_ERR
sleep 2
fact fn1_override_after "$(override $audio)"
# Idle and no longer reserved: the card goes back to the host.
reattach $vga 0
reattach $audio 1
fact vga_final "$(driver_of $vga)"
fact audio_final "$(driver_of $audio)"
show $vga $audio
