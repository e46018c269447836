# The policy's trusted writer, run under a tracer: the tracer decides what it writes, so it is
# not trusted. Untraced, the same executable may still write.
. /lib/vm/lib.sh
f=$(pcidev $VM_DEV_FN1)/driver_override
fact traced $(ptrace-run trusted-sysfs-write write $f e1000 | tr ' ' '_')
fact fn1_override "$(cat $f)"
fact untraced $(trusted-sysfs-write write $f none | tr ' ' '_')
fact alive yes
