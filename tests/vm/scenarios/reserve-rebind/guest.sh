# A policy with rebind = true rolled out on a node where the reserved functions already sit on a
# host driver: the new agent pins them, unbinds them from e1000 and probes them onto vfio-pci.
. /lib/vm/lib.sh
g=$(group_of $VM_DEV_FN0)
fact group $g
# The agent /init started (same policy) has readied both functions already: stop it and undo
# that, as on a node where e1000 had the functions before the policy arrived.
agent=$(pidof enforcer)
kill -TERM $agent
# The old agent must be gone, or it would move the functions back itself; its pinned programs
# outlive it and would refuse the undo below, so uninstall them as well (`enforcer detach`).
i=0
while kill -0 $agent 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
fact first_agent_exit_ms $((i * 100))
fact first_agent_gone $(kill -0 $agent 2>/dev/null && echo no || echo yes)
step enforcer detach
# The kernel frees a link whose last pin went in a work item after an RCU grace period: the hooks
# may still refuse for a moment after detach returns.
for d in $VM_DEV_FN0 $VM_DEV_FN1; do
	i=0
	while [ -e $(pcidev $d)/driver ] && ! write $d $(pcidev $d)/driver/unbind && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	clear_override $d
done
step modprobe e1000
fact fn0_before $(driver_of $VM_DEV_FN0)
fact fn1_before $(driver_of $VM_DEV_FN1)
enforcer --policy /etc/iommu-enforcer/policy.toml > /tmp/rebind.out 2> /tmp/rebind.err &
agent=$!
i=0
while ! grep -q '"type":"ready"' /tmp/rebind.out && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
sleep 2
kill -TERM $agent
wait $agent
# The whole run, for whoever reads a failure.
sed 's/^/  agent: /' /tmp/rebind.out
fact rebound_fn0 $(grep '"kind":"rebind"' /tmp/rebind.out | grep '"action":"rebound"' | grep -c "\"$VM_DEV_FN0\"")
fact rebound_fn1 $(grep '"kind":"rebind"' /tmp/rebind.out | grep '"action":"rebound"' | grep -c "\"$VM_DEV_FN1\"")
fact fn0_after $(driver_of $VM_DEV_FN0)
fact fn1_after $(driver_of $VM_DEV_FN1)
