# save-faults: relocd save when things go wrong. (a) The output fills up
# mid-save (a 40 MiB tmpfs, ENOSPC): relocd save must fail, the guest go on
# running (not paused, not suspended) and no file be left. (b) The daemon is
# killed (-9) during a slow live save (--bandwidth 8M): the guest must go on
# running; a restarted daemon must then save it (-c) although the killed one
# left log-dirty mode on; that file is exported for Xen's verify-stream-v2.
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

# (b) the daemon killed during a live save
# (the client is given 60 s: one that hangs on a dead daemon is a failure too)
timeout 60 relocd --control "$E2E_RELOCD_SOCK" save --live --bandwidth 8M $E2E_GUEST "$SAVE" \
  > /tmp/killed.txt 2>&1 &
client=$!
sleep 3
kill -0 $client 2>/dev/null || { cat /tmp/killed.txt; e2e_fail "the 8 MiB/s live save ended within 3 s"; }
e2e_report tmp_bytes_at_kill "$(wc -c < "$SAVE.tmp" 2>/dev/null || echo none)"
kill -9 "$E2E_RELOCD_PID"
wait "$E2E_RELOCD_PID" 2>/dev/null
wait $client
rc=$?
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

grep -q GUEST-CORRUPT "$E2E_GUEST_LOG" && e2e_fail "the guest found its working set changed"
[ "$(grep -c GUEST-BOOTED "$E2E_GUEST_LOG")" = 1 ] || e2e_fail "the guest rebooted"
e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
e2e_relocd_stop
trap - EXIT
e2e_collect "$E2E_RELOCD_LOG" relocd-serve.log
e2e_collect "$E2E_GUEST_LOG" guest-console.log
echo "E2E-INFO save-faults OK"
