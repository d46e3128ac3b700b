# boot: Xen and the PV dom0 are up, the toolstack answers.
. /e2e/lib.sh
e2e_report dom0_ready_uptime_s "$(cat /run/e2e-ready-uptime)"
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
echo "E2E-INFO boot OK"
