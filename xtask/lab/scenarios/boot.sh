# boot: Xen and the PV dom0 are up, the toolstack answers.
. /e2e/lib.sh
e2e_report dom0_ready_uptime_s "$(cat /run/e2e-ready-uptime)"
# of which loading netback, blkback, loop and the bridge (dom0/init)
e2e_report dom0_backends_setup_s "$(cat /run/e2e-backends-secs)"
for d in xenstored xenconsoled; do
  pidof $d >/dev/null || e2e_fail "$d is not running"
done
e2e_step xl-info sh -c 'xl info > /tmp/xl-info.txt' || e2e_fail "xl info failed"
e2e_collect /tmp/xl-info.txt xl-info.txt
v=$(awk -F': *' '/^xen_version/ {print $2}' /tmp/xl-info.txt)
[ -n "$v" ] || e2e_fail "xl info shows no xen_version"
e2e_report xen_version "$v"
e2e_report xen_free_mib "$(awk -F': *' '/^free_memory/ {print $2}' /tmp/xl-info.txt)"
e2e_step xl-list sh -c 'xl list > /tmp/xl-list.txt' || e2e_fail "xl list failed"
cat /tmp/xl-list.txt
grep -q '^Domain-0 ' /tmp/xl-list.txt || e2e_fail "xl list does not show Domain-0"
name=$(xenstore-read /local/domain/0/name) || e2e_fail "xenstore-read failed"
[ "$name" = Domain-0 ] || e2e_fail "xenstore names dom0 '$name'"
# what guests with a vif and a vbd need: the backends, the bridge with
# dom0's address, Xen's hotplug scripts and what they run, the shared disk
for m in xen_netback xen_blkback bridge; do
  [ -d /sys/module/$m ] || e2e_fail "module $m is not loaded"
done
[ -d /sys/class/net/xenbr0/bridge ] || e2e_fail "no bridge xenbr0"
ip addr show dev xenbr0 | grep -q 'inet 169\.254\.' || e2e_fail "xenbr0 has no link-local address"
for f in vif-bridge block xen-hotplug-common.sh xen-network-common.sh locking.sh logging.sh; do
  [ -f /etc/xen/scripts/$f ] || e2e_fail "no /etc/xen/scripts/$f"
done
bash -c 'exit 0' || e2e_fail "bash does not run"
flock -V >/dev/null 2>&1 || flock /tmp true || e2e_fail "flock does not run"
[ -b "$E2E_SHARED" ] || e2e_fail "no shared disk $E2E_SHARED"
[ -b "$E2E_XFER" ] || e2e_fail "no transfer disk $E2E_XFER"
e2e_report transfer_disk "$E2E_XFER -> $(readlink "$E2E_XFER")"
e2e_report shared_disk "$E2E_SHARED -> $(readlink "$E2E_SHARED"), $(($(blockdev --getsize64 "$E2E_SHARED") / 1048576)) MiB"
echo "E2E-INFO boot OK"
