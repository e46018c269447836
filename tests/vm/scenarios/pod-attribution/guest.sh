# Pods without an API: kubelet-shaped cgroups in the guest's real cgroup v2, a VFIO holder and a
# bind in them; the agent names pod_uid and container_id from each event's cgroup id, the audit
# from each holder's /proc/PID/cgroup. Holder A exits and its cgroup is removed before the end:
# its release event is named from the cached id.
. /lib/vm/lib.sh
CG=/sys/fs/cgroup
if ! grep -q "^[^ ]* $CG cgroup2 " /proc/mounts; then
	mount -t cgroup2 cgroup2 $CG || { echo "cannot mount cgroup2 on $CG"; exit 1; }
	echo "+ mounted cgroup2 on $CG"
fi
systemd_uid() { echo "$1" | tr - _; }
# A: systemd driver, besteffort, containerd (the holder that exits).
UID_A=1f0e2d3c-4b5a-4697-8877-a1b2c3d4e5f6
ID_A=aaaa0000000000000000000000000000000000000000000000000000000000a1
POD_A=$CG/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod$(systemd_uid $UID_A).slice
CG_A=$POD_A/cri-containerd-$ID_A.scope
# B: cgroupfs driver, burstable, bare id (the holder that stays).
UID_B=2a1b3c4d-5e6f-4071-8293-a4b5c6d7e8f9
ID_B=bbbb0000000000000000000000000000000000000000000000000000000000b2
CG_B=$CG/kubepods/burstable/pod$UID_B/$ID_B
# C: systemd driver, guaranteed (no qos level), CRI-O (the bind).
UID_C=3c2d4e5f-6a7b-4c8d-9e0f-b1c2d3e4f5a6
ID_C=cccc0000000000000000000000000000000000000000000000000000000000c3
CG_C=$CG/kubepods.slice/kubepods-pod$(systemd_uid $UID_C).slice/crio-$ID_C.scope
for d in $CG_A $CG_B $CG_C; do mkdir -p $d || exit 1; echo "+ mkdir $d"; done
fact uid_a $UID_A; fact id_a $ID_A
fact uid_b $UID_B; fact id_b $ID_B
fact uid_c $UID_C; fact id_c $ID_C

g=$(group_of $VM_DEV_FN0)
fact group $g
# The bind attempt, from pod C: the shell that writes is the process in the cgroup.
# shellcheck disable=SC2016 # expanded by the sh -c in the cgroup
in_cgroup $CG_C sh -c '. /lib/vm/lib.sh; bind_vfio $VM_DEV_FN0; bind_vfio $VM_DEV_FN1'
fact fn0_driver $(driver_of $VM_DEV_FN0)

HOLD_CGROUP=$CG_A hold $g || exit 1
fact pid_a $HOLDER_PID
# A container lives longer than the agent takes to read its first event: wait (bounded) until
# the agent printed holder A's open, so the id is known before the cgroup goes (a cgroup made
# and removed between two of the agent's reads is not attributed: not_found).
i=0
while [ $i -lt 300 ] && ! grep -q "\"kind\":\"vfio_open\".*\"tgid\":$HOLDER_PID," /tmp/agent.out; do
	sleep 0.1
	i=$((i + 1))
done
fact a_seen $(grep -q "\"kind\":\"vfio_open\".*\"tgid\":$HOLDER_PID," /tmp/agent.out && echo yes || echo no)
release
# The container is gone: its cgroup too, as the runtime removes it.
rmdir $CG_A $POD_A && echo "+ removed $CG_A"
fact a_cgroup_removed $([ -e $CG_A ] && echo no || echo yes)

HOLD_CGROUP=$CG_B hold $g || exit 1
fact pid_b $HOLDER_PID
cat /proc/$HOLDER_PID/cgroup | sed 's/^/  holder b cgroup: /'
# Holder B stays: the final audit must show it in its pod.
sleep 2
