# kill -9 of the agent in the middle of a burst of bind/unbind cycles; the cycles go on while no
# agent runs (the pinned programs keep writing to the pinned ring), then a new agent starts. The
# host checks made = seen by both agents + counted lost (`lost` lines and the new agent's
# `restart` missed). The cycles pause while the new agent attaches: while its links replace the
# old ones both programs run for a moment and a record would be made twice.
. /lib/vm/lib.sh
. /lib/vm/burst.sh
agent=$(pidof enforcer)
burst_prepare
: > /tmp/burst.pause.ack
burst_cycles_bg 1200
# The kill comes after a count of cycles, not a time: a fast machine ran all 1,200 in 5 s.
i=0
while [ $(burst_done) -lt 100 ] && [ -e /tmp/burst.running ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done
kill -KILL $agent
# Hold the cycles while the killed agent exits (seconds on 5.10): a fast machine would finish
# the burst before the "no agent" phase starts. The kill itself lands among running cycles.
touch /tmp/burst.pause
i=0
while [ -e /proc/$agent ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
fact agent_killed $([ -e /proc/$agent ] && echo no || echo yes)
i=0
while [ "$(cat /tmp/burst.pause.ack)" != paused ] && [ -e /tmp/burst.running ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
fact cycles_at_kill $(burst_done)
rm -f /tmp/burst.pause
# Enough cycles with no agent to overflow the ring (1,500 records fit): 2 records a cycle.
i=0
start=$(burst_done)
while [ $(($(burst_done) - start)) -lt 900 ] && [ -e /tmp/burst.running ] && [ $i -lt 900 ]; do
	sleep 0.1
	i=$((i + 1))
done
fact cycles_without_agent $(($(burst_done) - start))
touch /tmp/burst.pause
i=0
while [ "$(cat /tmp/burst.pause.ack)" != paused ] && [ -e /tmp/burst.running ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
enforcer > /tmp/second.out 2> /tmp/second.err &
second=$!
i=0
while ! grep -q '"type":"ready"' /tmp/second.out && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
fact second_ready $(grep -q '"type":"ready"' /tmp/second.out && echo yes || echo no)
rm -f /tmp/burst.pause
i=0
while [ -e /tmp/burst.running ] && [ $i -lt 1500 ]; do sleep 0.1; i=$((i + 1)); done
sleep 3
kill -TERM $second
wait $second
fact second_rc $?
burst_facts
# What the second agent saw (the first one's lines are the boot's event stream).
fact second_binds $(grep '"kind":"bind"' /tmp/second.out | grep "\"device\":\"$BURST_DEV\"" | grep -c '"result":"ok"')
fact second_unbinds $(grep '"kind":"unbind"' /tmp/second.out | grep -c "\"device\":\"$BURST_DEV\"")
fact second_lost $(sed -n 's/.*"type":"lost".*"count":\([0-9]*\).*/\1/p' /tmp/second.out | awk '{s+=$1} END {print s+0}')
fact second_missed $(sed -n 's/.*"type":"restart".*"missed":\([0-9]*\).*/\1/p' /tmp/second.out | head -1)
fact second_restart_lines $(grep -c '"type":"restart"' /tmp/second.out)
grep -v '"kind":"bind"\|"kind":"unbind"' /tmp/second.out | sed 's/^/  second agent: /'
sed 's/^/  second agent: /' /tmp/second.err | tail -20
