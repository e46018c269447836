# Helpers for guest scripts: `. /lib/vm/lib.sh`. Every action prints what it did and how it ended,
# so the script output (target/vm/runs/<run>/script.out) reads as a transcript.
# `fact KEY VALUE` lines (`@fact KEY=VALUE`) are read by the host-side checks (check.rs); a
# fact a check reads and the script never printed fails the boot.

fact() { echo "@fact $1=$2"; }

pcidev() { echo /sys/bus/pci/devices/$1; }
group_of() { basename "$(readlink $(pcidev $1)/iommu_group)"; }
driver_of() {
	if [ -e $(pcidev $1)/driver ]; then basename "$(readlink $(pcidev $1)/driver)"; else echo none; fi
}

# errno name of the last failed write, from the shell's message (busybox prints strerror).
errname() {
	case "$1" in
	*"busy"*) echo EBUSY ;;
	*"not permitted"*) echo EPERM ;;
	*"temporarily unavailable"*) echo EAGAIN ;;
	*"No such device"*) echo ENODEV ;;
	*"Invalid argument"*) echo EINVAL ;;
	*"No such file"*) echo ENOENT ;;
	*) echo "?" ;;
	esac
}

# cmd 2>&1 | errname_of: `ok` when the command printed no error, else the errno's name.
errname_of() {
	err=$(cat)
	if [ -z "$err" ]; then echo ok; else errname "$err"; fi
}

# write VALUE FILE: prints the outcome; sets LAST_ERR to ok or the errno name.
write() {
	err=$( { echo "$1" > "$2"; } 2>&1 )
	if [ -z "$err" ]; then
		LAST_ERR=ok
		echo "+ echo '$1' > $2: ok"
		return 0
	fi
	LAST_ERR=$(errname "$err")
	echo "+ echo '$1' > $2: FAILED: $err ($LAST_ERR)"
	return 1
}

# bind_vfio DEV: the way a device plugin hands a device to vfio-pci.
bind_vfio() {
	write vfio-pci $(pcidev $1)/driver_override
	write $1 /sys/bus/pci/drivers_probe
	echo "  $1 is on $(driver_of $1)"
}

unbind() {
	[ -e $(pcidev $1)/driver ] && write $1 $(pcidev $1)/driver/unbind
	return 0
}

clear_override() { write "" $(pcidev $1)/driver_override; }

step() {
	echo "+ $*"
	"$@"
	rc=$?
	echo "  -> exit code $rc"
	return $rc
}

# sh -c "$IN_CGROUP" DIR CMD...: runs CMD as a process of the cgroup v2 directory DIR (the shell
# moves itself in, then execs CMD: same pid, so `$!` of it run in the background is CMD's).
# shellcheck disable=SC2016 # expanded by the sh -c that runs it
IN_CGROUP='echo $$ > "$0/cgroup.procs" && exec "$@"'
in_cgroup() { sh -c "$IN_CGROUP" "$@"; }

# hold GROUP [DEVICE]: claim the group with vfio-holder in the background, as a VM would, and wait
# until it holds it (0) or gave up (1). HOLDER_PID is the holder; with HOLD_CGROUP=DIR it runs in
# that cgroup.
hold() {
	out=/tmp/holder.$1.out
	: > $out
	if [ -n "$HOLD_CGROUP" ]; then
		sh -c "$IN_CGROUP" "$HOLD_CGROUP" vfio-holder "$@" > $out 2>&1 &
	else
		vfio-holder "$@" > $out 2>&1 &
	fi
	HOLDER_PID=$!
	i=0
	while [ $i -lt 300 ]; do
		if grep -q "^held group" $out; then
			sed 's/^/  holder: /' $out
			return 0
		fi
		if ! kill -0 $HOLDER_PID 2>/dev/null || grep -q "failed" $out; then
			wait $HOLDER_PID
			HOLDER_RC=$?
			sed 's/^/  holder: /' $out
			echo "  holder exit code $HOLDER_RC"
			return 1
		fi
		sleep 0.1
		i=$((i + 1))
	done
	echo "  holder did not report within 30 s"
	sed 's/^/  holder: /' $out
	return 1
}

