# relocd-resolve (two hosts): a live migration whose destination dies at
# the commit leaves the source "in doubt", and `relocd resolve` settles it.
# B's daemon runs with a fault point (RELOCD_FAILPOINT in its environment):
#  1. dest-exit-after-commit: B's daemon ends abruptly right after
#     journaling the commit, before answering: the copy at B is the guest.
#     A's `relocd migrate --live` exits 1 saying "in doubt"; `relocd list`
#     on A shows the guest "in doubt" (--json: "in_doubt"), stopped. B's
#     daemon, restarted normally, unpauses its committed copy: it runs on
#     B. `relocd resolve e2e-guest --discard` on A exits 0: A has no copy
#     left, exactly one runs (on B), its counter going on from A's last
#     line, its whole working set intact.
#  Then B moves the guest back with `relocd migrate --live` (it counts on at
#  A), and B's daemon is restarted with the other fault point.
#  2. dest-exit-before-commit: B's daemon ends abruptly when the commit
#     arrives, before journaling it: B never committed. A is in doubt
#     again; B's daemon, restarted normally, destroys its half-built copy;
#     `relocd resolve e2e-guest --resume` on A exits 0: the guest runs on at
#     A as the same domain, its counter going on, its working set intact;
#     B has no domain of its name.
# Both hosts end with no guest domain, failed or not.
. /e2e/lib.sh
. /e2e/lib-migrate.sh
resolve_end() {
  _rc=$?
  xl destroy $E2E_GUEST >/dev/null 2>&1
  (exit $_rc)
  e2e_mig_end
}

# B: the daemon with a fault point, or without one (no argument)
serve_with_failpoint() {
  e2e_mig_stop
  if [ -n "$1" ]; then
    export RELOCD_FAILPOINT="$1"
    e2e_mig_serve
    unset RELOCD_FAILPOINT
  else
    e2e_mig_serve
  fi
}

# A: relocd migrate --live to B, expected to end in doubt: exit 1, "in
# doubt" in its message, the guest "in doubt" in relocd list (text and
# --json) and stopped in xl list. Leaves the last counter seen in $before.
migrate_into_doubt() { # migrate_into_doubt CASE
  e2e_step "$1-migrate" sh -c "relocd --control $E2E_MIG_SOCK migrate --live --compress $E2E_GUEST $E2E_MIG_PEER > /tmp/migrate-$1.out 2>&1"
  _rc=$?
  cat /tmp/migrate-$1.out
  e2e_collect /tmp/migrate-$1.out "migrate-$1.out"
  e2e_report "$1_migrate_rc" "$_rc"
  e2e_report "$1_migrate_message" "$(tr '\n' ' ' < /tmp/migrate-$1.out | cut -c1-300)"
  sleep 1   # let xenconsoled drain the guest's last lines here
  before=$(e2e_last_counter "$E2E_GUEST_LOG")
  e2e_mig_tell "migrated rc=$_rc before=$before" || e2e_fail "($1) cannot tell B"
  [ $_rc != 0 ] || e2e_fail "($1) the migration succeeded: B's daemon did not end at the commit (is RELOCD_FAILPOINT honoured?)"
  [ $_rc = 1 ] || e2e_fail "($1) relocd migrate exited $_rc, not 1"
  grep -q "in doubt" /tmp/migrate-$1.out \
    || e2e_fail "($1) relocd migrate failed without saying the guest is in doubt: $(tr '\n' ' ' < /tmp/migrate-$1.out)"
  e2e_mig_relocd list > /tmp/list-$1.txt 2>&1
  cat /tmp/list-$1.txt
  grep "$E2E_GUEST" /tmp/list-$1.txt | grep -q "in doubt" \
    || e2e_fail "($1) relocd list does not show $E2E_GUEST in doubt: $(tr '\n' ';' < /tmp/list-$1.txt)"
  e2e_mig_relocd list --json > /tmp/list-$1.json 2>&1
  tr '{' '\n' < /tmp/list-$1.json | grep "\"name\":\"$E2E_GUEST\"" | grep -q '"state":"in_doubt"' \
    || e2e_fail "($1) relocd list --json does not give $E2E_GUEST the state in_doubt: $(cat /tmp/list-$1.json)"
  _st=$(e2e_mig_guest_state)
  e2e_report "$1_xl_state_in_doubt" "$_st"
  case "$_st" in
    *p*|*s*) ;;
    *) e2e_fail "($1) the in-doubt guest is not stopped here: xl list state '$_st'" ;;
  esac
}

