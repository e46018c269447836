# The kernel can block a sysfs read for as long as user space holds a VFIO device: on 5.10 (no
# BPF LSM to refuse it) `remove` of a held device waits in vfio-pci's remove for the device fd to
# close, holding the device lock that reading driver_override takes. The agent's sysfs work runs
# with a deadline on its own thread: the event loop keeps serving and handling events, says a
# re-read stalled, and catches up once the holder lets go.
. /lib/vm/lib.sh
dev=$VM_DEV_ALONE
g=$(group_of $dev)
fact group $g
bind_vfio $dev
hold $g $dev || exit 1
agent=$(pidof enforcer)
( echo 1 > $(pcidev $dev)/remove ) &
remover=$!
# Past the attribute deadline (2 s), with room for TCG.
sleep 6
fact remove_blocked $(kill -0 $remover 2>/dev/null && echo yes || echo no)
# A re-read while the worker is stuck: a VFIO open (refused, the group is held) asks for one.
( exec 3< /dev/vfio/$g ) 2>/dev/null
sleep 4
# State of the agent's main thread (the sysfs-io worker is the one asleep in the kernel).
fact agent_main_state $(cut -d' ' -f3 /proc/$agent/stat)
for t in /proc/"$agent"/task/*; do echo "  thread $(cat $t/comm): $(cut -d' ' -f3 $t/stat)"; done
fact healthz_during_stall $(timeout 5 wget -q -O - http://127.0.0.1:9477/healthz >/dev/null 2>&1 && echo 200 || echo no)
release
i=0
while kill -0 $remover 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
fact removed_after_release $([ -e $(pcidev $dev) ] && echo no || echo yes)
write 1 /sys/bus/pci/rescan
sleep 3
fact healthz_after $(timeout 5 wget -q -O - http://127.0.0.1:9477/healthz >/dev/null 2>&1 && echo 200 || echo no)
show $dev
fact fn1_driver $(driver_of $VM_DEV_FN1)
fact alive yes
