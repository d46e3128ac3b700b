# relocd-migrate-faults (two hosts; both daemons with --io-timeout 5):
# The guest dirties 1 MiB/s of a 12 MiB working set (in its tmpfs: 16 MiB
# left the 96 MiB guest, about 48 MiB of it usable, short of memory once).
#  (a) A's link goes down 4 s into a live pre-copy to B (capped at 1 MiB/s
#      so that it lasts), for 15 s (longer than the io timeout), then up
#      again: the migration fails, the guest counts on at A, B keeps no
#      domain (its daemon destroys its half-built copy);
#  (b) A migrates again with one pre-copy round at 2 MiB/s (so that the
#      stop-and-copy has megabytes to send); when a xenstore watch on A
#      sees relocd ask the guest to suspend (the stop-and-copy begins), A
#      freezes its own daemon (SIGSTOP: the stop-and-copy takes about a
#      second, less than telling B takes on a loaded machine) and tells B,
#      which kills its daemon (kill -9); then A's daemon goes on (SIGCONT):
#      the migration fails, A resumes the guest, which counts on and
#      verifies its whole working set; B's restarted daemon settles its
#      journal: no domain left on B. A kill that comes after B's commit
#      (A: "in doubt") fails the scenario as a miss, with where the guest
#      runs;
#  (c) as (b), but B's daemon is killed 5 s into the pre-copy.
# The phase of each kill is asserted, not assumed: in (b) relocd had asked
# the guest to suspend before B was told, in (c) it had not; in both the
# migration still ran on A right before B was told, B still had the relocation
# connection open right before its kill -9 and its half-built copy of the
# guest right after, and the migration failed (before the commit: A not in
# doubt). A migration that failed at once fails (b) and (c). After each
# restart B asserts that no domain is left and tells A, which asserts it too.
. /e2e/lib.sh
. /e2e/lib-migrate.sh
IO_TIMEOUT=5

# B: after the daemon's restart no domain may be left; A is told either way
restart_leaves_nothing() { # restart_leaves_nothing CASE TIMEOUT_S
  _i=0
  while [ -n "$(e2e_mig_guests)" ] && [ $_i -lt "$2" ]; do sleep 1; _i=$((_i + 1)); done
  _left=$(e2e_mig_guests | tr '\n' ';')
  e2e_report "$1_after_restart_domains" "${_left:-none}"
  if [ -n "$_left" ]; then
    e2e_mig_tell "left $_left"
    e2e_fail "($1) a domain is left after the daemon's restart: $_left"
  fi
  echo "E2E-INFO ($1) no domain left after the daemon's restart (${_i} s)"
  e2e_mig_tell clean || e2e_fail "($1) cannot tell A that no domain is left"
}
e2e_mig_start e2e_mig_end --io-timeout $IO_TIMEOUT

