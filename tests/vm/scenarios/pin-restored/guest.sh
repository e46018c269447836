# A pin cleared behind the agent's back, by the policy's trusted writer (no hook stops it),
# first with write(2), then with io_uring (the store runs from the kernel's side of the ring),
# is put back as soon as the kernel records the store (fexit dev_attr_store): no timer runs.
. /lib/vm/lib.sh
f=$(pcidev $VM_DEV_FN1)/driver_override
fact fn1_override "$(cat $f)"
# A lone newline clears driver_override (as `echo "" >` does); an empty write never reaches it.
nl=$(printf '\nx')
nl=${nl%x}
for mode in write io_uring; do
	r=$(trusted-sysfs-write $mode $f "$nl")
	echo "+ trusted-sysfs-write $mode clears the pin: $r"
	fact ${mode}_clear "$(echo $r | tr ' ' '_')"
	i=0
	while [ "$(cat $f)" != none ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	fact ${mode}_restored "$(cat $f)"
	fact ${mode}_restored_ms $((i * 100))
	# The restore's lines are out before the next round.
	sleep 1
done
fact alive yes
