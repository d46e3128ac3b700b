# save-side-by-side: xl and relocd save the same running test guest in one
# run. `xl save -c` (a checkpoint; the guest runs on) and `relocd inspect`
# of xl's file; then `relocd save`, `xl restore` of relocd's file, and the
# guest counts on. Reports the times and sizes of both saves. One save file
# at a time in dom0 (768 MiB, files in RAM).
. /e2e/lib.sh
XL_SAVE=$E2E_SAVE_DIR/xl.save
RELOCD_SAVE=$E2E_SAVE_DIR/relocd.save
e2e_saves_clear; rm -f "$E2E_RELOCD_LOG"
e2e_relocd_serve
trap e2e_save_scenario_end EXIT
e2e_guest_start

e2e_step xl-save xl save -c $E2E_GUEST "$XL_SAVE" || e2e_fail "xl save -c failed"
e2e_report xl_save_s "$E2E_STEP_SECS"
e2e_report xl_save_bytes "$(wc -c < "$XL_SAVE")"
e2e_guest_counts_on "xl-save-c"
e2e_step inspect-xl sh -c "relocd inspect $XL_SAVE > /tmp/inspect-xl.txt 2>&1"
rc=$?
tail -8 /tmp/inspect-xl.txt
e2e_collect /tmp/inspect-xl.txt relocd-inspect-xl.txt
[ "$rc" = 0 ] || e2e_fail "relocd inspect exited $rc on xl's save file: $(tail -1 /tmp/inspect-xl.txt)"
rm -f "$XL_SAVE"

e2e_step relocd-save sh -c "relocd --control $E2E_RELOCD_SOCK save $E2E_GUEST $RELOCD_SAVE > /tmp/save.txt 2>&1"
rc=$?
cat /tmp/save.txt
e2e_collect /tmp/save.txt relocd-save.txt
[ "$rc" = 0 ] || { e2e_collect "$E2E_RELOCD_LOG" relocd-serve.log
                   e2e_fail "relocd save exited $rc: $(tail -1 /tmp/save.txt)"; }
e2e_report relocd_save_s "$E2E_STEP_SECS"
[ -f "$RELOCD_SAVE" ] || e2e_fail "relocd save left no $RELOCD_SAVE"
e2e_report relocd_save_bytes "$(wc -c < "$RELOCD_SAVE")"
xl list | grep -q "^$E2E_GUEST " && e2e_fail "the guest still exists after relocd save"
sleep 1
before=$(e2e_last_counter "$E2E_GUEST_LOG")
from=$(e2e_log_mark)
e2e_report counter_at_save "$before"

e2e_step restore xl restore "$RELOCD_SAVE" || e2e_fail "xl restore of relocd's file failed"
e2e_report restore_s "$E2E_STEP_SECS"
rm -f "$RELOCD_SAVE"
e2e_guest_goes_on restore "$before" "$E2E_GUEST_LOG" "$from"

e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
e2e_relocd_stop
trap - EXIT
e2e_collect "$E2E_RELOCD_LOG" relocd-serve.log
e2e_collect "$E2E_GUEST_LOG" guest-console.log
echo "E2E-INFO save-side-by-side OK"
