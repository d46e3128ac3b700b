# xen-probe: `relocd xen-probe` on the running test guest: pause/unpause,
# log-dirty (pages dirtied while it runs, none while paused; needs the
# shadow-paging hypervisor), a foreign mapping of its console ring that
# reads a line the guest wrote; once through xenstored's socket, once through
# /dev/xen/xenbus. The guest must go on counting afterwards.
. /e2e/lib.sh
e2e_guest_start
e2e_step probe sh -c "relocd xen-probe $E2E_GUEST > /tmp/probe.txt 2>&1"
rc=$?
cat /tmp/probe.txt
e2e_collect /tmp/probe.txt xen-probe.txt
for c in pause logdirty-running logdirty-paused logdirty-off foreign-map left-running; do
  awk -v c=$c '$2 == c { found = 1 } END { exit !found }' /tmp/probe.txt || e2e_fail "xen-probe printed no $c check"
done
[ "$rc" = 0 ] || e2e_fail "xen-probe exited $rc"
e2e_report dirtied_running "$(awk '$2 == "logdirty-running" { print $3 "/" $5 }' /tmp/probe.txt)"
e2e_report dirtied_paused "$(awk '$2 == "logdirty-paused" { print $3 "/" $5 }' /tmp/probe.txt)"
# the line read through the mapping is one the guest printed
seen=$(sed -n 's/.*last line "\(GUEST counter=[0-9]*\).*/\1/p' /tmp/probe.txt)
[ -n "$seen" ] || e2e_fail "the console ring read through the mapping holds no GUEST line"
grep -q "$seen " "$E2E_GUEST_LOG" || e2e_fail "'$seen' is not in the guest's console log"
e2e_report mapped_line "$(echo "$seen" | tr ' ' _)"
xl list | grep "^$E2E_GUEST " | grep -q -- '--p---' && e2e_fail "the guest is left paused"
# the same through the kernel's xenbus device instead of xenstored's socket
# (what a driver domain without xenstored has)
if [ -e /dev/xen/xenbus ]; then
  e2e_step probe-xenbus sh -c "RELOCD_XENSTORE=/dev/xen/xenbus relocd xen-probe $E2E_GUEST > /tmp/probe-xenbus.txt 2>&1"
  rc=$?
  cat /tmp/probe-xenbus.txt
  e2e_collect /tmp/probe-xenbus.txt xen-probe-xenbus.txt
  grep -q "xenstore through /dev/xen/xenbus" /tmp/probe-xenbus.txt \
    || e2e_fail "xen-probe did not use /dev/xen/xenbus"
  [ "$rc" = 0 ] || e2e_fail "xen-probe through /dev/xen/xenbus exited $rc"
else
  echo "E2E-WARN no /dev/xen/xenbus in dom0: the xenbus path is not tried"
fi
after=$(e2e_last_counter "$E2E_GUEST_LOG")
e2e_step counts-on e2e_wait_counter "$E2E_GUEST_LOG" $((after + 3)) 30 \
  || e2e_fail "the guest stopped counting after the probe"
grep -q GUEST-CORRUPT "$E2E_GUEST_LOG" && e2e_fail "the guest found its working set changed"
[ "$(grep -c GUEST-BOOTED "$E2E_GUEST_LOG")" = 1 ] || e2e_fail "the guest rebooted"
e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
echo "E2E-INFO xen-probe OK"
