# relocd-save-live: `relocd save --live` of the test guest while it dirties
# memory (pre-copy rounds with PV log-dirty, so the shadow-paging
# hypervisor; then the guest is suspended for the last pages). Reports
# rounds, pages and downtime from --json; the file must satisfy Xen's
# verify-stream-v2 and stock `xl restore`; the guest counts on. Before it, a
# slow live checkpoint (-c --bandwidth 16M), exported and verified too.
# After the checkpoint and after the restore the guest checks its whole
# working set (GUEST-VERIFY-ALL), which is required.
. /e2e/lib.sh
SAVE=$E2E_SAVE_DIR/relocd-live.save
e2e_saves_clear; rm -f "$E2E_RELOCD_LOG"
e2e_relocd_serve
trap e2e_save_scenario_end EXIT
e2e_guest_start

# first a slow checkpoint (-c, 16 MiB/s: ~9 s, more rounds while the
# guest rewrites its working set); exported and verified, then removed
mark=$(e2e_log_mark)
e2e_step relocd-save-live-slow sh -c "relocd --control $E2E_RELOCD_SOCK save -c --live --bandwidth 16M --json $E2E_GUEST $SAVE > /tmp/slow.json 2> /tmp/slow.err"
rc=$?
cat /tmp/slow.json /tmp/slow.err
e2e_collect /tmp/slow.json relocd-save-live-slow.json
[ "$rc" = 0 ] || e2e_fail "relocd save -c --live --bandwidth 16M exited $rc: $(cat /tmp/slow.json /tmp/slow.err | tail -1)"
for k in rounds pages_sent downtime_ms total_ms bandwidth_mib_s; do
  e2e_report "slow_$k" "$(e2e_json_num /tmp/slow.json $k)"
done
e2e_guest_counts_on live-checkpoint
e2e_guest_verified live-checkpoint "$E2E_GUEST_LOG" "$mark"
e2e_export "$SAVE" relocd-live-slow.save || e2e_fail "the save file could not be exported"
rm -f "$SAVE"

e2e_heartbeat_start
e2e_step relocd-save-live sh -c "relocd --control $E2E_RELOCD_SOCK save --live --json $E2E_GUEST $SAVE > /tmp/save.json 2> /tmp/save.err"
rc=$?
e2e_heartbeat_stop save
cat /tmp/save.json /tmp/save.err
e2e_collect /tmp/save.json relocd-save-live.json
[ "$rc" = 0 ] || { e2e_collect "$E2E_RELOCD_LOG" relocd-serve.log
                   e2e_fail "relocd save --live exited $rc: $(cat /tmp/save.json /tmp/save.err | tail -1)"; }
e2e_report relocd_save_live_s "$E2E_STEP_SECS"
for k in rounds pages_sent bytes_sent downtime_ms total_ms bandwidth_mib_s; do
  v=$(e2e_json_num /tmp/save.json $k)
  [ -n "$v" ] || e2e_fail "relocd save --json has no number \"$k\""
  e2e_report "$k" "$v"
done
rounds=$(e2e_json_num /tmp/save.json rounds)
pages=$(e2e_json_num /tmp/save.json pages_sent)
downtime=$(e2e_json_num /tmp/save.json downtime_ms)
total=$(e2e_json_num /tmp/save.json total_ms)
[ "${rounds%.*}" -ge 1 ] || e2e_fail "relocd save --live reports $rounds rounds"
# (nearly) every one of the guest's 32768 pages (128 MiB) goes out at least once
[ "${pages%.*}" -ge 32000 ] || e2e_fail "relocd save --live sent $pages pages, fewer than the guest has"
awk -v d="$downtime" -v t="$total" 'BEGIN { exit !(d > 0 && d < t) }' \
  || e2e_fail "downtime $downtime ms is not a part of the total $total ms"
[ -f "$SAVE" ] || e2e_fail "relocd save --live left no $SAVE"
[ -e "$SAVE.tmp" ] && e2e_fail "relocd save --live left $SAVE.tmp behind"
xl list | grep -q "^$E2E_GUEST " && e2e_fail "the guest still exists after relocd save --live"
e2e_report relocd_save_bytes "$(wc -c < "$SAVE")"
sleep 1
before=$(e2e_last_counter "$E2E_GUEST_LOG")
from=$(e2e_log_mark)
e2e_report counter_at_suspend "$before"

e2e_export "$SAVE" relocd-live.save || e2e_fail "the save file could not be exported"
e2e_step inspect sh -c "relocd inspect $SAVE > /tmp/inspect.txt 2>&1"
rc=$?
tail -8 /tmp/inspect.txt
e2e_collect /tmp/inspect.txt relocd-inspect.txt
[ "$rc" = 0 ] || e2e_fail "relocd inspect exited $rc on relocd's live save: $(tail -1 /tmp/inspect.txt)"

e2e_step restore xl restore "$SAVE" || e2e_fail "xl restore of relocd's live save failed"
e2e_guest_goes_on restore "$before" "$E2E_GUEST_LOG" "$from"

e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
rm -f "$SAVE"
e2e_relocd_stop
trap - EXIT
e2e_collect "$E2E_RELOCD_LOG" relocd-serve.log
e2e_collect "$E2E_GUEST_LOG" guest-console.log
echo "E2E-INFO relocd-save-live OK: $rounds rounds, $pages pages, downtime $downtime ms"
