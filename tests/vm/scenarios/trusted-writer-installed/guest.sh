# A trusted writer installed after the agent started (its directory made first, the file put
# in place by rename as package managers do) is trusted once it lands, without a restart.
. /lib/vm/lib.sh
f=$(pcidev $VM_DEV_FN1)/driver_override
mkdir -p /tmp/stage
cp $(command -v sysfs-write) /tmp/stage/late-writer
# The same program at a path the policy does not name: not trusted.
fact before $(/tmp/stage/late-writer write $f none | tr ' ' '_')
mkdir -p /opt/late/bin
cp /tmp/stage/late-writer /opt/late/bin/.late-writer.new
mv /opt/late/bin/.late-writer.new /opt/late/bin/late-writer
echo "+ installed /opt/late/bin/late-writer"
# Wait (bounded) for the agent to say it re-resolved: it reacts to the inotify event.
i=0
while [ $i -lt 100 ] && ! grep -q "trusted writers re-resolved: 2 of 2 present" /tmp/agent.err; do
	sleep 0.1
	i=$((i + 1))
done
fact reresolved $(grep -q "trusted writers re-resolved: 2 of 2 present" /tmp/agent.err && echo yes || echo no)
fact after $(/opt/late/bin/late-writer write $f none | tr ' ' '_')
fact fn1_override "$(cat $f)"
