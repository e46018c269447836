# A burst: 1,000 bind/unbind cycles of pci-stub on the device below the switch, then a flood of
# opens of a VFIO group file while the agent is stopped (SIGSTOP), so the ring overflows. The
# host checks that every record made was printed or counted lost, and that the agent's final
# verdicts match the audit's fresh read of sysfs. Sized for TCG on 2 busy cores.
. /lib/vm/lib.sh
. /lib/vm/burst.sh
agent=$(pidof enforcer)
burst_prepare
burst_cycles 1000
# Let the agent catch up before it is stopped: the flood's records alone fill the ring.
sleep 3
kill -STOP $agent
burst_flood 4000
kill -CONT $agent
# Until the agent has read the ring, counted the losses and resynced (several seconds under TCG
# on 5.10 and 6.1), so that all of it is printed before the script ends.
i=0
while ! grep -q '"type":"resync"' /tmp/agent.out && [ $i -lt 900 ]; do sleep 0.1; i=$((i + 1)); done
fact catch_up_ms $((i * 100))
sleep 3
burst_facts
fact alive $([ -e /proc/$agent ] && echo yes || echo no)
