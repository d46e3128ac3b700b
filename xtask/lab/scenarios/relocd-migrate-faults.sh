# relocd-migrate-faults (two hosts; both daemons with --io-timeout 5):
# The guest dirties 1 MiB/s of a 16 MiB working set.
#  (a) A's link goes down 4 s into a live pre-copy to B (capped at 1 MiB/s
#      so that it lasts), for 15 s (longer than the io timeout), then up
#      again: the migration fails, the guest counts on at A, B keeps no
#      domain (its daemon destroys its half-built copy);
#  (b) A migrates again with one pre-copy round at 2 MiB/s (so that the
#      stop-and-copy has megabytes to send); B kills its daemon (kill -9)
#      as soon as its link receives faster than 20 MiB/s (the stop-and-copy
#      is not capped), or else when A, polling xl list, sees the guest
#      suspended and tells it: the migration fails, A resumes the guest,
#      which counts on; B's restarted daemon settles its journal: no domain
#      left on B. A kill that comes after B's commit (A: "in doubt") is
#      reported as a miss of the test, with where the guest runs.
. /e2e/lib.sh
. /e2e/lib-migrate.sh
[ -n "$E2E_MIG_PEER" ] || e2e_fail "no e2e.peer on the kernel command line (run with two hosts)"
rm -f /var/lib/xen/save/* "$E2E_MIG_LOG"
rm -rf "$E2E_MIG_STATE"
trap e2e_mig_end EXIT
xl destroy $E2E_GUEST >/dev/null 2>&1
rm -f "$E2E_CONSOLE_DIR"/guest-*
case "$E2E_MIG_ROLE" in
A) e2e_mig_config '^169\\.254\\.0\\.2$' ;;
B) e2e_mig_config '^169\\.254\\.0\\.1$' ;;
*) e2e_fail "unknown role '$E2E_MIG_ROLE'" ;;
esac
IO_TIMEOUT=5
e2e_mig_serve --io-timeout $IO_TIMEOUT
e2e_mig_wait_link

case "$E2E_MIG_ROLE" in
A)
  e2e_mig_guest96
  sed -i 's/e2e.ws_mb=[0-9]* e2e.dirty_kb=[0-9]*/e2e.ws_mb=16 e2e.dirty_kb=1024/' "$E2E_GUEST_CFG"
  grep -q 'e2e.ws_mb=16 e2e.dirty_kb=1024' "$E2E_GUEST_CFG" || e2e_fail "cannot set the guest's dirty rate"
  e2e_guest_start
  domid=$(xl domid $E2E_GUEST)
  e2e_mig_sync ready

  # (a) the link cut mid pre-copy
  t0=$(e2e_now)
  relocd --control $E2E_MIG_SOCK migrate --live --bandwidth 1M/s --json $E2E_GUEST $E2E_MIG_PEER \
    > /tmp/migrate-a.json 2>&1 &
  mp=$!
  sleep 4
  if ! kill -0 $mp 2>/dev/null; then
    cat /tmp/migrate-a.json
    e2e_mig_tell "cut-done early"
    e2e_fail "(a) the migration ended within 4 s, before the cut: $(tr '\n' ' ' < /tmp/migrate-a.json | cut -c1-300)"
  fi
  echo "E2E-INFO (a) link down at $(e2e_secs "$t0" "$(e2e_now)") s into the migration"
  ip link set eth0 down
  sleep 15
  ip link set eth0 up
  e2e_step cut-migrate-ends wait $mp
  rc=$?
  cat /tmp/migrate-a.json
  e2e_collect /tmp/migrate-a.json migrate-cut.json
  e2e_report cut_migrate_rc "$rc"
  e2e_report cut_migrate_message "$(tr '\n' ' ' < /tmp/migrate-a.json | cut -c1-300)"
  e2e_report cut_migrate_ended_after_s "$(e2e_secs "$t0" "$(e2e_now)")"
  e2e_mig_wait_link
  e2e_mig_tell "cut-done $rc" || e2e_fail "cannot tell B after the cut"
  [ $rc != 0 ] || e2e_fail "(a) the migration succeeded although the link was down for 15 s"
  [ "$(xl domid $E2E_GUEST 2>/dev/null)" = "$domid" ] || e2e_fail "(a) the guest's domain id changed ($domid)"
  e2e_mig_counts_on cut
  e2e_mig_lists_agree after-cut
  e2e_mig_sync cut-checked

  # (b) B's daemon killed in the stop-and-copy
  t0=$(e2e_now)
  relocd --control $E2E_MIG_SOCK migrate --live --max-iters 1 --bandwidth 2M/s --json $E2E_GUEST $E2E_MIG_PEER \
    > /tmp/migrate-b.json 2>&1 &
  mp=$!
  seen=
  while kill -0 $mp 2>/dev/null; do
    st=$(e2e_mig_guest_state)
    case "$st" in *s*|*p*) seen=$st; break ;; esac
    usleep 200000
  done
  # B may have killed its daemon already (the migration then ends here
  # before the poll sees the guest stopped): tell it anyway
  echo "E2E-INFO (b) guest state '$seen' at $(e2e_secs "$t0" "$(e2e_now)") s: telling B to kill its daemon"
  e2e_mig_tell kill 20 || e2e_fail "(b) cannot tell B to kill its daemon"
  e2e_step kill-migrate-ends wait $mp
  rc=$?
  cat /tmp/migrate-b.json
  e2e_collect /tmp/migrate-b.json migrate-kill.json
  e2e_report kill_migrate_rc "$rc"
  e2e_report kill_migrate_message "$(tr '\n' ' ' < /tmp/migrate-b.json | cut -c1-300)"
  e2e_report kill_migrate_ended_after_s "$(e2e_secs "$t0" "$(e2e_now)")"
  e2e_report kill_state_after "$(e2e_mig_guest_state)"
  e2e_report kill_state_seen "$seen"
  [ $rc != 0 ] || { e2e_mig_tell "kill-late $rc"; e2e_fail "(b) the migration succeeded: the kill came after B's commit"; }
  if grep -q "in doubt" /tmp/migrate-b.json; then
    e2e_mig_tell "kill-late $rc"
    e2e_fail "(b) the kill came after B's commit (A: in doubt, the guest stays suspended here): the test missed the stop-and-copy"
  fi
  i=0   # the source resumes the guest: not paused, not shut down
  while case "$(e2e_mig_guest_state)" in *p*|*s*) true ;; *) false ;; esac && [ $i -lt 10 ]; do
    sleep 1; i=$((i + 1))
  done
  e2e_report kill_resumed_within_s "$i"
  e2e_mig_counts_on kill
  [ "$(xl domid $E2E_GUEST 2>/dev/null)" = "$domid" ] || e2e_fail "(b) the guest's domain id changed ($domid)"
  e2e_mig_lists_agree after-kill
  e2e_mig_tell "kill-done $rc" || e2e_fail "cannot tell B after the kill"
  e2e_mig_sync kill-checked
  e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
  ;;
