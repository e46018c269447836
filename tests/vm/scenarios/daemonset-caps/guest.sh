# The agent with exactly the DaemonSet's capabilities (README: BPF, PERFMON, SYS_RESOURCE,
# SYS_PTRACE, DAC_READ_SEARCH; nothing else): it loads, pins, becomes ready and vetoes.
. /lib/vm/lib.sh
agent=$(pidof enforcer)
kill -TERM $agent
i=0
while [ -e /proc/$agent ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
# Debian's kernels default to perf_event_paranoid=3, where a Debian patch refuses every
# perf_event_open (the VFIO kprobes) without CAP_SYS_ADMIN: the README's node prerequisite is
# kernel.perf_event_paranoid<=2, under which CAP_PERFMON suffices.
fact default_paranoid $(cat /proc/sys/kernel/perf_event_paranoid)
echo 2 > /proc/sys/kernel/perf_event_paranoid
CAPS=BPF,PERFMON,SYS_RESOURCE,SYS_PTRACE,DAC_READ_SEARCH
with-caps $CAPS -- enforcer > /tmp/caps.out 2> /tmp/caps.err &
second=$!
i=0
while ! grep -q '"type":"ready"' /tmp/caps.out && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
fact caps_ready $(grep -q '"type":"ready"' /tmp/caps.out && echo yes || echo no)
pid=$(pidof enforcer)
fact cap_eff $(sed -n 's/^CapEff:\t*//p' /proc/$pid/status)
fact readyz $(wget -q -O - http://127.0.0.1:9477/readyz >/dev/null 2>&1 && echo 200 || echo no)
bind_vfio $VM_DEV_FN0
# In use, as a VM would hold it: protected.
hold $(group_of $VM_DEV_FN0) $VM_DEV_FN0 || exit 1
sleep 1
r=$(sysfs-write write $(pcidev $VM_DEV_FN1)/driver_override e1000)
fact veto $(echo "$r" | tr ' ' '_')
release
kill -TERM $second
wait $second
sed 's/^/  agent: /' /tmp/caps.out /tmp/caps.err
fact lsm_active $(grep '"type":"capabilities"' /tmp/caps.out | grep -c '"lsm":"active"')
fact failed_programs $(grep '"type":"capabilities"' /tmp/caps.out | grep -o '"failed[^"]*"' | wc -l)
fact alive yes
