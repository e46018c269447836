# Device-plugin attribution from the kubelet's pod-resources socket: the setup
# (setup.sh) started a fake kubelet allocating VM_DEV_FN0 to
# vms/virt-launcher-vm-a (plus a GPU UUID, an id the agent ignores) and the agent with
# --pod-resources-socket. A VM claims FN0's group: its events name that pod. A device nobody
# was allocated (VM_DEV_SWITCH, a group of its own) goes to vfio-pci: its events name none.
# Then the fake kubelet is killed and the switch's group opened: the list it causes fails.
. /lib/vm/lib.sh
sed 's/^/  setup: /' /tmp/setup.out
fact server_up $(grep -q '^serving' /tmp/pod-resources.out && echo yes || echo no)
g=$(group_of $VM_DEV_FN0)
fact group $g
bind_vfio $VM_DEV_FN0
bind_vfio $VM_DEV_FN1
fact fn0_driver $(driver_of $VM_DEV_FN0)
hold $g $VM_DEV_FN0 || exit 1
fact holder $HOLDER_PID
sleep 2
release
fact switch_group $(group_of $VM_DEV_SWITCH)
bind_vfio $VM_DEV_SWITCH
sleep 1
sed 's/^/  fake kubelet: /' /tmp/pod-resources.out
fact server_alive $(kill -0 $(cat /run/pod-resources/server.pid) 2>/dev/null && echo yes || echo no)
fact lists $(grep -c '^call /v1.PodResourcesLister/List$' /tmp/pod-resources.out)
# The agent's log: the start's list found the one PCI device, and no list failed.
fact listed_one $(grep -c "pod-resources socket /run/pod-resources/kubelet.sock: 1 PCI devices allocated" /tmp/agent.err)
fact list_failures $(grep -c 'allocations known' /tmp/agent.err)
# The kubelet goes away. The next VFIO open of a group none of whose members the table knows
# (the switch's), 10 s after the last list, lists again: that list fails, the table stands.
kill $(cat /run/pod-resources/server.pid)
sleep 11
hold $(group_of $VM_DEV_SWITCH) || exit 1
sleep 1
release
sleep 1
grep 'pod-resources' /tmp/agent.err | sed 's/^/  agent log: /'
fact failures_after_kill $(grep -c 'allocations known' /tmp/agent.err)
fact table_kept $(grep -c 'keeping the 1 allocations known' /tmp/agent.err)
