# open()+close(), pread and pwrite with the agent's programs attached, with an empty program at
# the same hooks (lsm-noop: what attaching anything costs, the trampoline), and with nothing,
# alternating in one boot so that drift in the emulator hits every side alike. /init started the
# first agent.
# While measuring "with", the agent is stopped (SIGSTOP): its programs stay attached, but its own
# housekeeping does not compete with the loop for the guest's one CPU, so the difference is the
# hooks' cost alone.
. /lib/vm/lib.sh
echo data > /tmp/bench-file
n=${BENCH_ITERATIONS:-200000}
# Each loop the hooks see: open()+close() of a regular file, pread/pwrite of a regular file and
# of /dev/null.
LOOPS="open:/tmp/bench-file read:/tmp/bench-file write:/tmp/bench-file read:/dev/null write:/dev/null"
# open()+close() is about ten times slower than a read under TCG: a fifth of the calls, so that
# three sides of five rounds fit in the script's time limit.
measure() {
	calls=$n
	[ $1 = open ] && calls=$((n / 5))
	open-bench $2 $calls 1 $1 | sed 's/.*"ns_per_op": \([0-9.]*\).*/\1/'
}
measure_all() {
	for l in $LOOPS; do
		kind=${l%%:*}
		file=${l#*:}
		fact ${1}_${kind}_$(basename $file | tr -c 'a-z0-9\n' '_')_$round $(measure $kind $file)
	done
}
stop_agent() {
	kill -TERM $1
	i=0
	while kill -0 $1 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	# The programs outlive the agent (pinned): remove the pins so they detach. Detached
	# programs and trampolines are freed after an RCU grace period: let it pass.
	enforcer detach
	sleep 1
}
# with_noop MEASURE HOOK...: runs `MEASURE empty` with an empty LSM program (lsm-noop) attached
# at each HOOK, then detaches it (its links close with it; the trampolines go after an RCU
# grace period).
with_noop() {
	measure=$1
	shift
	lsm-noop "$@" > /tmp/bench-noop.out 2> /tmp/bench-noop.err &
	NOOP=$!
	i=0
	while ! grep -q attached /tmp/bench-noop.out 2>/dev/null && kill -0 $NOOP 2>/dev/null && [ $i -lt 600 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if grep -q attached /tmp/bench-noop.out; then
		$measure empty
		kill -TERM $NOOP
		wait $NOOP 2>/dev/null
		sleep 2
	else
		fact noop_failed "$(head -c 300 /tmp/bench-noop.err | tr '\n' ' ')"
	fi
}
start_agent() {
	set -- enforcer
	[ -f /etc/iommu-enforcer/policy.toml ] && set -- "$@" --policy /etc/iommu-enforcer/policy.toml
	"$@" > /tmp/bench-agent.out 2> /tmp/bench-agent.err &
	AGENT=$!
	i=0
	while ! grep -q '"type":"ready"' /tmp/bench-agent.out && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
}
# BENCH_NON_VIABLE=yes: measure with a protected group (a device on vfio-pci, its companion on a
# host driver), the normal state of a passthrough node; the hooks are attached either way.
if [ "${BENCH_NON_VIABLE:-no}" = yes ]; then
	step modprobe e1000
	unbind $VM_DEV_FN0
	bind_vfio $VM_DEV_FN0
	sleep 2
fi
AGENT=$(pidof enforcer)
# BENCH_ICOUNT=yes (`cargo xtask vm-bench --icount`): QEMU runs with -icount shift=0, so a guest
# nanosecond is one executed instruction and each figure is an exact instruction count per call.
# One pass per side, each loop twice (the two must agree), on a node with a group in use: the
# GPU-like card on vfio-pci, its group held open as a VM holds it.
if [ "${BENCH_ICOUNT:-no}" = yes ]; then
	# The regular files on a tmpfs of their own, as a workload's files are on a node: the root
	# filesystem here also holds /etc/iommu-enforcer, and the agent's inotify watch there makes
	# every read and write on that filesystem call fsnotify (measured: +174 instructions per
	# pread on 6.1, with no program attached), which is the watch's cost, not the hooks'.
	# noatime: a read of a file written within the same coarse clock tick updates its atime
	# on every call until the tick (mtime >= atime), which would charge whichever side runs
	# first after the file is written. 64 bytes: the 8-byte pwrite never changes the size, so
	# every pread is a full one (a short read at EOF takes a longer path).
	mkdir -p /bench
	mount -t tmpfs -o noatime bench /bench
	head -c 64 /dev/zero > /bench/bench-file
	head -c 4096 /dev/zero > /bench/bench-page
	LOOPS="open:/bench/bench-file read:/bench/bench-file write:/bench/bench-file read:/dev/null write:/dev/null read4k:/bench/bench-page"
	detach_to_vfio $VM_GPU_VGA
	detach_to_vfio $VM_GPU_AUDIO
	if hold $(group_of $VM_GPU_VGA); then fact in_use yes; else fact in_use no; fi
	fact in_use_status "$(enforcer status --json 2>/dev/null | grep -o '"state":"in_use"' | head -1)"
	# The steady state: the write-time check, held for a while after the writes above (their
	# descriptors, a hand-back that may follow), detaches once nothing asks for it.
	settle() {
		i=0
		while [ -e /sys/fs/bpf/iommu-enforcer/links/file_permission ] && [ $i -lt 900 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		fact write_check_waited_ds_$round $i
	}
	# The hooks the agent keeps attached on the measured paths, for the empty-program side.
	attached_hooks() {
		hooks=""
		for h in file_open file_free_security file_permission; do
			[ -e /sys/fs/bpf/iommu-enforcer/links/$h ] && hooks="$hooks $h"
		done
		echo $hooks
	}
	# Each loop three passes per side and round (the fewest instructions is the count).
	count_all() {
		for l in $LOOPS; do
			kind=${l%%:*}
			file=${l#*:}
			calls=$n
			[ $kind = open ] && calls=$((n / 5))
			key=${1}_${kind}_$(basename $file | tr -c 'a-z0-9\n' '_')
			p=1
			for v in $(open-bench $file $calls 3 $kind | sed 's/.*"ns_per_op": \([0-9.]*\).*/\1/'); do
				fact ${key}_${round}_$p $v
				p=$((p + 1))
			done
		done
	}
	# Two rounds of the three sides: a side's count must not depend on what ran before it.
	for round in 1 2; do
		if [ $round = 2 ]; then
			start_agent
		fi
		settle
		hooks=$(attached_hooks)
		fact attached_hooks_$round "$(echo $hooks | tr ' ' ',')"
		kill -STOP $AGENT
		sleep 1
		count_all with
		kill -CONT $AGENT
		kill -TERM $AGENT
		i=0
		while kill -0 $AGENT 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
		enforcer detach --force
		sleep 2
		count_all without
		# shellcheck disable=SC2086
		[ -n "$hooks" ] && with_noop count_all $hooks
	done
	release
	exit 0
fi
fact lsm "$(grep -o '"lsm":"[^"]*"' /tmp/agent.out 2>/dev/null | head -1)"
fact file_open_hook "$(grep -o 'LSM hook file_open: [a-z]*' /tmp/agent.err 2>/dev/null | tail -1 | tr ' ' '_')"
rounds=${BENCH_ROUNDS:-5}
round=1
while [ $round -le $rounds ]; do
	kill -STOP $AGENT
	sleep 1
	measure_all with
	kill -CONT $AGENT
	stop_agent $AGENT
	measure_all without
	with_noop measure_all file_open file_permission
	if [ $round -lt $rounds ]; then
		start_agent
		# The new agent attaches hooks from its first pass.
		sleep 2
	fi
	round=$((round + 1))
done