case "$E2E_MIG_ROLE" in
A)
  e2e_mig_guest96
  sed -i 's/e2e.ws_mb=[0-9]* e2e.dirty_kb=[0-9]*/e2e.ws_mb=12 e2e.dirty_kb=1024/' "$E2E_GUEST_CFG"
  grep -q 'e2e.ws_mb=12 e2e.dirty_kb=1024' "$E2E_GUEST_CFG" || e2e_fail "cannot set the guest's dirty rate"
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
  e2e_mig_kill_in_stop_copy b
  e2e_mig_lists_agree after-kill
  [ "$E2E_MIG_B_END" = "clean" ] || e2e_fail "(b) B's restarted daemon left a domain: B said '$E2E_MIG_B_END'"
  e2e_mig_sync kill-checked

  # (c) B's daemon killed 5 s into the pre-copy
  xenstore-watch -n 2 /local/domain/$domid/control/shutdown > /tmp/watch-c.out 2>&1 &
  wp=$!
  e2e_mig_bg $wp
  sleep 1
  t0=$(e2e_now)
  relocd --control $E2E_MIG_SOCK migrate --live --bandwidth 2M/s --json $E2E_GUEST $E2E_MIG_PEER \
    > /tmp/migrate-c.json 2>&1 &
  mp=$!
  sleep 5
  if ! kill -0 $mp 2>/dev/null; then
    wait $mp
    rc=$?
    e2e_mig_tell "precopy-kill-early" 20
    e2e_fail "(c) the migration ended (rc $rc) within 5 s, before the kill: $(tr '\n' ' ' < /tmp/migrate-c.json | cut -c1-300)"
  fi
  suspend_asked=no
  kill -0 $wp 2>/dev/null || suspend_asked=yes
  running_when_told=no
  kill -0 $mp 2>/dev/null && running_when_told=yes
  e2e_mig_tell kill 20 || e2e_fail "(c) cannot tell B to kill its daemon"
  e2e_step precopy-kill-migrate-ends wait $mp
  rc=$?
  e2e_collect /tmp/migrate-c.json migrate-precopy-kill.json
  e2e_report precopy_kill_migrate_rc "$rc"
  e2e_report precopy_kill_migrate_message "$(tr '\n' ' ' < /tmp/migrate-c.json | cut -c1-300)"
  e2e_report precopy_kill_suspend_asked_before_kill "$suspend_asked"
  e2e_report precopy_kill_migration_running_when_b_told "$running_when_told"
  b_said=$(e2e_mig_hear 60)
  e2e_report precopy_kill_b_said "$b_said"
  e2e_mig_tell "precopy-kill-done $rc" || e2e_fail "cannot tell B after the kill"
  [ $rc != 0 ] || e2e_fail "(c) the migration succeeded although B's daemon was killed"
  [ $suspend_asked = no ] || e2e_fail "(c) relocd had asked the guest to suspend before the kill: not in the pre-copy"
  [ $running_when_told = yes ] || e2e_fail "(c) the migration had ended (rc $rc) when B was told to kill its daemon"
  case "$b_said" in
    "killed session=open copy=yes") ;;
    *) e2e_fail "(c) B's daemon was not killed amid a transfer: B said '$b_said'" ;;
  esac
  e2e_mig_counts_on precopy-kill
  [ "$(xl domid $E2E_GUEST 2>/dev/null)" = "$domid" ] || e2e_fail "(c) the guest's domain id changed ($domid)"
  b_end=$(e2e_mig_hear 120)
  e2e_report precopy_kill_b_after_restart "$b_end"
  [ "$b_end" = "clean" ] || e2e_fail "(c) B's restarted daemon left a domain: B said '$b_end'"
  e2e_mig_sync precopy-kill-checked
  e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
  ;;
B)
  e2e_mig_sync ready
  said=$(e2e_mig_hear 400)
  e2e_report a_said_after_cut "$said"
  e2e_mig_no_guest "the cut link" 30
  e2e_mig_lists_agree after-cut
  e2e_mig_sync cut-checked

  # (b) killed in the stop-and-copy
  said=$(e2e_mig_hear 400)
  [ "$said" = kill ] || e2e_fail "(b) A said '$said', not kill"
  e2e_mig_kill_daemon b || e2e_fail "(b) B's daemon was not killed amid a transfer: $E2E_MIG_KILLED"
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
  restart_leaves_nothing b 30
  e2e_mig_lists_agree after-restart
  e2e_mig_sync kill-checked

  # (c) killed in the pre-copy
  said=$(e2e_mig_hear 200)
  [ "$said" = kill ] || e2e_fail "(c) A said '$said', not kill"
  e2e_mig_kill_daemon c || e2e_fail "(c) B's daemon was not killed amid a transfer: $E2E_MIG_KILLED"
  said=$(e2e_mig_hear 200)
  e2e_report a_said_after_precopy_kill "$said"
  e2e_mig_serve --io-timeout $IO_TIMEOUT
  restart_leaves_nothing c 20
  e2e_mig_sync precopy-kill-checked
  ;;
esac
echo "E2E-INFO relocd-migrate-faults: host $E2E_MIG_ROLE OK"
