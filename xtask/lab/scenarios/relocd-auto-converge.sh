# relocd-auto-converge (two hosts, one guest, one run): the test guest
# (96 MiB) with a hot loop (e2e.hot_mb=8, lab/guest/init) that rewrites
# 8 MiB of its memory as fast as its vCPU lets it, much faster than the
# lab's link carries, and its own scheduling parameters (weight 128, cap
# 100 % of a CPU: no limit for its one vCPU, but not Xen's default 0; set
# with xl sched-credit2 or sched-credit, whichever scheduler Xen runs). Moves, each checked as relocd-migrate-remote checks
# one (the counter goes on at the destination from where it was, the
# working set intact; figures; the pause the guest saw, timed on the
# source's clock by lib-migrate.sh):
#   xl   `xl migrate` A -> B (xl has no bandwidth or throttle option: it
#        stops pre-copy after 5 rounds whatever is dirty);
#        B's scheduling parameters after it are reported, then set to the
#        guest's own again (xl may not carry them);
#   live `relocd migrate --live --bandwidth 3M` B -> A: A has the guest's own parameters;
#   cancel `relocd migrate --live --bandwidth 3M --downtime-limit 50
#        --auto-converge` from A (the tighter limit keeps it in pre-copy,
#        throttling, longer), interrupted
#        (SIGINT, what Ctrl-C sends) once A shows the throttle's cap: exit
#        130, the guest runs on at A with its own parameters, B keeps no
#        domain;
#   auto `relocd migrate --live --bandwidth 3M --auto-converge` A -> B: B has the guest's
#        own parameters;
#   plain, zero, lz4, both: offline `relocd migrate`, B -> A, A -> B,
#        B -> A, A -> B, the bytes on the wire: every page in full
#        (--no-zero-pages), zero pages as markers (the default), LZ4
#        without markers (--compress --no-zero-pages), both (--compress).
. /e2e/lib.sh
. /e2e/lib-migrate.sh
XL_PORT=8012
OWN_WEIGHT=128
OWN_CAP=100
e2e_mig_start e2e_mig_end

SCHED=$(xl info | sed -n 's/^xen_scheduler *: *//p')
case "$SCHED" in
credit | credit2) e2e_report xen_scheduler "$SCHED" ;;
*) e2e_fail "Xen runs scheduler '$SCHED', which has no cap" ;;
esac

sched_of() { # the test guest's "WEIGHT CAP" here
  xl sched-$SCHED -d $E2E_GUEST 2>/dev/null | awk -v n="$E2E_GUEST" '$1 == n { print $3, $4 }'
}

sched_own() { # the guest's own parameters set here
  xl sched-$SCHED -d $E2E_GUEST -w $OWN_WEIGHT -c $OWN_CAP || e2e_fail "xl sched-$SCHED -d $E2E_GUEST -w $OWN_WEIGHT -c $OWN_CAP failed"
  [ "$(sched_of)" = "$OWN_WEIGHT $OWN_CAP" ] || e2e_fail "xl sched-$SCHED did not take: '$(sched_of)'"
}

sched_is_own() { # sched_is_own WHAT: the guest here has its own weight and cap
  ac_s=$(sched_of)
  e2e_report "$1_sched_weight_cap" "$(echo "$ac_s" | tr ' ' /)"
  [ "$ac_s" = "$OWN_WEIGHT $OWN_CAP" ] \
    || e2e_mig_soft_fail "after $1 the guest has weight/cap '$ac_s' here, not its own $OWN_WEIGHT $OWN_CAP"
}

cur_log() { ls -t "$E2E_CONSOLE_DIR"/guest-*.log 2>/dev/null | head -1; }

# (busybox sh has no local variables: the helpers' own are ac_*, apart
# from lib.sh's and lib-migrate.sh's _*)
# move_src NAME CMD: on the source of a move; CMD writes to /tmp/NAME.out
move_src() {
  ac_name=$1
  shift
  e2e_mig_sync "$ac_name"
  sleep 3
  ac_domid=$(xl domid $E2E_GUEST)
  ac_tx0=$(e2e_mig_tx)
  e2e_step "$ac_name" sh -c "$* > /tmp/$ac_name.out 2> /tmp/$ac_name.err"
  ac_rc=$?
  e2e_mig_report_tx "$ac_name" "$ac_tx0"
  cat "/tmp/$ac_name.out" "/tmp/$ac_name.err"
  e2e_collect "/tmp/$ac_name.out" "$ac_name.out"
  if [ $ac_rc != 0 ]; then
    e2e_mig_tell failed 20
    [ "$(xl domid $E2E_GUEST 2>/dev/null)" = "$ac_domid" ] || e2e_fail "after the failed $ac_name the guest is not domain $ac_domid"
    e2e_fail "$ac_name failed (rc $ac_rc): $(tail -2 "/tmp/$ac_name.out" "/tmp/$ac_name.err" | tr '\n' ' ')"
  fi
  e2e_report "${ac_name}_total_s" "$E2E_STEP_SECS"
  if grep -q '"bytes_sent"' "/tmp/$ac_name.out"; then
    e2e_mig_report_json "$ac_name" "/tmp/$ac_name.out"
    for ac_k in zero_pages throttle_percent throttle_steps; do
      e2e_report "${ac_name}_$ac_k" "$(e2e_mig_num "/tmp/$ac_name.out" $ac_k)"
    done
  fi
  sleep 1   # let xenconsoled drain the source domain's last lines
  ac_before=$(e2e_last_counter "$(cur_log)")
  e2e_report "${ac_name}_counter_at_suspend" "$ac_before"
  e2e_mig_tell "$ac_before" || e2e_fail "cannot tell the peer the counter"
  xl list | grep -q "^$E2E_GUEST " && e2e_fail "the guest is still here after $ac_name"
  e2e_mig_gap "$ac_name" "$ac_before" || e2e_mig_soft_fail "no guest-measured gap for $ac_name"
  e2e_mig_sync "$ac_name-checked"
}

