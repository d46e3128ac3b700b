# devices-save-interop (one host): the device guest (a vif on xenbr0, a vbd
# on the shared disk) saved by one tool and restored by the other, while a
# TCP stream from dom0 runs and the guest writes numbered blocks:
#  1. `xl save` -> `relocd restore`;
#  2. `relocd save` -> `xl restore`.
# After each restore: the counter goes on at +1 with its memory intact, the
# same TCP connection carries on (no line lost, repeated or reordered either
# way; its longest gap is a figure), every block acknowledged before the
# save reads back intact from the shared disk and new ones are written;
# after each save dom0 has nothing left of the domain (no backend, no
# xenstore tree, no vif). relocd list = xl list. When relocd's half fails,
# it is reported (the scenario fails) and the same step goes on with xl's
# tool (xl restore of the xl file; xl save for the second), so that one run
# tells about every part.
. /e2e/lib.sh
. /e2e/lib-migrate.sh
. /e2e/lib-dev.sh
SAVE=/var/lib/xen/save/$E2E_GUEST.save
rm -f /var/lib/xen/save/* "$E2E_MIG_LOG" "$E2E_MIG_CONFIG" /var/log/xen/xen-hotplug.log
rm -rf "$E2E_MIG_STATE"
trap e2e_dev_end EXIT
e2e_mig_serve
e2e_dev_start
e2e_dev_stream_start
e2e_mig_lists_agree created
sleep 3

# saved_here NAME DOMID [soft]: the guest is saved: not listed, nothing of
# it left (with `soft`, leftovers are reported and the scenario goes on);
# the blocks it acknowledged read back intact (sets before, from, acked, run)
saved_here() {
  xl list | grep -q "^$E2E_GUEST " && e2e_fail "the guest still runs after $1"
  e2e_dev_no_trace "$1" "$2" 20 "$3"
  sleep 1   # let xenconsoled drain the last lines of the saved domain
  before=$(e2e_last_counter "$E2E_GUEST_LOG")
  from=$(e2e_log_mark)
  set -- "$1" $(e2e_dev_blk_last "$E2E_GUEST_LOG")
  acked=$2
  run=$3
  e2e_report "counter_at_$1" "$before"
  e2e_report "blk_acked_at_$1" "$acked"
  e2e_dev_blocks_check "$1" "$run" "$acked"
}

# restored_here NAME: the guest goes on, its devices work
restored_here() {
  xl list | grep -q "^$E2E_GUEST " || e2e_fail "$1: no $E2E_GUEST in xl list"
  e2e_guest_goes_on "$1" "$before" "$E2E_GUEST_LOG" "$from"
  e2e_dev_stream_goes_on "$1"
  e2e_dev_blocks_go_on "$1" "$E2E_GUEST_LOG" "$acked"
  d=$(xl domid $E2E_GUEST)
  [ -e /sys/class/net/vif$d.0/brport ] || e2e_fail "$1: vif$d.0 is not a port of xenbr0"
  e2e_mig_lists_agree "$1"
}

# 1: xl save -> relocd restore
domid=$(xl domid $E2E_GUEST)
e2e_step xl-save xl save $E2E_GUEST "$SAVE" || e2e_fail "xl save failed"
saved_here xl-save "$domid"
e2e_step relocd-restore sh -c "relocd --control $E2E_MIG_SOCK restore $SAVE > /tmp/restore1.out 2>&1"
rc=$?
cat /tmp/restore1.out
e2e_report relocd_restore_of_xl_save "rc=$rc $(head -1 /tmp/restore1.out)"
if [ $rc = 0 ]; then
  restored_here relocd-restore
else
  e2e_mig_soft_fail "relocd restore of xl's save file of the device guest failed (rc $rc): $(tail -1 /tmp/restore1.out)"
  e2e_mig_no_guest "the failed relocd restore" 5
  e2e_step xl-restore-xl xl restore "$SAVE" || e2e_fail "xl restore failed too"
  restored_here xl-restore-xl
fi
rm -f "$SAVE"
sleep 3

# 2: relocd save -> xl restore
domid=$(xl domid $E2E_GUEST)
e2e_step relocd-save sh -c "relocd --control $E2E_MIG_SOCK save $E2E_GUEST $SAVE > /tmp/save2.out 2>&1"
rc=$?
cat /tmp/save2.out
e2e_report relocd_save "rc=$rc $(head -1 /tmp/save2.out)"
if [ $rc = 0 ]; then
  saved_here relocd-save "$domid" soft
  e2e_report relocd_save_bytes "$(wc -c < "$SAVE")"
  e2e_export "$SAVE" relocd-dev.save || e2e_mig_soft_fail "relocd's save file could not be exported"
  e2e_step xl-restore-relocd xl restore "$SAVE" || e2e_fail "xl restore of relocd's save file failed"
  restored_here xl-restore-relocd
else
  e2e_mig_soft_fail "relocd save of the device guest failed (rc $rc): $(tail -1 /tmp/save2.out)"
  [ "$(xl domid $E2E_GUEST 2>/dev/null)" = "$domid" ] || e2e_fail "after the failed relocd save the guest is not domain $domid"
  e2e_mig_counts_on failed-relocd-save
  e2e_dev_stream_goes_on failed-relocd-save
  e2e_step xl-save-2 xl save $E2E_GUEST "$SAVE" || e2e_fail "xl save failed"
  saved_here xl-save-2 "$domid"
  e2e_step xl-restore-2 xl restore "$SAVE" || e2e_fail "xl restore failed"
  restored_here xl-restore-2
fi
rm -f "$SAVE"
domid=$(xl domid $E2E_GUEST)
e2e_dev_stream_stop
e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
e2e_dev_no_trace destroy "$domid"
[ $E2E_MIG_FAILED = 0 ] || exit 1
echo "E2E-INFO devices-save-interop OK"
