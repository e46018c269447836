# The idle agent's cost (cargo xtask vm-idle): the agent /init started on the test node, then
# one on a synthetic sysfs tree of BENCH_DEVICES devices (mkfixture; the real /proc), each left
# idle for IDLE_SECONDS. Facts per phase: context switches of all its threads (voluntary and
# involuntary: each is a wakeup or a preemption), CPU ticks (utime+stime), RSS and its peak,
# threads.
. /lib/vm/lib.sh
secs=${IDLE_SECONDS:-60}
devices=${BENCH_DEVICES:-1000}
fact hz "$(getconf CLK_TCK 2>/dev/null || echo 100)"
# Sums voluntary and nonvoluntary switches over the process's threads.
switches() {
	v=0
	n=0
	for t in /proc/"$1"/task/*; do
		a=$(sed -n 's/^voluntary_ctxt_switches:[[:space:]]*//p' $t/status)
		b=$(sed -n 's/^nonvoluntary_ctxt_switches:[[:space:]]*//p' $t/status)
		v=$((v + a))
		n=$((n + b))
	done
	echo "$v $n"
}
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
kib() { sed -n "s/^$2:[[:space:]]*\([0-9]*\) kB/\1/p" /proc/$1/status; }
measure() {
	pid=$2
	# Settle: the start's work is not idle cost.
	sleep 10
	set -- $1 $(switches $pid) $(ticks $pid)
	phase=$1
	v0=$2
	n0=$3
	t0=$4
	sleep $secs
	set -- $(switches $pid) $(ticks $pid)
	fact ${phase}_voluntary $(($1 - v0))
	fact ${phase}_involuntary $(($2 - n0))
	fact ${phase}_ticks $(($3 - t0))
	fact ${phase}_rss_kib $(kib $pid VmRSS)
	fact ${phase}_hwm_kib $(kib $pid VmHWM)
	fact ${phase}_threads $(ls /proc/$pid/task | wc -l)
	fact ${phase}_alive $([ -e /proc/$pid ] && echo yes || echo no)
}
agent=$(pidof enforcer)
fact node_groups "$(ls /sys/kernel/iommu_groups | wc -l)"
measure node $agent
kill -TERM $agent
while [ -e /proc/$agent ]; do sleep 0.1; done
enforcer detach > /dev/null
sleep 1

# The synthetic node: its sysfs tree plus the real kernel's self-description (BTF, LSM list,
# tracefs) where the agent looks for it.
step mkfixture --synthetic $devices /tmp/synthetic > /dev/null
sys=/tmp/synthetic/sys
mkdir -p $sys/kernel/btf $sys/kernel/security
ln -sf /sys/kernel/btf/vmlinux $sys/kernel/btf/vmlinux
ln -sf /sys/kernel/security/lsm $sys/kernel/security/lsm
ln -sfn /sys/kernel/tracing $sys/kernel/tracing
fact synthetic_devices "$(ls $sys/bus/pci/devices | wc -l)"
fact synthetic_groups "$(ls $sys/kernel/iommu_groups | wc -l)"
enforcer --sysfs-root $sys --pin-root /sys/fs/bpf/idle-bench --metrics-addr 127.0.0.1:9478 > /tmp/idle.out 2> /tmp/idle.err &
second=$!
i=0
while ! grep -q '"type":"ready"' /tmp/idle.out && [ $i -lt 1800 ]; do sleep 0.1; i=$((i + 1)); done
fact synthetic_ready $(grep -q '"type":"ready"' /tmp/idle.out && echo yes || echo no)
fact synthetic_ready_s $((i / 10))
measure synthetic $second
kill -TERM $second
wait $second
tail -5 /tmp/idle.err | sed 's/^/  synthetic agent: /'
enforcer detach --pin-root /sys/fs/bpf/idle-bench > /dev/null 2>&1
fact alive yes