# move_dst NAME: on the destination of a move
move_dst() {
  ac_name=$1
  for ac_f in "$E2E_CONSOLE_DIR"/guest-*.log; do
    [ -f "$ac_f" ] && echo "$ac_f $(wc -l < "$ac_f")"
  done > /tmp/log-marks
  e2e_mig_sync "$ac_name"
  ac_before=$(e2e_mig_hear 600)
  case "$ac_before" in ''|*[!0-9]*) e2e_fail "the peer's $ac_name failed ('$ac_before')" ;; esac
  xl list | grep -q "^$E2E_GUEST " || e2e_fail "no $E2E_GUEST here after $ac_name"
  ac_log=$(cur_log)
  ac_from=$(awk -v f="$ac_log" '$1 == f { print $2 + 1 }' /tmp/log-marks)
  e2e_guest_goes_on "$ac_name" "$ac_before" "$ac_log" "${ac_from:-1}"
  e2e_mig_sync "$ac_name-checked"
}

RELOCD="relocd --control $E2E_MIG_SOCK migrate --json"
# relocd's live moves are capped at 3 MiB/s (--bandwidth, on the pre-copy
# rounds): the lab's link carries about 18 MiB/s, more than the guest can
# dirty under QEMU's emulation, and the cap makes the link the slower side
BW=3M
case "$E2E_MIG_ROLE" in
A)
  e2e_mig_guest96
  sed -i 's/e2e\.dirty_kb=\([0-9]*\)/e2e.dirty_kb=\1 e2e.hot_mb=8/' "$E2E_GUEST_CFG"
  grep -q 'e2e.hot_mb=8' "$E2E_GUEST_CFG" || e2e_fail "cannot give the guest its hot loop"
  e2e_guest_start
  grep -q 'GUEST-HOT mb=8' "$E2E_GUEST_LOG" || e2e_fail "the guest has no hot loop"
  sched_own
  e2e_mig_timeline_listen
  e2e_mig_sync ready
  e2e_mig_timeline_relay
  # 1: xl migrate A -> B (B may not listen yet: a refused connection fails
  # before the guest is suspended, so trying again is safe)
  e2e_mig_sync xl
  sleep 3
  n=0
  tx0=$(e2e_mig_tx)
  until e2e_step xl sh -c "xl migrate -s '' $E2E_GUEST 'exec nc $E2E_MIG_PEER $XL_PORT' > /tmp/xl.out 2>&1"; do
    cat /tmp/xl.out
    n=$((n + 1))
    [ $n -ge 20 ] && e2e_fail "xl migrate to B failed $n times"
    xl list | grep -q "^$E2E_GUEST " || e2e_fail "the guest is gone after a failed xl migrate"
    sleep 2
  done
  cat /tmp/xl.out
  e2e_collect /tmp/xl.out xl.out
  e2e_report xl_total_s "$E2E_STEP_SECS"
  e2e_mig_report_tx xl "$tx0"
  sleep 1
  before=$(e2e_last_counter "$E2E_GUEST_LOG")
  e2e_report xl_counter_at_suspend "$before"
  e2e_mig_tell "$before" || e2e_fail "cannot tell B the counter"
  e2e_mig_gap xl "$before" || e2e_mig_soft_fail "no guest-measured gap for xl migrate"
  e2e_mig_sync xl-checked
  # 2: relocd migrate --live B -> A
  move_dst live
  sched_is_own live
  # 3: relocd migrate --live --auto-converge, cancelled once it throttles
  sleep 3
  domid=$(xl domid $E2E_GUEST)
  tx0=$(e2e_mig_tx)
  t0=$(e2e_now)
  relocd --control "$E2E_MIG_SOCK" migrate --live --bandwidth $BW --downtime-limit 50 --auto-converge --json $E2E_GUEST "$E2E_MIG_PEER" \
    > /tmp/cancel.out 2> /tmp/cancel.err &
  cpid=$!
  seen=
  while kill -0 $cpid 2>/dev/null; do
    s=$(sched_of)
    if [ -n "$s" ] && [ "$s" != "$OWN_WEIGHT $OWN_CAP" ]; then
      seen=$s
      break
    fi
    usleep 200000
  done
  [ -n "$seen" ] || { wait $cpid; cat /tmp/cancel.out /tmp/cancel.err; e2e_fail "the auto-converge run ended (rc $?) before A showed a throttle"; }
  e2e_report cancel_throttled_after_s "$(e2e_secs "$t0" "$(e2e_now)")"
  e2e_report cancel_throttled_weight_cap "$(echo "$seen" | tr ' ' /)"
  [ "${seen% *}" = "$OWN_WEIGHT" ] || e2e_mig_soft_fail "the throttle changed the guest's weight: '$seen'"
  [ "${seen#* }" -ge 1 ] && [ "${seen#* }" -lt $OWN_CAP ] || e2e_mig_soft_fail "the throttle's cap '${seen#* }' is not below the guest's own $OWN_CAP"
  t1=$(e2e_now)
  kill -INT $cpid
  wait $cpid
  rc=$?
  e2e_report cancel_exit_after_s "$(e2e_secs "$t1" "$(e2e_now)")"
  e2e_mig_report_tx cancel "$tx0"
  cat /tmp/cancel.out /tmp/cancel.err
  e2e_collect /tmp/cancel.out cancel.out
  e2e_collect /tmp/cancel.err cancel.err
  e2e_report cancel_rc $rc
  [ $rc = 130 ] || e2e_mig_soft_fail "relocd migrate after SIGINT exited $rc, not 130"
  [ "$(xl domid $E2E_GUEST 2>/dev/null)" = "$domid" ] || e2e_fail "after the cancel the guest is not domain $domid here"
  i=0
  until [ "$(sched_of)" = "$OWN_WEIGHT $OWN_CAP" ] || [ $i -ge 100 ]; do
    usleep 200000
    i=$((i + 1))
  done
  e2e_report cancel_restored_after_s "$(e2e_secs "$t1" "$(e2e_now)")"
  sched_is_own cancel
  e2e_mig_counts_on cancel
  e2e_mig_tell cancelled || e2e_fail "cannot tell B the cancel is over"
  e2e_mig_sync cancel-checked
  # 4: relocd migrate --live --auto-converge A -> B
  move_src auto "$RELOCD --live --bandwidth $BW --auto-converge $E2E_GUEST $E2E_MIG_PEER"
  # 5-8: offline, the bytes on the wire
  move_dst plain
  move_src zero "$RELOCD $E2E_GUEST $E2E_MIG_PEER"
  move_dst lz4
  move_src both "$RELOCD --compress $E2E_GUEST $E2E_MIG_PEER"
  e2e_mig_sync done
  ;;