B)
  e2e_mig_sync ready
  said=$(e2e_mig_hear 400)
  e2e_report a_said_after_cut "$said"
  e2e_mig_no_guest "the cut link" 30
  e2e_mig_lists_agree after-cut
  e2e_mig_sync cut-checked

  # the stop-and-copy is not capped: a jump of the receive rate shows it
  ( read -r prev < /sys/class/net/eth0/statistics/rx_bytes
    while kill -0 "$E2E_MIG_PID" 2>/dev/null; do
      usleep 100000
      read -r now < /sys/class/net/eth0/statistics/rx_bytes
      if [ $((now - prev)) -gt 2097152 ]; then
        kill -9 "$E2E_MIG_PID"
        echo "E2E-INFO (b) $((now - prev)) bytes in 0.1 s: daemon killed at uptime $(e2e_now)"
        echo rx-jump > /tmp/killed-by
        break
      fi
      prev=$now
    done ) &
  watcher=$!
  e2e_mig_bg $watcher
  said=$(e2e_mig_hear 400)
  [ "$said" = kill ] || e2e_fail "(b) A said '$said', not kill"
  if kill -0 "$E2E_MIG_PID" 2>/dev/null; then
    kill -9 "$E2E_MIG_PID"
    echo message > /tmp/killed-by
    echo "E2E-INFO (b) A saw the guest stopped: daemon killed at uptime $(e2e_now)"
  fi
  kill $watcher 2>/dev/null
  wait "$E2E_MIG_PID" 2>/dev/null
  e2e_report killed_by "$(cat /tmp/killed-by 2>/dev/null)"
  E2E_MIG_PID=
  e2e_report after_kill_domains "$(e2e_mig_guests | tr '\n' ';')"
  said=$(e2e_mig_hear 300)
  e2e_report a_said_after_kill "$said"
  case "$said" in
    kill-late*)
      e2e_mig_serve --io-timeout $IO_TIMEOUT
      sleep 2
      e2e_report after_late_kill_restart_domains "$(e2e_mig_guests | tr '\n' ';')"
      e2e_fail "(b) the kill came after the commit: the guest runs here ($(e2e_mig_guests | tr '\n' ';'))"
      ;;
  esac
  e2e_report before_restart_domains "$(e2e_mig_guests | tr '\n' ';')"
  ls -l "$E2E_MIG_STATE"
  e2e_mig_serve --io-timeout $IO_TIMEOUT
  e2e_mig_no_guest "the daemon's restart" 30
  e2e_mig_lists_agree after-restart
  e2e_mig_sync kill-checked
  ;;
esac
echo "E2E-INFO relocd-migrate-faults: host $E2E_MIG_ROLE OK"
