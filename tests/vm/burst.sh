# Helpers of the burst scenarios (scenarios/burst, scenarios/kill-mid-burst): after lib.sh.
# BURST_DEV cycles between pci-stub and no driver; BURST_VFIO is on vfio-pci, its group file
# the flood's target. Counts land in /tmp/burst.* and become facts in burst_facts.
BURST_DEV=$VM_DEV_SWITCH
BURST_VFIO=$VM_DEV_ALONE

burst_prepare() {
	modprobe pci-stub 2> /dev/null
	unbind $BURST_DEV
	write pci-stub $(pcidev $BURST_DEV)/driver_override
	unbind $BURST_VFIO
	bind_vfio $BURST_VFIO
	BURST_GROUP=$(group_of $BURST_VFIO)
	fact burst_device $BURST_DEV
	fact flood_group $BURST_GROUP
	echo 0 > /tmp/burst.done
	echo 0 > /tmp/burst.binds
	echo 0 > /tmp/burst.unbinds
	echo '{"opens_ok": 0, "opens_failed": 0}' > /tmp/burst.flood
	# Settle: the agent prints what the preparation did before the counted part starts.
	sleep 3
}

# burst_cycles N: N bind/unbind cycles in the foreground; a file /tmp/burst.pause holds them.
burst_cycles() {
	n=0
	b=0
	u=0
	t0=$(date +%s)
	while [ $n -lt $1 ]; do
		if [ -e /tmp/burst.pause ]; then
			echo paused > /tmp/burst.pause.ack
			sleep 0.1
			continue
		fi
		echo running > /tmp/burst.pause.ack
		{ echo $BURST_DEV > /sys/bus/pci/drivers/pci-stub/bind; } 2> /dev/null && b=$((b + 1))
		{ echo $BURST_DEV > /sys/bus/pci/drivers/pci-stub/unbind; } 2> /dev/null && u=$((u + 1))
		n=$((n + 1))
		echo $n > /tmp/burst.done
		echo $b > /tmp/burst.binds
		echo $u > /tmp/burst.unbinds
	done
	echo "+ $n cycles in $(($(date +%s) - t0)) s: $b binds, $u unbinds"
}

# The cycles done so far: the loop rewrites the file each cycle, so a read can find it empty.
burst_done() {
	c=
	while [ -z "$c" ]; do c=$(cat /tmp/burst.done); done
	echo $c
}

burst_cycles_bg() {
	touch /tmp/burst.running
	( burst_cycles $1; rm -f /tmp/burst.running ) &
}

# burst_flood N: N open+close of the group file.
burst_flood() {
	t0=$(date +%s)
	open-flood /dev/vfio/$BURST_GROUP $1 > /tmp/burst.flood
	echo "+ open-flood /dev/vfio/$BURST_GROUP $1 in $(($(date +%s) - t0)) s: $(cat /tmp/burst.flood)"
}

burst_facts() {
	fact cycles $(cat /tmp/burst.done)
	fact binds $(cat /tmp/burst.binds)
	fact unbinds $(cat /tmp/burst.unbinds)
	fact opens_ok $(sed -n 's/.*"opens_ok": *\([0-9]*\).*/\1/p' /tmp/burst.flood)
	fact opens_failed $(sed -n 's/.*"opens_failed": *\([0-9]*\).*/\1/p' /tmp/burst.flood)
	fact final_drivers "$(driver_of $BURST_DEV),$(driver_of $BURST_VFIO)"
}