# B: after A's migration, B's daemon must have ended by itself (the fault
# point); reports its exit status and what B holds.
daemon_ended_at_failpoint() { # daemon_ended_at_failpoint CASE
  _i=0
  while kill -0 "$E2E_MIG_PID" 2>/dev/null; do
    _i=$((_i + 1))
    [ $_i -ge 10 ] && e2e_fail "($1) B's daemon still runs after the migration: it did not end at the fault point"
    sleep 1
  done
  wait "$E2E_MIG_PID" 2>/dev/null
  _st=$?
  E2E_MIG_PID=
  e2e_report "$1_b_daemon_exit_status" "$_st"
  [ "$_st" != 0 ] || e2e_fail "($1) B's daemon exited 0 at the fault point"
  e2e_report "$1_b_domains_at_failpoint" "$(e2e_mig_guests | tr '\n' ';')"
}

e2e_mig_start resolve_end

case "$E2E_MIG_ROLE" in
A)
  e2e_mig_guest96
  e2e_guest_start
  domid=$(xl domid $E2E_GUEST)
  e2e_mig_sync ready

  # 1: B committed; A in doubt; --discard
  migrate_into_doubt commit
  said=$(e2e_mig_hear 120)
  [ "$said" = "runs here" ] || e2e_fail "(commit) B's restarted daemon does not run the guest: B said '$said'"
  e2e_step discard sh -c "relocd --control $E2E_MIG_SOCK resolve $E2E_GUEST --discard > /tmp/resolve-discard.out 2>&1"
  rc=$?
  cat /tmp/resolve-discard.out
  e2e_report discard_rc "$rc"
  e2e_report discard_message "$(tr '\n' ' ' < /tmp/resolve-discard.out | cut -c1-200)"
  e2e_mig_tell "discarded rc=$rc" || e2e_fail "cannot tell B"
  [ $rc = 0 ] || e2e_fail "relocd resolve --discard exited $rc: $(tr '\n' ' ' < /tmp/resolve-discard.out)"
  e2e_mig_no_guest "resolve --discard" 10
  e2e_mig_lists_agree after-discard
  said=$(e2e_mig_hear 120)
  [ "$said" = "goes on" ] || e2e_fail "(commit) the guest did not go on at B: B said '$said'"

  # the guest comes back from B
  from=$(e2e_log_mark)
  e2e_mig_tell "send it back" || e2e_fail "cannot tell B"
  said=$(e2e_mig_hear 200)
  case "$said" in
    "sent before="[0-9]*) before=${said#sent before=} ;;
    *) e2e_fail "B could not move the guest back: B said '$said'" ;;
  esac
  xl list | grep -q "^$E2E_GUEST " || e2e_fail "no $E2E_GUEST on A after B moved it back"
  e2e_guest_goes_on back "$before" "$E2E_GUEST_LOG" "$from"
  domid=$(xl domid $E2E_GUEST)
  e2e_mig_sync back

  # 2: B never committed; A in doubt; --resume
  e2e_mig_sync failpoint-2
  migrate_into_doubt no-commit
  from=$(e2e_log_mark)
  said=$(e2e_mig_hear 120)
  [ "$said" = "clean" ] || e2e_fail "(no-commit) B's restarted daemon left a copy: B said '$said'"
  e2e_step resume sh -c "relocd --control $E2E_MIG_SOCK resolve $E2E_GUEST --resume > /tmp/resolve-resume.out 2>&1"
  rc=$?
  cat /tmp/resolve-resume.out
  e2e_report resume_rc "$rc"
  e2e_report resume_message "$(tr '\n' ' ' < /tmp/resolve-resume.out | cut -c1-200)"
  e2e_mig_tell "resumed rc=$rc" || e2e_fail "cannot tell B"
  [ $rc = 0 ] || e2e_fail "relocd resolve --resume exited $rc: $(tr '\n' ' ' < /tmp/resolve-resume.out)"
  [ "$(xl domid $E2E_GUEST 2>/dev/null)" = "$domid" ] || e2e_fail "(no-commit) the guest is not domain $domid after resume"
  e2e_guest_goes_on resume "$before" "$E2E_GUEST_LOG" "$from"
  e2e_mig_lists_agree after-resume
  said=$(e2e_mig_hear 60)
  [ "$said" = "none here" ] || e2e_fail "(no-commit) B after the resume: '$said'"
  e2e_mig_sync checked
  e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
  ;;
