# driver-domain-migrate (two FLASK hosts): a relocd domain (relocd_t,
# domain 1) on each host, no relocd process in either dom0 (checked). A's
# dom0 starts the test guest (domU_t); `relocd migrate --live --compress`,
# run in A's relocd domain, moves it to B's relocd domain over the bridged
# link. On B the counter goes on from where it was on A with its memory
# checks passing, A no longer has the guest, and the relocd domain's
# `relocd list` agrees with dom0's `xl list` on both hosts. Figures: the
# relocd domain's (memory, vCPUs, relocd's RSS, boot) and relocd's
# migration figures (rounds, pages, bytes, total time, downtime).
. /e2e/lib.sh
. /e2e/lib-migrate.sh
. /e2e/dd/lib-dd.sh
[ -n "$E2E_MIG_PEER" ] || e2e_fail "no e2e.peer on the kernel command line (run with two hosts)"
# e2e_dd_end: the EXIT trap: the relocd domain's log, then lib-migrate's
e2e_dd_end() {
  _ddrc=$?
  e2e_dd 'cat /tmp/relocd-serve.log' > /tmp/dd-serve.log 2>&1
  e2e_collect /tmp/dd-serve.log relocd-domain-serve.log
  (exit $_ddrc)
  e2e_mig_end
}
trap e2e_dd_end EXIT
e2e_dd_wait
e2e_dd_no_dom0_relocd
e2e_dd_report_figures
e2e_mig_wait_link
peer_dd=$(e2e_dd_role_ip B)
[ "$E2E_MIG_ROLE" = B ] && peer_dd=$(e2e_dd_role_ip A)
e2e_step dd-link e2e_dd "ping -c 3 -W 2 $peer_dd" || e2e_fail "the relocd domain cannot reach the peer's ($peer_dd)"

# e2e_dd_lists_agree WHEN: the guest's line in the relocd domain's list
# and in dom0's xl list (present on both, or on neither)
e2e_dd_lists_agree() {
  e2e_dd 'relocd --control /run/relocd.sock list' > /tmp/dd-list-$1.txt
  _rc=$?
  cat /tmp/dd-list-$1.txt
  e2e_collect /tmp/dd-list-$1.txt "relocd-domain-list-$1.txt"
  [ $_rc = 0 ] || e2e_fail "relocd list in the relocd domain failed (rc $_rc)"
  _r=0; grep -q "$E2E_GUEST" /tmp/dd-list-$1.txt && _r=1
  _x=0; xl list | grep -q "^$E2E_GUEST " && _x=1
  [ $_r = $_x ] || e2e_fail "$1: relocd list ($_r) and xl list ($_x) disagree on $E2E_GUEST"
}

case "$E2E_MIG_ROLE" in
A)
  e2e_mig_guest96
  E2E_GUEST_LOG=$E2E_CONSOLE_DIR/guest-$E2E_GUEST.log
  xl destroy $E2E_GUEST >/dev/null 2>&1
  rm -f "$E2E_GUEST_LOG"
  e2e_step create xl create "$E2E_GUEST_CFG" || e2e_fail "xl create failed"
  e2e_step first-counter e2e_wait_counter "$E2E_GUEST_LOG" 5 120 || e2e_fail "the guest never counted"
  e2e_mig_timeline_listen
  e2e_mig_sync ready
  e2e_mig_timeline_relay
  e2e_dd_lists_agree before
  domid=$(xl domid $E2E_GUEST)
  e2e_step dd-migrate e2e_dd "relocd --control /run/relocd.sock migrate --live --compress --json $E2E_GUEST $peer_dd > /tmp/migrate.json 2> /tmp/migrate.err; rc=\$?; cat /tmp/migrate.json; cat /tmp/migrate.err >&2; exit \$rc" > /tmp/migrate.out
  rc=$?
  cat /tmp/migrate.out
  e2e_collect /tmp/migrate.out migrate.out
  if [ $rc != 0 ]; then
    e2e_mig_tell "failed" 20
    e2e_fail "relocd migrate --live from the relocd domain failed (rc $rc): $(tail -2 /tmp/migrate.out | tr '\n' ' ')"
  fi
  grep '^{' /tmp/migrate.out | tail -1 > /tmp/migrate.json
  e2e_mig_report_json migrate /tmp/migrate.json
  sleep 1
  before=$(e2e_last_counter "$E2E_GUEST_LOG")
  e2e_report counter_at_suspend "$before"
  e2e_mig_tell "$before" || e2e_fail "cannot tell B the counter"
  xl list | grep -q "^$E2E_GUEST " && e2e_fail "the guest is still on A after the migration"
  xl list | awk '$2 == "'"$domid"'"' | grep -q . && e2e_fail "domain $domid is still on A"
  e2e_dd_lists_agree after
  # a figure, not a check (the migration's checks are above and on B)
  e2e_mig_gap migrate "$before" || echo "E2E-WARN no guest-measured gap"
  e2e_report dd_relocd_after_migration "$(e2e_dd 'grep -E "VmRSS|VmHWM" /proc/$(pidof relocd)/status' | tr -s ' \t\n' ' ')"
  e2e_dd_no_dom0_relocd
  e2e_mig_sync checked
  ;;
B)
  # no guest of that name here, nor its console log (an earlier scenario
  # on these hosts may have run one): the log read below is the arrival's
  xl destroy $E2E_GUEST >/dev/null 2>&1
  rm -f "$E2E_CONSOLE_DIR"/guest-$E2E_GUEST*.log
  e2e_mig_timeline_listen
  e2e_mig_sync ready
  e2e_mig_timeline_relay
  before=$(e2e_mig_hear 400)
  case "$before" in
    ''|*[!0-9]*) e2e_fail "A's migration failed ('$before')" ;;
  esac
  xl list -Z
  xl list | grep -q "^$E2E_GUEST " || e2e_fail "no $E2E_GUEST on B after the migration"
  xl list -Z | grep "^$E2E_GUEST " | grep -q domU_t || e2e_fail "the guest is not domU_t on B"
  log=$(ls -t "$E2E_CONSOLE_DIR"/guest-$E2E_GUEST*.log 2>/dev/null | head -1)
  [ -n "$log" ] || e2e_fail "no guest console log on B"
  e2e_guest_goes_on migrate "$before" "$log" 1
  e2e_dd_lists_agree after
  e2e_report dd_relocd_after_migration "$(e2e_dd 'grep -E "VmRSS|VmHWM" /proc/$(pidof relocd)/status' | tr -s ' \t\n' ' ')"
  e2e_dd_no_dom0_relocd
  e2e_mig_sync checked
  e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy on B failed"
  ;;
esac
echo "E2E-INFO driver-domain-migrate: host $E2E_MIG_ROLE OK"
