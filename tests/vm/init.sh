#!/bin/busybox sh
# /init of the iommu-enforcer test node (tests/vm/README.md). PID 1: it never exits (that would
# panic the kernel); it ends with poweroff -f. Settings come from /etc/vm.env, written per boot by
# cargo xtask. Results go to the host over /dev/ttyS1, apart from the kernel console on ttyS0,
# as sections opened by `@@vm:<name>` lines.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t securityfs securityfs /sys/kernel/security
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf

. /etc/vm.env

log() { echo "vm-init: [$(cut -d" " -f1 /proc/uptime) s] $*" > /dev/console; }
# x86: the second UART. arm64 (virt has one UART): a virtio console, whose drivers load first
# (either may be built in: then modprobe finds nothing to load).
CH=${VM_CHANNEL:-/dev/ttyS1}
for m in $VM_CHANNEL_MODULES; do
	modprobe $m 2>/dev/null
done
i=0
while [ ! -e $CH ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
[ -e $CH ] || log "no channel $CH"
# Raw: no \n -> \r\n translation, no echo of what we write.
stty -F $CH raw -echo 2>/dev/null
section() { printf '\n@@vm:%s\n' "$*" > $CH; }
# True while $1 runs (a zombie counts as gone: nobody reaps it until we wait).
alive() { [ -e /proc/$1/stat ] && ! grep -q '^[0-9]* ([^)]*) Z' /proc/$1/stat; }

ip link set lo up 2>/dev/null
log "kernel $(uname -r); cmdline: $(cat /proc/cmdline)"
log "lsm: $(cat /sys/kernel/security/lsm 2>/dev/null)"
for m in $VM_BOOT_MODULES; do
	modprobe $m || log "modprobe $m FAILED"
done
[ -e /dev/vfio/vfio ] || log "no /dev/vfio/vfio after loading vfio"
# arm64 (virt, ACPI and IORT, SMMUv3): a PCI device joins its IOMMU group when a driver first
# binds it (the IORT is applied from dma_configure at probe), not when the bus adds it as on x86.
# Every device still unbound is bound to pci-stub once and let go, so the node starts with the
# same groups as the x86 one (a group stays until its device is removed).
if [ "$VM_ARCH" = arm64 ]; then
	modprobe pci_stub
	for d in /sys/bus/pci/devices/*; do
		[ -e $d/iommu_group ] || [ -e $d/driver ] && continue
		echo pci-stub > $d/driver_override
		echo ${d##*/} > /sys/bus/pci/drivers_probe
		echo ${d##*/} > /sys/bus/pci/drivers/pci-stub/unbind
		echo > $d/driver_override
		[ -e $d/iommu_group ] || log "${d##*/}: still no IOMMU group"
	done
fi

# A scenario's setup (tests/vm/scenarios/<name>/setup.sh): what the agent needs at start, such
# as a fake kubelet; it may add to VM_AGENT_ARGS.
if [ -e /scenario-setup.sh ]; then
	log "scenario setup"
	. /scenario-setup.sh > /tmp/setup.out 2>&1
	cat /tmp/setup.out > /dev/console
fi
log "starting: enforcer $VM_AGENT_ARGS"
: > /tmp/agent.out
# Into a regular file, never a pipe: a write to a pipe that tee drains slowly under TCG can hold
# the agent between printing a record and consuming it from the ring, and a kill -9 there makes
# the next agent print that record again (kill-mid-burst counts every record exactly).
enforcer $VM_AGENT_ARGS > /tmp/agent.out 2> /tmp/agent.err &
agent=$!
# Stream the agent's lines as they come, so that a crash (5.10's BUG) still leaves what the agent
# saw before it on the host.
section "events"
tail -n +1 -f /tmp/agent.out > $CH &
forwarder=$!
ready=no
i=0
while [ $i -lt $((VM_READY_TIMEOUT * 5)) ]; do
	if grep -q '"type" *: *"ready"' /tmp/agent.out 2>/dev/null; then ready=yes; break; fi
	alive $agent || break
	sleep 0.2
	i=$((i + 1))
done
log "agent ready: $ready"

log "running the script"
cd /root || log "cannot cd to /root: the script runs in $(pwd)"
timeout $VM_SCRIPT_TIMEOUT sh /scenario.sh > /tmp/script.out 2>&1
script_rc=$?
cd /
log "script exit code $script_rc"

# A moment for the agent's reaction to the script's last step (it drains the ring at SIGTERM
# anyway).
sleep 1
kill -TERM $agent 2>/dev/null
i=0
# Detaching every program takes a few seconds under TCG on busy cores: allow 30.
while alive $agent && [ $i -lt 150 ]; do sleep 0.2; i=$((i + 1)); done
alive $agent && { log "agent ignored SIGTERM for 30 s: killing it"; kill -KILL $agent; }
wait $agent
agent_rc=$?
log "agent exit code $agent_rc"

enforcer audit --json $VM_AUDIT_ARGS > /tmp/audit.json 2> /tmp/audit.err
audit_rc=$?

# busybox tail -f polls once a second: let it reach the end of the file.
sleep 1.5
kill $forwarder
wait $forwarder 2>/dev/null
section "status ready=$ready"
section "audit rc=$audit_rc"
cat /tmp/audit.json > $CH
section "agent-stderr rc=$agent_rc"
cat /tmp/agent.err /tmp/audit.err > $CH
section "script rc=$script_rc"
cat /tmp/script.out > $CH
section "end"
sync
log "powering off"
poweroff -f
sleep 30
