# relocd-migrate-refused (two hosts): B's relocd admits only a host that is
# not A (hosts-allow): `relocd migrate --live` from A fails with a refusal
# (non-zero exit status, the reason printed), the guest counts on at A
# untouched (same domain id, running, memory intact), B gets no domain.
. /e2e/lib.sh
. /e2e/lib-migrate.sh
# B admits only hosts that are not A
[ "$E2E_MIG_ROLE" = B ] && E2E_MIG_ALLOW='^10\\.9\\.9\\.9$ ^elsewhere$'
e2e_mig_start e2e_mig_end

case "$E2E_MIG_ROLE" in
A)
  e2e_mig_guest96
  e2e_guest_start
  e2e_mig_sync ready
  domid=$(xl domid $E2E_GUEST)
  e2e_step relocd-migrate sh -c "relocd --control $E2E_MIG_SOCK migrate --live $E2E_GUEST $E2E_MIG_PEER > /tmp/migrate.out 2>&1"
  rc=$?
  cat /tmp/migrate.out
  e2e_collect /tmp/migrate.out migrate.out
  e2e_report migrate_rc "$rc"
  e2e_report migrate_message "$(tr '\n' ' ' < /tmp/migrate.out)"
  e2e_mig_tell "done $rc" || e2e_fail "cannot tell B"
  [ $rc != 0 ] || e2e_fail "relocd migrate to a host that does not admit A succeeded"
  grep -qi "refus\|not allowed\|not admit\|denied\|hosts-allow" /tmp/migrate.out \
    || e2e_fail "relocd migrate failed without saying it was refused: $(tr '\n' ' ' < /tmp/migrate.out)"
  [ "$(xl domid $E2E_GUEST 2>/dev/null)" = "$domid" ] || e2e_fail "the guest's domain id changed ($domid)"
  e2e_mig_counts_on refusal
  e2e_mig_lists_agree after
  e2e_mig_sync checked
  e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
  ;;
B)
  e2e_mig_sync ready
  said=$(e2e_mig_hear 300)
  e2e_report a_said "$said"
  e2e_mig_no_guest "the refused migration" 5
  e2e_mig_lists_agree after
  grep -i "refus\|not allowed\|denied\|hosts-allow" "$E2E_MIG_LOG" | tail -3
  e2e_mig_sync checked
  ;;
esac
echo "E2E-INFO relocd-migrate-refused: host $E2E_MIG_ROLE OK"
