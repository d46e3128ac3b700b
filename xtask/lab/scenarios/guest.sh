# guest: create the PV test guest, watch it count, xl save + xl restore it,
# and check that it goes on counting from where it was, its memory intact.
. /e2e/lib.sh
G=e2e-guest
LOG=$E2E_CONSOLE_DIR/guest-$G.log
SAVE=/var/lib/xen/save/$G.save
xl destroy $G >/dev/null 2>&1
rm -f "$LOG" "$SAVE"

e2e_step create xl create /e2e/guest/guest.cfg || e2e_fail "xl create failed"
e2e_step first-counter e2e_wait_counter "$LOG" 1 120 || e2e_fail "the guest never counted"
e2e_wait_counter "$LOG" 5 60 || e2e_fail "the guest stopped counting"
xl list

e2e_step save xl save $G "$SAVE" || e2e_fail "xl save failed"
xl list | grep -q "^$G " && e2e_fail "the guest still runs after xl save"
e2e_report save_bytes "$(wc -c < "$SAVE")"
sleep 1   # let xenconsoled drain the last lines of the saved domain
before=$(e2e_last_counter "$LOG")
lines=$(($(wc -l < "$LOG") + 1))   # the first line after the save
e2e_report counter_at_save "$before"

e2e_step restore xl restore "$SAVE" || e2e_fail "xl restore failed"
e2e_wait_counter "$LOG" $((before + 3)) 60 "$lines" \
  || e2e_fail "the guest did not go on counting after xl restore"
first=$(e2e_counters "$LOG" "$lines" | head -1)
e2e_report first_counter_after_restore "$first"
tail -n +"$lines" "$LOG" | grep -q GUEST-BOOTED && e2e_fail "the guest rebooted on restore"
[ "$first" = $((before + 1)) ] \
  || e2e_fail "after restore the counter went on at $first, not $((before + 1))"
# the counters after restore go up by one each second, none skipped
prev=$before
for c in $(e2e_counters "$LOG" "$lines"); do
  [ "$c" = $((prev + 1)) ] || e2e_fail "counter jumped from $prev to $c"
  prev=$c
done
grep -q GUEST-CORRUPT "$LOG" && e2e_fail "the guest found its working set changed"
grep 'GUEST counter=' "$LOG" | grep -vq 'sum=[0-9a-f]\{16\}' \
  && e2e_fail "a counter line has no checksum"
sums=$(tail -n +"$lines" "$LOG" | grep -o 'sum=[0-9a-f]*' | sort -u | wc -l)
[ "$sums" -ge 2 ] || e2e_fail "the working set did not change after restore"

e2e_step destroy xl destroy $G || e2e_fail "xl destroy failed"
rm -f "$SAVE"
e2e_collect "$LOG" guest-console.log
echo "E2E-INFO guest OK: counter $before at save, $first first after restore"
