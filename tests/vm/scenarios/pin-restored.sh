# A pin cleared behind the agent's back (here by the policy's trusted writer; on 5.10 acct(2)
# writes through a path no hook sees) is put back on the next pin-watch pass (1 s), with an event.
. /lib/vm/lib.sh
fact fn1_override "$(cat $(pcidev $VM_DEV_FN1)/driver_override)"
# A lone newline clears driver_override (as `echo "" >` does); an empty write never reaches it.
nl=$(printf '\nx')
nl=${nl%x}
r=$(trusted-sysfs-write write $(pcidev $VM_DEV_FN1)/driver_override "$nl")
echo "+ trusted-sysfs-write clears the pin: $r"
fact cleared "$(cat $(pcidev $VM_DEV_FN1)/driver_override)"
i=0
while [ "$(cat $(pcidev $VM_DEV_FN1)/driver_override)" != none ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
fact restored "$(cat $(pcidev $VM_DEV_FN1)/driver_override)"
fact restored_ms $((i * 100))
fact alive yes
