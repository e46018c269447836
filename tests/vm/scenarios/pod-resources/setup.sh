# Sourced by /init before it starts the agent: a fake kubelet (pod-resources-server, from the
# holder crate) on the pod-resources socket, allocating VM_DEV_FN0 to vms/virt-launcher-vm-a,
# and the agent's flag for it. The agent lists once at start, so the socket must answer first.
PR_SOCKET=/run/pod-resources/kubelet.sock
mkdir -p /run/pod-resources
pod-resources-server $PR_SOCKET $VM_DEV_FN0 > /tmp/pod-resources.out 2>&1 &
echo $! > /run/pod-resources/server.pid
i=0
while ! grep -q '^serving' /tmp/pod-resources.out && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
cat /tmp/pod-resources.out
VM_AGENT_ARGS="$VM_AGENT_ARGS --pod-resources-socket $PR_SOCKET"