B)
  e2e_mig_timeline_listen
  e2e_mig_sync ready
  e2e_mig_timeline_relay
  # 1: xl migrate A -> B
  timeout 400 nc -l -p $XL_PORT -e xl migrate-receive > /tmp/xl-receive.out 2>&1 &
  xlr=$!
  e2e_mig_bg $xlr
  move_dst xl
  wait $xlr || { cat /tmp/xl-receive.out; e2e_fail "receiving xl's migration failed"; }
  s=$(sched_of)
  e2e_report xl_sched_weight_cap "$(echo "$s" | tr ' ' /)"
  echo "E2E-INFO after xl migrate the guest has weight/cap '$s' on B; the guest's own are $OWN_WEIGHT $OWN_CAP"
  sched_own
  # 2: relocd migrate --live B -> A
  move_src live "$RELOCD --live --bandwidth $BW $E2E_GUEST $E2E_MIG_PEER"
  # 3: A's cancelled run
  m=$(e2e_mig_hear 400)
  [ "$m" = cancelled ] || e2e_fail "A's cancelled run: A said '$m'"
  e2e_mig_no_guest "the cancelled migration" 30
  e2e_mig_sync cancel-checked
  # 4: relocd migrate --live --auto-converge A -> B
  move_dst auto
  sched_is_own auto
  # 5-8: offline, the bytes on the wire
  move_src plain "$RELOCD --no-zero-pages $E2E_GUEST $E2E_MIG_PEER"
  move_dst zero
  move_src lz4 "$RELOCD --compress --no-zero-pages $E2E_GUEST $E2E_MIG_PEER"
  move_dst both
  sched_is_own both
  e2e_mig_sync done
  e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy on B failed"
  ;;
esac
[ $E2E_MIG_FAILED = 0 ] || exit 1
echo "E2E-INFO relocd-auto-converge: host $E2E_MIG_ROLE OK"
