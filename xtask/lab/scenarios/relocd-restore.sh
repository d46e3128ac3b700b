# relocd-restore: `relocd restore` of an `xl save` file of the running test
# guest: it counts on from where it was under its own name, xl list and
# relocd list agree; then `relocd save` (offline) and `relocd restore` of
# relocd's own file: it counts on again; `xl destroy` ends it.
. /e2e/lib.sh
. /e2e/lib-migrate.sh
SAVE=/var/lib/xen/save/$E2E_GUEST.save
rm -f /var/lib/xen/save/* "$E2E_MIG_LOG" "$E2E_MIG_CONFIG"
rm -rf "$E2E_MIG_STATE"
trap e2e_mig_end EXIT
e2e_mig_serve
e2e_guest_start
e2e_mig_lists_agree created

# 1: xl save -> relocd restore
e2e_step xl-save xl save $E2E_GUEST "$SAVE" || e2e_fail "xl save failed"
xl list | grep -q "^$E2E_GUEST " && e2e_fail "the guest still runs after xl save"
sleep 1   # let xenconsoled drain the last lines of the saved domain
before=$(e2e_last_counter "$E2E_GUEST_LOG")
from=$(e2e_log_mark)
e2e_report counter_at_xl_save "$before"
e2e_step relocd-restore-xl sh -c "relocd --control $E2E_MIG_SOCK restore $SAVE > /tmp/restore1.out 2>&1"
rc=$?
cat /tmp/restore1.out
e2e_report relocd_restore_of_xl_save "rc=$rc $(head -1 /tmp/restore1.out)"
if [ $rc = 0 ]; then
  xl list | grep -q "^$E2E_GUEST " || e2e_fail "relocd restore: no $E2E_GUEST in xl list"
  e2e_guest_goes_on restore-xl "$before" "$E2E_GUEST_LOG" "$from"
else
  # go on with xl's restore, to test relocd's save and restore after it
  e2e_mig_soft_fail "relocd restore of the xl save file failed (rc $rc): $(tail -1 /tmp/restore1.out)"
  e2e_mig_no_guest "the failed relocd restore" 5
  e2e_step xl-restore-xl xl restore "$SAVE" || e2e_fail "xl restore failed too"
  e2e_guest_goes_on xl-restore "$before" "$E2E_GUEST_LOG" "$from"
fi
e2e_mig_lists_agree restored-xl
rm -f "$SAVE"

# 2: relocd save (offline) -> relocd restore
e2e_step relocd-save sh -c "relocd --control $E2E_MIG_SOCK save $E2E_GUEST $SAVE > /tmp/save2.out 2>&1"
rc=$?
cat /tmp/save2.out
[ $rc = 0 ] || e2e_fail "relocd save failed (rc $rc): $(tail -1 /tmp/save2.out)"
e2e_report relocd_save_bytes "$(wc -c < "$SAVE")"
xl list | grep -q "^$E2E_GUEST " && e2e_fail "the guest still runs after relocd save"
sleep 1
before=$(e2e_last_counter "$E2E_GUEST_LOG")
from=$(e2e_log_mark)
e2e_report counter_at_relocd_save "$before"
e2e_step relocd-restore-relocd sh -c "relocd --control $E2E_MIG_SOCK restore $SAVE > /tmp/restore2.out 2>&1"
rc=$?
cat /tmp/restore2.out
if [ $rc = 0 ]; then
  e2e_guest_goes_on restore-relocd "$before" "$E2E_GUEST_LOG" "$from"
else
  e2e_mig_soft_fail "relocd restore of relocd's save file failed (rc $rc): $(tail -1 /tmp/restore2.out)"
  e2e_mig_no_guest "the failed relocd restore" 5
  e2e_step xl-restore-relocd xl restore "$SAVE" || e2e_fail "xl restore of relocd's file failed too"
  e2e_guest_goes_on xl-restore-relocd "$before" "$E2E_GUEST_LOG" "$from"
fi
e2e_mig_lists_agree restored-relocd
rm -f "$SAVE"

e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy of the restored guest failed"
e2e_mig_no_guest "xl destroy" 10
e2e_mig_lists_agree destroyed
[ $E2E_MIG_FAILED = 0 ] || exit 1
echo "E2E-INFO relocd-restore OK"
