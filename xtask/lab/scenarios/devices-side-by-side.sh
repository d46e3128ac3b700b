# devices-side-by-side (two hosts, one device guest, one run): the guest
# has a vif on xenbr0 and a vbd on the shared disk; a TCP stream from A's
# dom0 runs through both moves and the guest writes numbered blocks.
#  1. `xl migrate -s ""` A -> B (busybox nc between the dom0s, port 8012);
#  2. `relocd migrate --live --compress` B -> A.
# For each: the total time (the sender's command), the pause the guest saw
# (the gap between its last console line on the source and its first on
# the destination, one clock: lib-migrate.sh), the TCP stream's longest
# gap (A's dom0, from the lines the guest sends back), and the checks:
# the guest counts on at +1 with its memory intact, the same TCP connection
# goes on without a line lost or reordered, every acknowledged block reads
# back intact and new ones are written, the source has nothing of the
# domain left (xenstore, backends, vif).
. /e2e/lib.sh
. /e2e/lib-migrate.sh
. /e2e/lib-dev.sh
XL_PORT=8012
rm -f /var/log/xen/xen-hotplug.log
e2e_mig_start e2e_dev_end

case "$E2E_MIG_ROLE" in
A)
  e2e_dev_start
  e2e_mig_timeline_listen
  e2e_mig_sync ready
  e2e_mig_timeline_relay
  e2e_dev_stream_start
  sleep 3
  domid=$(xl domid $E2E_GUEST)
  # 1: xl migrate A -> B (B may not listen yet: a refused connection fails
  # before the guest is suspended, so trying again is safe)
  n=0
  tx0=$(e2e_mig_tx)
  s0=$(e2e_dev_stream_mark)
  until e2e_step xl-migrate sh -c "xl migrate -s '' $E2E_GUEST 'exec nc $E2E_MIG_PEER $XL_PORT' > /tmp/xl-migrate.out 2>&1"; do
    cat /tmp/xl-migrate.out
    n=$((n + 1))
    [ $n -ge 20 ] && e2e_fail "xl migrate to B failed $n times"
    xl list | grep -q "^$E2E_GUEST " || e2e_fail "the guest is gone after a failed xl migrate"
    sleep 2
  done
  cat /tmp/xl-migrate.out
  e2e_collect /tmp/xl-migrate.out xl-migrate.out
  e2e_report xl_total_s "$E2E_STEP_SECS"
  e2e_mig_report_tx xl "$tx0"
  sleep 1
  before=$(e2e_last_counter "$E2E_GUEST_LOG")
  set -- $(e2e_dev_blk_last "$E2E_GUEST_LOG")
  e2e_report xl_counter_at_suspend "$before"
  e2e_report xl_blk_acked_at_suspend "$1"
  from2=$(e2e_log_mark)   # relocd's guest comes back into this log
  e2e_mig_tell "$before $1 $2" || e2e_fail "cannot tell B the counter"
  e2e_dev_no_trace xl-migrate "$domid"
  e2e_mig_gap xl "$before" || e2e_mig_soft_fail "no guest-measured gap for xl migrate"
  e2e_dev_stream_goes_on xl "$s0"
  # 2: relocd migrate --live B -> A
  s0=$(e2e_dev_stream_mark)
  said=$(e2e_mig_hear 400)
  set -- $said
  case "$1" in ''|*[!0-9]*) e2e_fail "B's relocd migrate failed ('$said')" ;; esac
  xl list | grep -q "^$E2E_GUEST " || e2e_fail "no $E2E_GUEST on A after relocd migrate"
  e2e_guest_goes_on relocd "$1" "$E2E_GUEST_LOG" "$from2"
  e2e_dev_stream_goes_on relocd "$s0"
  e2e_dev_blocks_go_on relocd "$E2E_GUEST_LOG" "$2" "$3"
  d=$(xl domid $E2E_GUEST)
  [ -e /sys/class/net/vif$d.0/brport ] || e2e_fail "vif$d.0 is not a port of xenbr0 on A"
  e2e_mig_lists_agree after-relocd
  e2e_mig_sync done
  e2e_dev_stream_stop
  e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
  ;;
B)
  e2e_mig_timeline_listen
  e2e_mig_sync ready
  e2e_mig_timeline_relay
  e2e_step xl-receive timeout 300 nc -l -p $XL_PORT -e xl migrate-receive \
    || e2e_fail "receiving xl's migration failed"
  said=$(e2e_mig_hear 120)
  set -- $said
  case "$1" in ''|*[!0-9]*) e2e_fail "A did not say where the counter was ('$said')" ;; esac
  before=$1 acked=$2 run=$3
  INCOMING=$E2E_CONSOLE_DIR/guest-$E2E_GUEST--incoming.log
  e2e_guest_goes_on xl "$before" "$INCOMING" 1
  e2e_dev_blocks_go_on xl "$INCOMING" "$acked" "$run"
  d=$(xl domid $E2E_GUEST)
  [ -e /sys/class/net/vif$d.0/brport ] || e2e_fail "vif$d.0 is not a port of xenbr0 on B"
  sleep 5
  tx0=$(e2e_mig_tx)
  e2e_step relocd-migrate sh -c "relocd --control $E2E_MIG_SOCK migrate --live --compress --json $E2E_GUEST $E2E_MIG_PEER > /tmp/migrate.json 2> /tmp/migrate.err"
  rc=$?
  e2e_mig_report_tx relocd "$tx0"
  cat /tmp/migrate.json /tmp/migrate.err
  e2e_collect /tmp/migrate.json migrate.json
  if [ $rc != 0 ]; then
    e2e_mig_tell failed 20
    e2e_fail "relocd migrate --live B to A failed (rc $rc): $(cat /tmp/migrate.json /tmp/migrate.err | tail -2 | tr '\n' ' ')"
  fi
  e2e_report relocd_total_s "$E2E_STEP_SECS"
  e2e_mig_report_json relocd /tmp/migrate.json
  sleep 1
  before=$(e2e_last_counter "$INCOMING")
  set -- $(e2e_dev_blk_last "$INCOMING")
  e2e_report relocd_counter_at_suspend "$before"
  e2e_mig_tell "$before $1 $2" || e2e_fail "cannot tell A the counter"
  xl list | grep -q "^$E2E_GUEST " && e2e_fail "the guest is still on B after relocd migrate"
  e2e_dev_no_trace relocd-migrate "$d"
  e2e_mig_gap relocd "$before" || e2e_mig_soft_fail "no guest-measured gap for relocd migrate"
  e2e_mig_lists_agree after-relocd
  e2e_mig_sync done
  ;;
esac
[ $E2E_MIG_FAILED = 0 ] || exit 1
echo "E2E-INFO devices-side-by-side: host $E2E_MIG_ROLE OK"
