# relocd-save: `relocd save` (offline, like xl save) of the running test
# guest through `relocd serve --backend xen`. The guest must be gone
# afterwards; the file must satisfy Xen's verify-stream-v2 (exported to the
# build host), `relocd inspect` and stock `xl restore`, after which the guest
# counts on from where it was, its memory intact.
. /e2e/lib.sh
SAVE=$E2E_SAVE_DIR/relocd.save
e2e_saves_clear; rm -f "$E2E_RELOCD_LOG"
e2e_relocd_serve
trap e2e_save_scenario_end EXIT
e2e_guest_start

e2e_step relocd-save sh -c "relocd --control $E2E_RELOCD_SOCK save $E2E_GUEST $SAVE > /tmp/save.txt 2>&1"
rc=$?
cat /tmp/save.txt
e2e_collect /tmp/save.txt relocd-save.txt
[ "$rc" = 0 ] || { e2e_collect "$E2E_RELOCD_LOG" relocd-serve.log
                   e2e_fail "relocd save exited $rc: $(tail -1 /tmp/save.txt)"; }
e2e_report relocd_save_s "$E2E_STEP_SECS"
[ -f "$SAVE" ] || e2e_fail "relocd save left no $SAVE"
[ -e "$SAVE.tmp" ] && e2e_fail "relocd save left $SAVE.tmp behind"
xl list | grep -q "^$E2E_GUEST " && e2e_fail "the guest still exists after relocd save"
e2e_report relocd_save_bytes "$(wc -c < "$SAVE")"
sleep 1   # let xenconsoled drain the last lines of the saved domain
before=$(e2e_last_counter "$E2E_GUEST_LOG")
from=$(e2e_log_mark)
e2e_report counter_at_save "$before"

e2e_export "$SAVE" relocd.save || e2e_fail "the save file could not be exported"
e2e_step inspect sh -c "relocd inspect $SAVE > /tmp/inspect.txt 2>&1"
rc=$?
tail -8 /tmp/inspect.txt
e2e_collect /tmp/inspect.txt relocd-inspect.txt
[ "$rc" = 0 ] || e2e_fail "relocd inspect exited $rc on relocd's own file: $(tail -1 /tmp/inspect.txt)"

# xl restore names the domain from the saved config: the same console log
e2e_step restore xl restore "$SAVE" || e2e_fail "xl restore of relocd's file failed"
e2e_report restore_s "$E2E_STEP_SECS"
e2e_guest_goes_on restore "$before" "$E2E_GUEST_LOG" "$from"

e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
rm -f "$SAVE"
e2e_relocd_stop
trap - EXIT
e2e_collect "$E2E_RELOCD_LOG" relocd-serve.log
e2e_collect "$E2E_GUEST_LOG" guest-console.log
echo "E2E-INFO relocd-save OK: counter $before at save, $((before + 1)) first after xl restore"
