# relocd-migrate-devices (two hosts): the device guest (a vif on xenbr0, a
# vbd on the shared disk) moves A -> B with `relocd migrate --live` while
# (a) a TCP stream from A's dom0 to the guest runs both ways and (b) the
# guest writes numbered blocks to its vbd with O_DIRECT. On B: the same TCP
# connection goes on (no reconnect, no line lost, repeated or reordered;
# its longest gap is a figure), every block acknowledged before the move
# reads back intact from the shared disk and new ones are written, the
# console counter goes on at +1 with its memory intact, the vif is a port
# of B's xenbr0, xl list and relocd list agree. A has nothing of the guest
# left (its domain, /local/domain/ID, /libxl/ID, the vif and vbd backends,
# the vifID.0 interface) and its lists agree. Figures: relocd's, the
# guest-measured pause (lib-migrate.sh), the stream's gap.
. /e2e/lib.sh
. /e2e/lib-migrate.sh
. /e2e/lib-dev.sh
rm -f /var/log/xen/xen-hotplug.log
e2e_mig_start e2e_dev_end

case "$E2E_MIG_ROLE" in
A)
  e2e_dev_start
  e2e_mig_timeline_listen
  e2e_mig_sync ready
  e2e_mig_timeline_relay
  e2e_dev_stream_start
  e2e_mig_lists_agree before
  sleep 3
  domid=$(xl domid $E2E_GUEST)
  tx0=$(e2e_mig_tx)
  s0=$(e2e_dev_stream_mark)
  e2e_step relocd-migrate sh -c "relocd --control $E2E_MIG_SOCK migrate --live --compress --json $E2E_GUEST $E2E_MIG_PEER > /tmp/migrate.json 2> /tmp/migrate.err"
  rc=$?
  e2e_mig_report_tx migrate "$tx0"
  cat /tmp/migrate.json /tmp/migrate.err
  e2e_collect /tmp/migrate.json migrate.json
  if [ $rc != 0 ]; then
    e2e_mig_tell "failed" 20
    e2e_report migrate_message "$(cat /tmp/migrate.json /tmp/migrate.err | tail -2 | tr '\n' ' ' | cut -c1-300)"
    [ "$(xl domid $E2E_GUEST 2>/dev/null)" = "$domid" ] || e2e_fail "after the failed migration the guest is not domain $domid"
    e2e_mig_counts_on failed-migration
    e2e_dev_stream_goes_on failed-migration "$s0"
    e2e_fail "relocd migrate --live to B failed (rc $rc): $(cat /tmp/migrate.json /tmp/migrate.err | tail -2 | tr '\n' ' ')"
  fi
  e2e_report migrate_total_s "$E2E_STEP_SECS"
  e2e_mig_report_json migrate /tmp/migrate.json
  sleep 1   # let xenconsoled drain the source domain's last lines
  before=$(e2e_last_counter "$E2E_GUEST_LOG")
  set -- $(e2e_dev_blk_last "$E2E_GUEST_LOG")
  e2e_report counter_at_suspend "$before"
  e2e_report blk_acked_at_suspend "$1"
  e2e_mig_tell "$before $1 $2" || e2e_fail "cannot tell B the counter"
  xl list | grep -q "^$E2E_GUEST " && e2e_fail "the guest is still on A after the migration"
  e2e_dev_no_trace migrate "$domid"
  e2e_mig_lists_agree after
  e2e_mig_gap migrate "$before" || e2e_fail "no guest-measured gap"
  e2e_dev_stream_goes_on migrate "$s0"
  e2e_mig_sync checked
  e2e_dev_stream_stop
  ;;
B)
  e2e_mig_timeline_listen
  e2e_mig_sync ready
  e2e_mig_timeline_relay
  said=$(e2e_mig_hear 400)
  set -- $said
  case "$1" in
    ''|*[!0-9]*)
      e2e_mig_no_guest "the failed migration" 30
      left=$(e2e_dev_backends_empty) || e2e_fail "the failed migration left on B:$left"
      e2e_fail "A's migration failed ('$said'); B has no leftover domain, backend or vif"
      ;;
  esac
  before=$1 acked=$2 run=$3
  xl list
  xl list | grep -q "^$E2E_GUEST " || e2e_fail "no $E2E_GUEST on B after the migration"
  log=$(ls -t "$E2E_CONSOLE_DIR"/guest-*.log 2>/dev/null | head -1)
  [ -n "$log" ] || e2e_fail "no guest console log on B"
  e2e_report target_console_log "${log##*/}"
  e2e_guest_goes_on migrate "$before" "$log" 1
  e2e_dev_blocks_go_on migrate "$log" "$acked" "$run"
  d=$(xl domid $E2E_GUEST)
  [ -e /sys/class/net/vif$d.0/brport ] || e2e_fail "vif$d.0 is not a port of xenbr0 on B"
  for t in vif vbd; do
    [ "$(xenstore-read /local/domain/0/backend/$t/$d/0/state 2>/dev/null || xenstore-read /local/domain/0/backend/$t/$d/51712/state 2>/dev/null)" = 4 ] \
      || e2e_fail "B's $t backend of domain $d is not connected (state 4): $(xenstore-ls /local/domain/0/backend/$t/$d 2>&1 | grep state | tr '\n' ' ')"
  done
  e2e_mig_lists_agree after
  e2e_mig_sync checked
  e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy on B failed"
  e2e_dev_no_trace destroy "$d"
  ;;
esac
echo "E2E-INFO relocd-migrate-devices: host $E2E_MIG_ROLE OK"
