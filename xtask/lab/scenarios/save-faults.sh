# save-faults: relocd save when things go wrong. (a) The output fills up
# mid-save (a 40 MiB tmpfs, ENOSPC): relocd save must fail, the guest go on
# running (not paused, not suspended) and no file be left. (b) The daemon is
# killed (-9) during a slow live save (--bandwidth 8M): the guest must go on
# running; a restarted daemon must then save it (-c) although the killed one
# left log-dirty mode on (offline, exported for verify-stream-v2, and live).
. /e2e/lib.sh
SMALL=/mnt/small
SAVE=$E2E_SAVE_DIR/faults.save
e2e_saves_clear; rm -f "$E2E_RELOCD_LOG"
e2e_relocd_serve
trap e2e_save_scenario_end EXIT
e2e_guest_start

# (a) ENOSPC
mkdir -p "$SMALL"
mount -t tmpfs -o size=40m tmpfs "$SMALL" || e2e_fail "cannot mount a 40 MiB tmpfs"
e2e_step save-enospc sh -c "relocd --control $E2E_RELOCD_SOCK save $E2E_GUEST $SMALL/g.save > /tmp/enospc.txt 2>&1"
rc=$?
cat /tmp/enospc.txt
e2e_collect /tmp/enospc.txt relocd-save-enospc.txt
e2e_report enospc_rc "$rc"
e2e_report enospc_error "$(tail -1 /tmp/enospc.txt)"
ls -la "$SMALL"
[ "$rc" != 0 ] || e2e_fail "relocd save into a full 40 MiB tmpfs exited 0"
[ -e "$SMALL/g.save" ] && e2e_fail "a failed save left $SMALL/g.save"
[ -e "$SMALL/g.save.tmp" ] && e2e_fail "a failed save left $SMALL/g.save.tmp"
e2e_guest_counts_on enospc
umount "$SMALL"

# (b) the daemon killed 3 s into a live save (at 8 MiB/s the first round
# takes ~16 s); the heartbeat shows whether dom0's shell had the CPU then.
# The partial file is measured only after the kill: reading it while relocd
# writes it stalled the reading shell here until the save ended (cause not
# known; dom0 had CPU).
# (the client is given 60 s: one that hangs on a dead daemon is a failure too)
e2e_heartbeat_start
t0=$(e2e_now)
timeout 60 relocd --control "$E2E_RELOCD_SOCK" save --live --bandwidth 8M $E2E_GUEST "$SAVE" \
  > /tmp/killed.txt 2>&1 &
client=$!
sleep 3
if ! kill -0 $client 2>/dev/null; then
  wait $client
  rc=$?
  e2e_heartbeat_stop killed-save
  cat /tmp/killed.txt
  e2e_collect /tmp/killed.txt relocd-save-live-bw.txt
  e2e_report live_bw_rc "$rc"
  e2e_report live_bw_error "$(tail -1 /tmp/killed.txt)"
  [ "$rc" = 0 ] || e2e_guest_counts_on failed-live-save
  e2e_fail "the 8 MiB/s live save ended within 3 s (rc $rc), before its daemon could be killed"
fi
kill -9 "$E2E_RELOCD_PID"
t1=$(e2e_now)
wait "$E2E_RELOCD_PID" 2>/dev/null
wait $client
rc=$?
e2e_heartbeat_stop killed-save
at=$({ wc -c < "$SAVE.tmp" || echo 0; } 2>/dev/null)
e2e_report kill_after_s "$(e2e_secs "$t0" "$t1")"
e2e_report tmp_bytes_at_kill "$at"
e2e_report mean_rate_to_kill_mib_s "$(awk -v b="$at" -v s="$t0" -v t="$t1" 'BEGIN { printf "%.1f", b / (t - s) / 1048576 }')"
cat /tmp/killed.txt
e2e_collect /tmp/killed.txt relocd-save-killed.txt
e2e_report killed_client_rc "$rc"
e2e_report killed_client_error "$(tail -1 /tmp/killed.txt)"
[ "$rc" != 0 ] || e2e_fail "relocd save exited 0 although its daemon was killed"
xl list
e2e_guest_counts_on daemon-killed
[ -e "$SAVE" ] && e2e_fail "the killed save left a complete-looking $SAVE"
[ -e "$SAVE.tmp" ] && e2e_report left_tmp_bytes "$(wc -c < "$SAVE.tmp")"
rm -f "$SAVE.tmp"

# a new daemon saves the guest although log-dirty is still on
e2e_relocd_serve
e2e_step save-after-kill sh -c "relocd --control $E2E_RELOCD_SOCK save -c $E2E_GUEST $SAVE > /tmp/after.txt 2>&1"
rc=$?
cat /tmp/after.txt
e2e_collect /tmp/after.txt relocd-save-after-kill.txt
[ "$rc" = 0 ] || e2e_fail "relocd save -c after the daemon was killed exited $rc: $(tail -1 /tmp/after.txt)"
e2e_report save_after_kill_s "$E2E_STEP_SECS"
[ -f "$SAVE" ] || e2e_fail "relocd save -c left no $SAVE"
e2e_report save_after_kill_bytes "$(wc -c < "$SAVE")"
e2e_guest_counts_on save-c
e2e_export "$SAVE" after-kill.save || e2e_fail "the save file could not be exported"
rm -f "$SAVE"
# and a live one: it turns log-dirty on, which the killed daemon left on
e2e_step live-save-after-kill sh -c "relocd --control $E2E_RELOCD_SOCK save -c --live $E2E_GUEST $SAVE > /tmp/after-live.txt 2>&1"
rc=$?
cat /tmp/after-live.txt
e2e_collect /tmp/after-live.txt relocd-live-save-after-kill.txt
[ "$rc" = 0 ] || e2e_fail "relocd save -c --live after the daemon was killed exited $rc: $(tail -1 /tmp/after-live.txt)"
rm -f "$SAVE"
e2e_guest_counts_on live-save-c

grep -q GUEST-CORRUPT "$E2E_GUEST_LOG" && e2e_fail "the guest found its working set changed"
[ "$(grep -c GUEST-BOOTED "$E2E_GUEST_LOG")" = 1 ] || e2e_fail "the guest rebooted"
e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
e2e_relocd_stop
trap - EXIT
e2e_collect "$E2E_RELOCD_LOG" relocd-serve.log
e2e_collect "$E2E_GUEST_LOG" guest-console.log
echo "E2E-INFO save-faults OK"
