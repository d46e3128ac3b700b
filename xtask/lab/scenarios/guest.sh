# guest: create the PV test guest, watch it count, xl save + xl restore it,
# and check that it goes on counting from where it was, its memory intact.
# The save file is exported for Xen's verify-stream-v2 on the build host.
. /e2e/lib.sh
SAVE=/var/lib/xen/save/$E2E_GUEST.save
rm -f "$SAVE"
e2e_guest_start
xl list

e2e_step save xl save $E2E_GUEST "$SAVE" || e2e_fail "xl save failed"
xl list | grep -q "^$E2E_GUEST " && e2e_fail "the guest still runs after xl save"
e2e_report save_bytes "$(wc -c < "$SAVE")"
sleep 1   # let xenconsoled drain the last lines of the saved domain
before=$(e2e_last_counter "$E2E_GUEST_LOG")
from=$(e2e_log_mark)
e2e_report counter_at_save "$before"
e2e_export "$SAVE" xl.save || e2e_fail "the save file could not be exported"

e2e_step restore xl restore "$SAVE" || e2e_fail "xl restore failed"
e2e_guest_goes_on restore "$before" "$E2E_GUEST_LOG" "$from"

e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
rm -f "$SAVE"
e2e_collect "$E2E_GUEST_LOG" guest-console.log
echo "E2E-INFO guest OK: counter $before at save, $((before + 1)) first after restore"
