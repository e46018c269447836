# open()+close() of a regular file with the agent's programs attached and without, alternating in
# one boot so that drift in the emulator hits both sides alike. /init started the first agent.
# While measuring "with", the agent is stopped (SIGSTOP): its programs stay attached, but its own
# housekeeping does not compete with the loop for the guest's one CPU, so the difference is the
# hooks' cost alone.
. /lib/vm/lib.sh
echo data > /tmp/bench-file
n=${BENCH_ITERATIONS:-200000}
measure() { open-bench /tmp/bench-file $n 1 | sed 's/.*"ns_per_op": \([0-9.]*\).*/\1/'; }
stop_agent() {
	kill -TERM $1
	i=0
	while kill -0 $1 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
}
start_agent() {
	set -- enforcer
	[ -f /etc/iommu-enforcer/policy.toml ] && set -- "$@" --policy /etc/iommu-enforcer/policy.toml
	"$@" > /tmp/bench-agent.out 2> /tmp/bench-agent.err &
	AGENT=$!
	i=0
	while ! grep -q '"type":"ready"' /tmp/bench-agent.out && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
}
AGENT=$(pidof enforcer)
fact lsm "$(grep -o '"lsm":"[^"]*"' /tmp/agent.out 2>/dev/null | head -1)"
for round in 1 2 3; do
	kill -STOP $AGENT
	fact with_$round $(measure)
	kill -CONT $AGENT
	stop_agent $AGENT
	fact without_$round $(measure)
	[ $round -lt 3 ] && start_agent
done
