# The policy is live: updated the way the kubelet updates a ConfigMap volume (a new timestamped
# directory, a ..data_tmp symlink renamed over ..data), the agent applies it without a restart.
# Reserving the two-function device's group pins both functions within 2 s and the LSM refuses a
# write the reservation forbids; a broken file is rejected (line and column) and the reservation
# holds; a valid file without the reservation is applied and the pins are no longer restored.
. /lib/vm/lib.sh
D=/etc/iommu-enforcer
g=$(group_of $VM_DEV_FN0)
fact group $g
fact layout "$(readlink $D/policy.toml)"
show $VM_DEV_FN0 $VM_DEV_FN1
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
	rm -rf "$D/$old"
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
fact fn1_override_before "$(override $VM_DEV_FN1)"

# 1. Reserve the group, both functions to stay unbound.
configmap "[[reserve]]
group = \"$g\"
driver = \"none\""
pinned=no
while [ $(($(now) - SWAPPED_AT)) -le 200 ]; do
	if [ "$(override $VM_DEV_FN0)" = none ] && [ "$(override $VM_DEV_FN1)" = none ]; then
		pinned=yes
		break
	fi
	sleep 0.05
done
echo "  pinned after $(($(now) - SWAPPED_AT))0 ms"
fact pinned_within_2s $pinned
fact applied_after_reserve $(wait_lines policy_applied 2)
write e1000 $(pcidev $VM_DEV_FN1)/driver_override
fact reserved_write $LAST_ERR

# 2. A broken file (line 4 misses a bracket): rejected, the reservation holds.
configmap "[[reserve]]
group = \"$g\"
driver = \"none\"
[[reserve]"
fact rejected $(wait_lines policy_rejected 1)
write e1000 $(pcidev $VM_DEV_FN1)/driver_override
fact broken_write $LAST_ERR
fact fn1_override_broken "$(override $VM_DEV_FN1)"

# 3. The reservation dropped: applied, and a cleared pin stays cleared.
configmap "# nothing reserved
protect_user_groups = true"
fact applied_after_drop $(wait_lines policy_applied 3)
clear_override $VM_DEV_FN1
fact dropped_clear $LAST_ERR
sleep 2
fact fn1_override_after "$(override $VM_DEV_FN1)"
show $VM_DEV_FN0 $VM_DEV_FN1
