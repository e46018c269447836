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
	lsm-noop file_open file_permission > /tmp/bench-noop.out 2> /tmp/bench-noop.err &
	NOOP=$!
	i=0
	while ! grep -q attached /tmp/bench-noop.out && kill -0 $NOOP 2>/dev/null && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if grep -q attached /tmp/bench-noop.out; then
		measure_all empty
		kill -TERM $NOOP
		wait $NOOP 2>/dev/null
		sleep 1
	else
		fact noop_failed "$(head -c 300 /tmp/bench-noop.err | tr '\n' ' ')"
	fi
	if [ $round -lt $rounds ]; then
		start_agent
		# The new agent attaches hooks from its first pass.
		sleep 2
	fi
	round=$((round + 1))
done