B)
  serve_with_failpoint dest-exit-after-commit
  e2e_mig_sync ready

  # 1: the commit is journaled here, then the daemon ends
  said=$(e2e_mig_hear 300)
  e2e_report a_said_commit "$said"
  case "$said" in
    "migrated rc=0 "*) e2e_fail "(commit) A's migration succeeded: this daemon did not end at dest-exit-after-commit" ;;
    "migrated rc="*) before=${said##*before=} ;;
    *) e2e_fail "(commit) A said '$said'" ;;
  esac
  daemon_ended_at_failpoint commit
  xl list | grep -q "^$E2E_GUEST " || e2e_fail "(commit) no committed copy of $E2E_GUEST here"
  serve_with_failpoint
  i=0
  until st=$(e2e_mig_guest_state) && [ -n "$st" ] && case "$st" in *p*|*s*) false ;; *) true ;; esac; do
    i=$((i + 1))
    if [ $i -ge 30 ]; then
      e2e_mig_tell "stopped '$st'"
      e2e_fail "(commit) the restarted daemon did not run its committed copy (xl list state '$st')"
    fi
    sleep 1
  done
  e2e_report commit_runs_after_restart_s "$i"
  log=$(ls -t "$E2E_CONSOLE_DIR"/guest-*.log 2>/dev/null | head -1)
  [ -n "$log" ] || e2e_fail "no guest console log on B"
  e2e_mig_tell "runs here" || e2e_fail "cannot tell A"
  said=$(e2e_mig_hear 120)
  e2e_report a_said_discard "$said"
  [ "$said" = "discarded rc=0" ] || e2e_fail "(commit) A's resolve --discard: '$said'"
  e2e_guest_goes_on discard "$before" "$log" 1
  e2e_mig_lists_agree after-discard
  e2e_mig_tell "goes on" || e2e_fail "cannot tell A"

  # the guest goes back to A
  said=$(e2e_mig_hear 120)
  [ "$said" = "send it back" ] || e2e_fail "A said '$said', not send it back"
  e2e_step back-migrate sh -c "relocd --control $E2E_MIG_SOCK migrate --live --compress $E2E_GUEST $E2E_MIG_PEER > /tmp/migrate-back.out 2>&1"
  rc=$?
  cat /tmp/migrate-back.out
  if [ $rc != 0 ]; then
    e2e_mig_tell "failed rc=$rc"
    e2e_fail "relocd migrate of the guest back to A failed (rc $rc): $(tr '\n' ' ' < /tmp/migrate-back.out)"
  fi
  sleep 1
  e2e_mig_tell "sent before=$(e2e_last_counter "$log")" || e2e_fail "cannot tell A"
  e2e_mig_sync back
  e2e_mig_no_guest "the move back" 10

  # 2: the commit arrives, the daemon ends before journaling it
  serve_with_failpoint dest-exit-before-commit
  e2e_mig_sync failpoint-2
  said=$(e2e_mig_hear 300)
  e2e_report a_said_no_commit "$said"
  case "$said" in
    "migrated rc=0 "*) e2e_fail "(no-commit) A's migration succeeded: this daemon did not end at dest-exit-before-commit" ;;
    "migrated rc="*) ;;
    *) e2e_fail "(no-commit) A said '$said'" ;;
  esac
  daemon_ended_at_failpoint no-commit
  serve_with_failpoint
  i=0
  while xl list | grep -q "^$E2E_GUEST "; do
    i=$((i + 1))
    if [ $i -ge 30 ]; then
      e2e_mig_tell "left $(e2e_mig_guests | tr '\n' ';')"
      e2e_fail "(no-commit) the restarted daemon left its uncommitted copy: $(e2e_mig_guests | tr '\n' ';')"
    fi
    sleep 1
  done
  e2e_report no_commit_copy_gone_after_s "$i"
  e2e_mig_tell clean || e2e_fail "cannot tell A"
  said=$(e2e_mig_hear 120)
  e2e_report a_said_resume "$said"
  [ "$said" = "resumed rc=0" ] || e2e_fail "(no-commit) A's resolve --resume: '$said'"
  if [ -n "$(e2e_mig_guests)" ]; then
    e2e_mig_tell "has $(e2e_mig_guests | tr '\n' ';')"
    e2e_fail "(no-commit) B has a domain after A resumed the guest: $(e2e_mig_guests | tr '\n' ';')"
  fi
  e2e_mig_tell "none here" || e2e_fail "cannot tell A"
  e2e_mig_lists_agree after-resume
  e2e_mig_sync checked
  ;;
esac
echo "E2E-INFO relocd-resolve: host $E2E_MIG_ROLE OK"
