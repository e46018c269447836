# A malformed policy: the agent says where, exits 2 and attaches and pins nothing.
. /lib/vm/lib.sh
before="$(cat $(pcidev $VM_DEV_FN0)/driver_override) $(cat $(pcidev $VM_DEV_FN1)/driver_override)"
cat > /tmp/bad.toml <<'TOML'
protect_user_groups = true

[[reserve]]
device = "0000:05:00"
driver = "vfio-pci"
TOML
enforcer --policy /tmp/bad.toml > /tmp/bad.out 2> /tmp/bad.err
fact rc $?
sed 's/^/  stderr: /' /tmp/bad.err
fact stdout_lines $(wc -l < /tmp/bad.out)
fact names_location $(grep -q "bad.toml:4:" /tmp/bad.err && echo yes || echo no)
after="$(cat $(pcidev $VM_DEV_FN0)/driver_override) $(cat $(pcidev $VM_DEV_FN1)/driver_override)"
fact overrides_unchanged $([ "$before" = "$after" ] && echo yes || echo no)