release() {
	kill $HOLDER_PID 2>/dev/null
	wait $HOLDER_PID 2>/dev/null
	echo "+ released (holder $HOLDER_PID ended)"
}

show() {
	for d in "$@"; do echo "  $d: group $(group_of $d), driver $(driver_of $d)"; done
}

# try MODE FILE DATA: one write by sysfs-write (write, pwrite, writev, io_uring); prints its
# outcome with `_` for spaces (`ok`, `error_EPERM`) for `fact`, and the whole line on stderr.
try() {
	r=$(sysfs-write "$@")
	echo "+ sysfs-write $*: $r" >&2
	echo "$r" | tr ' ' '_'
}

# hostile_start DEV=DRIVER...: in the background, until hostile_stop, keep trying to put the
# host driver DRIVER on each DEV by every sysfs path (override, bind, unbind of its driver,
# remove), as an operator or a buggy stack would while a VM holds the group. Each write that
# went through is a win.
hostile_start() {
	rm -f /tmp/hostile.stop /tmp/hostile.count
	(
		tries=0
		wins=0
		while [ ! -e /tmp/hostile.stop ]; do
			for pair in "$@"; do
				d=${pair%%=*}
				drv=${pair#*=}
				for w in "$drv $(pcidev $d)/driver_override" "$d /sys/bus/pci/drivers/$drv/bind" \
					"$d $(pcidev $d)/driver/unbind" "1 $(pcidev $d)/remove"; do
					tries=$((tries + 1))
					# shellcheck disable=SC2086
					if { echo ${w%% *} > ${w#* }; } 2>/dev/null; then
						wins=$((wins + 1))
						echo "  hostile: WON: echo ${w%% *} > ${w#* }"
					fi
				done
			done
		done
		echo "$tries $wins" > /tmp/hostile.count
	) &
	HOSTILE_PID=$!
	echo "+ hostile actor $HOSTILE_PID started on $*"
}

# hostile_stop: stops the actor and reports `hostile_tries` and `hostile_wins` (accumulated
# over every start in this boot).
hostile_stop() {
	: > /tmp/hostile.stop
	wait $HOSTILE_PID 2>/dev/null
	read -r t w < /tmp/hostile.count
	HOSTILE_TRIES=$((${HOSTILE_TRIES:-0} + t))
	HOSTILE_WINS=$((${HOSTILE_WINS:-0} + w))
	echo "+ hostile actor stopped: $t tries, $w went through"
	fact hostile_tries $HOSTILE_TRIES
	fact hostile_wins $HOSTILE_WINS
}

# detach_to_vfio DEV: what libvirt's managed hostdev (virsh nodedev-detach) and the GPU
# stacks do: pin vfio-pci, unbind the host driver, probe.
detach_to_vfio() {
	write vfio-pci $(pcidev $1)/driver_override
	[ -e $(pcidev $1)/driver ] && write $1 $(pcidev $1)/driver/unbind
	write $1 /sys/bus/pci/drivers_probe
	echo "  $1 is on $(driver_of $1)"
}

# reattach DEV: virsh nodedev-reattach: unbind vfio-pci, clear the override, probe the host
# driver. Reports `reattach_<step>_<n>` facts for device number N.
reattach() {
	n=$2
	r=ok
	[ -e $(pcidev $1)/driver ] && { write $1 $(pcidev $1)/driver/unbind || r=$LAST_ERR; }
	fact reattach_unbind_$n $r
	write "" $(pcidev $1)/driver_override
	fact reattach_override_$n $LAST_ERR
	write $1 /sys/bus/pci/drivers_probe
	fact reattach_probe_$n $LAST_ERR
	echo "  $1 is on $(driver_of $1)"
}
