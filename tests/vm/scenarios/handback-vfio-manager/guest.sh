# The GPU Operator's vfio-manager from a container: a containerd bundle (config.json with the CRI
# annotations) and its kubelet-shaped cgroup are faked in the guest; the agent finds the
# container the policy trusts (gpu-operator/nvidia-vfio-manager) by inotify on the state
# directory and resolves its cgroup. From a process in that cgroup, what `vfio-manage unbind
# --all` and `bind --all` write to the reserved, idle group passes; the same writes from another
# container of the same shape are vetoed (EPERM, veto events naming its pod); while the group is
# held, even the trusted container is refused.
. /lib/vm/lib.sh
CG=/sys/fs/cgroup
STATE=/run/containerd/io.containerd.runtime.v2.task/k8s.io
fn0=$VM_GPU_VGA
fn1=$VM_GPU_AUDIO
g=$(group_of $fn0)
fact group $g
systemd_uid() { echo "$1" | tr - _; }

# container NAME UID ID: a containerd CRI container of pod gpu-operator/NAME-x7k2p (besteffort,
# systemd cgroup driver): its bundle directory first, then config.json, then (a moment later, as
# runc makes it) its cgroup. Sets CONTAINER_CG.
container() {
	pod_slice=kubepods-besteffort-pod$(systemd_uid $2).slice
	mkdir -p $STATE/$3 || return 1
	cat > $STATE/$3/config.json <<JSON
{"ociVersion":"1.1.0","process":{"args":["vfio-manage","bind","--all"],"cwd":"/"},
"root":{"path":"rootfs"},
"annotations":{"io.kubernetes.cri.container-type":"container",
"io.kubernetes.cri.container-name":"$1",
"io.kubernetes.cri.image-name":"nvcr.io/nvidia/cloud-native/vfio-manager:v0.3.0",
"io.kubernetes.cri.sandbox-name":"$1-x7k2p",
"io.kubernetes.cri.sandbox-namespace":"gpu-operator",
"io.kubernetes.cri.sandbox-uid":"$2"},
"linux":{"cgroupsPath":"$pod_slice:cri-containerd:$3"}}
JSON
	sleep 0.1
	CONTAINER_CG=$CG/kubepods.slice/kubepods-besteffort.slice/$pod_slice/cri-containerd-$3.scope
	mkdir -p $CONTAINER_CG || return 1
	echo "+ container $1 ($3): bundle $STATE/$3, cgroup $CONTAINER_CG"
}

# The vfio-manage steps, as functions the container's shell runs (tag: which phase, n: which
# function). Each step's outcome is a fact.
cat > /tmp/vfio-manage.sh <<'SH'
# vfio-manage bind: pin vfio-pci, unbind the host driver, probe.
vm_bind() {
	write vfio-pci $(pcidev $2)/driver_override
	fact ${1}_override_$3 $LAST_ERR
	d=$(driver_of $2)
	r=ok
	if [ $d != none ] && [ $d != vfio-pci ]; then write $2 $(pcidev $2)/driver/unbind || r=$LAST_ERR; fi
	fact ${1}_unbind_$3 $r
	write $2 /sys/bus/pci/drivers_probe
	fact ${1}_probe_$3 $LAST_ERR
}
# vfio-manage unbind: unbind vfio-pci, clear the override, probe the host driver.
vm_unbind() {
	r=ok
	[ $(driver_of $2) = vfio-pci ] && { write $2 $(pcidev $2)/driver/unbind || r=$LAST_ERR; }
	fact ${1}_unbind_$3 $r
	write "" $(pcidev $2)/driver_override
	fact ${1}_override_$3 $LAST_ERR
	write $2 /sys/bus/pci/drivers_probe
	fact ${1}_probe_$3 $LAST_ERR
}
SH
# in_container CG CMD: CMD run by a shell in cgroup CG, with the helpers.
in_container() {
	in_cgroup $1 sh -c ". /lib/vm/lib.sh; . /tmp/vfio-manage.sh; $2"
}
# state TAG: drivers and overrides (pins) of both functions.
state() {
	fact ${1}_driver_0 $(driver_of $fn0)
	fact ${1}_driver_1 $(driver_of $fn1)
	fact ${1}_pin_0 "$(cat $(pcidev $fn0)/driver_override)"
	fact ${1}_pin_1 "$(cat $(pcidev $fn1)/driver_override)"
}

# The card's host drivers (bochs or bochs-drm, snd_hda_intel), as the kernel bound them at boot.
host_0=$(driver_of $fn0)
host_1=$(driver_of $fn1)
fact host_0 $host_0
fact host_1 $host_1
state start

UID_T=5b6c7d8e-9f01-4a2b-8c3d-4e5f60718293
ID_T=7e57ed00000000000000000000000000000000000000000000000000000000a1
UID_U=6c7d8e9f-0a12-4b3c-9d4e-5f6071829304
ID_U=badc0de0000000000000000000000000000000000000000000000000000000b2
fact trusted_uid $UID_T
fact trusted_id $ID_T
fact untrusted_uid $UID_U
fact untrusted_id $ID_U
container nvidia-vfio-manager $UID_T $ID_T || exit 1
CG_T=$CONTAINER_CG
# The agent logs the set when it changes: wait (bounded) for it.
i=0
while [ $i -lt 100 ] && ! grep -q "trusted containers: gpu-operator/nvidia-vfio-manager-x7k2p/nvidia-vfio-manager -> cgroup" /tmp/agent.err; do
	sleep 0.1
	i=$((i + 1))
done
fact resolved $(grep -q "trusted containers: gpu-operator/nvidia-vfio-manager-x7k2p/nvidia-vfio-manager -> cgroup" /tmp/agent.err && echo yes || echo no)
fact resolved_after_ms $((i * 100))
fact trusted_cgroup_id $(stat -c %i $CG_T)
grep "trusted containers" /tmp/agent.err | sed 's/^/  agent: /'

# vfio-manage bind --all from the trusted container: the reserved group is idle, so every write
# passes the hooks, and vfio-pci takes both functions (the agent may pin and probe first).
in_container $CG_T "vm_bind bind $fn0 0; vm_bind bind $fn1 1"
sleep 1
state bound
# Another container of the same pod layout, another name: not trusted.
container other-tool $UID_U $ID_U || exit 1
CG_U=$CONTAINER_CG
sleep 1
in_container $CG_U "vm_unbind untrusted $fn0 0; vm_unbind untrusted $fn1 1"
sleep 1
state untrusted

# The group in use (a VM holds it): even the trusted container is refused.
hold $g $fn0 || exit 1
# Meanwhile a host process keeps trying every path to put the host drivers back.
hostile_start $fn0=$host_0 $fn1=$host_1
in_container $CG_T "vm_unbind held $fn0 0; vm_unbind held $fn1 1"
sleep 1
hostile_stop
state held
release
sleep 1

# vfio-manage unbind --all from the trusted container, the group idle again: the unbind, the
# cleared override and the host driver's probe all pass, and the reservation gives way (the
# agent restores no pin and rebinds nothing) until a user driver has the device again.
in_container $CG_T "vm_unbind unbind $fn0 0; vm_unbind unbind $fn1 1"
sleep 2
state unbound
fact alive yes
