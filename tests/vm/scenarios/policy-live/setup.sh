# Sourced by /init before the agent: the (empty) policy laid out as a Kubernetes ConfigMap volume
# mounts it, policy.toml -> ..data/policy.toml and ..data -> ..<timestamp>/, so that the scenario
# can update it the kubelet's way (guest.sh). The agent runs with --policy on the symlink.
d=/etc/iommu-enforcer
ts=..2026_12_07_00_00_00.000000001
mkdir -p $d/$ts
mv $d/policy.toml $d/$ts/policy.toml
ln -s $ts $d/..data
ln -s ..data/policy.toml $d/policy.toml
ls -la $d
