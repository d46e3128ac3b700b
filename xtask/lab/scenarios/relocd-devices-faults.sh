# relocd-devices-faults (two hosts): the device guest (vif on xenbr0, vbd on
# the shared disk) runs on A with a TCP stream from A's dom0 and its block
# writes. The daemons keep relocd's own I/O timeout: B's admission runs the
# hotplug scripts (4.5 s on a loaded host), and with relocd-migrate-faults'
# --io-timeout 5 A gave up waiting for it.
#  (a) B has no bridge xenbr0 (renamed xenbr0-hidden; its address and the
#      link stay): `relocd migrate --live` to B is refused, its message
#      names the vif and xenbr0; the guest was never asked to suspend (a
#      xenstore watch on control/shutdown), runs on at A as the same domain
#      with its stream and its writes going on; B has no domain, backend
#      or vif;
#  (b) B does not see the disk (its /dev/e2e-shared, the path the guest's
#      config names, removed): refused, the message names the vbd (`vbd`
#      or `xvda`) and the path; the rest as (a);
#  (c) B's daemon killed -9 in the stop-and-copy (relocd-migrate-faults'
#      way: A's daemon frozen when a xenstore watch sees relocd ask the
#      guest to suspend, B told, which kills its daemon): the migration
#      fails, A resumes the guest, whose counter, memory, TCP stream (the
#      same connection, nothing lost or reordered) and disk writes go on;
#      B's restarted daemon leaves no domain, no vif/vbd backend and no vif
#      interface. The phase of the kill is asserted as in
#      relocd-migrate-faults.
. /e2e/lib.sh
. /e2e/lib-migrate.sh
. /e2e/lib-dev.sh
SHARED_TARGET=$(readlink "$E2E_SHARED")

b_restore() { # B: the bridge and the disk back as they were
  [ -e /sys/class/net/xenbr0-hidden ] && {
    ip link set xenbr0-hidden down
    ip link set xenbr0-hidden name xenbr0
    ip link set xenbr0 up
  }
  [ -e "$E2E_SHARED" ] || ln -sfn "$SHARED_TARGET" "$E2E_SHARED"
}
faults_end() {
  _rc=$?
  [ "$E2E_MIG_ROLE" = B ] && b_restore
  (exit $_rc)
  e2e_dev_end
}

# B: no domain, no backend, no vif interface (waits up to TIMEOUT_S);
# tells A "clean" or what is left
b_clean() { # b_clean CASE TIMEOUT_S
  _i=0
  while [ -n "$(e2e_mig_guests)" ] || ! e2e_dev_backends_empty >/dev/null; do
    _i=$((_i + 1))
    [ $_i -ge "$2" ] && break
    sleep 1
  done
  _left="$(e2e_mig_guests | tr '\n' ';')$(e2e_dev_backends_empty)"
  e2e_report "$1_b_left" "${_left:-nothing}"
  if [ -n "$_left" ]; then
    e2e_mig_tell "left $_left"
    e2e_fail "($1) B has: $_left"
  fi
  e2e_mig_tell clean || e2e_fail "($1) cannot tell A that B is clean"
}

# A: a refused migration: rc, message (must match both patterns), never
# asked to suspend, the guest runs on with its stream and writes
refused_case() { # refused_case CASE PATTERN1 PATTERN2
  xenstore-watch -n 2 /local/domain/$domid/control/shutdown > /tmp/watch-$1.out 2>&1 &
  wp=$!
  e2e_mig_bg $wp
  sleep 1
  set -- "$1" "$2" "$3" $(e2e_dev_blk_last "$E2E_GUEST_LOG")
  acked=$4
  s0=$(e2e_dev_stream_mark)
  e2e_step "$1-migrate" sh -c "relocd --control $E2E_MIG_SOCK migrate --live --json $E2E_GUEST $E2E_MIG_PEER > /tmp/migrate-$1.json 2>&1"
  rc=$?
  msg=$(tr '\n' ' ' < /tmp/migrate-$1.json | cut -c1-400)
  e2e_collect /tmp/migrate-$1.json "migrate-$1.json"
  e2e_report "$1_rc" "$rc"
  e2e_report "$1_message" "$msg"
  e2e_report "$1_refused_in_s" "$E2E_STEP_SECS"
  suspend=no
  kill -0 $wp 2>/dev/null || suspend=yes
  kill $wp 2>/dev/null
  e2e_report "$1_suspend_asked" "$suspend"
  [ "$(xl domid $E2E_GUEST 2>/dev/null)" = "$domid" ] || e2e_fail "($1) the guest is not domain $domid any more"
  e2e_mig_counts_on "$1"
  e2e_dev_stream_goes_on "$1" "$s0"
  e2e_dev_blocks_go_on "$1" "$E2E_GUEST_LOG" "$acked" "$run"
  [ $rc != 0 ] || e2e_fail "($1) the migration succeeded"
  [ $suspend = no ] || e2e_mig_soft_fail "($1) relocd asked the guest to suspend before refusing"
  echo "$msg" | grep -q -- "$2" && echo "$msg" | grep -q -- "$3" \
    || e2e_mig_soft_fail "($1) the refusal does not name the device ('$2' and '$3'): $msg"
}

# A: the TCP stream's and the blocks' marks right before (c)'s migration
kill_marks() {
  s0=$(e2e_dev_stream_mark)
  set -- $(e2e_dev_blk_last "$E2E_GUEST_LOG")
  acked=$1
}

rm -f /var/log/xen/xen-hotplug.log
e2e_mig_start faults_end

case "$E2E_MIG_ROLE" in
A)
  e2e_dev_start
  domid=$(xl domid $E2E_GUEST)
  set -- $(e2e_dev_blk_last "$E2E_GUEST_LOG")
  run=$2
  e2e_mig_sync ready
  e2e_dev_stream_start

  # (a) B has no xenbr0
  e2e_mig_tell hide-bridge || e2e_fail "cannot tell B to hide its bridge"
  said=$(e2e_mig_hear 60)
  [ "$said" = bridge-hidden ] || e2e_fail "(a) B said '$said'"
  refused_case bridge vif xenbr0
  e2e_mig_tell bridge-done || e2e_fail "cannot tell B after (a)"
  said=$(e2e_mig_hear 60)
  e2e_report bridge_b_after "$said"
  [ "$said" = clean ] || e2e_fail "(a) B said '$said'"

  # (b) B does not see the disk
  e2e_mig_tell hide-disk || e2e_fail "cannot tell B to hide the disk"
  said=$(e2e_mig_hear 60)
  [ "$said" = disk-hidden ] || e2e_fail "(b) B said '$said'"
  refused_case disk 'vbd\|xvda' e2e-shared
  e2e_mig_tell disk-done || e2e_fail "cannot tell B after (b)"
  said=$(e2e_mig_hear 60)
  e2e_report disk_b_after "$said"
  [ "$said" = clean ] || e2e_fail "(b) B said '$said'"

  # (c) B's daemon killed in the stop-and-copy
  e2e_mig_kill_in_stop_copy c kill_marks
  e2e_dev_stream_goes_on kill "$s0"
  e2e_dev_blocks_go_on kill "$E2E_GUEST_LOG" "$acked" "$run"
  [ -e /sys/class/net/vif$domid.0/brport ] || e2e_fail "(c) vif$domid.0 is not a port of xenbr0 on A"
  e2e_mig_lists_agree after-kill
  [ "$E2E_MIG_B_END" = clean ] || e2e_fail "(c) B's restarted daemon left: B said '$E2E_MIG_B_END'"
  e2e_mig_sync kill-checked
  e2e_dev_stream_stop
  e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
  ;;
B)
  e2e_mig_sync ready
  # (a)
  said=$(e2e_mig_hear 300)
  [ "$said" = hide-bridge ] || e2e_fail "(a) A said '$said'"
  ip link set xenbr0 down && ip link set xenbr0 name xenbr0-hidden && ip link set xenbr0-hidden up \
    || e2e_fail "(a) cannot rename xenbr0"
  e2e_mig_wait_link
  e2e_mig_tell bridge-hidden || e2e_fail "(a) cannot tell A"
  said=$(e2e_mig_hear 300)
  [ "$said" = bridge-done ] || e2e_fail "(a) A said '$said'"
  b_restore
  e2e_mig_wait_link
  b_clean bridge 20
  # (b)
  said=$(e2e_mig_hear 300)
  [ "$said" = hide-disk ] || e2e_fail "(b) A said '$said'"
  rm -f "$E2E_SHARED"
  e2e_mig_tell disk-hidden || e2e_fail "(b) cannot tell A"
  said=$(e2e_mig_hear 300)
  [ "$said" = disk-done ] || e2e_fail "(b) A said '$said'"
  b_restore
  b_clean disk 20
  # (c)
  said=$(e2e_mig_hear 300)
  [ "$said" = kill ] || e2e_fail "(c) A said '$said', not kill"
  e2e_mig_kill_daemon c   # A judges the kill by what B told it
  e2e_report kill_after_kill_backends "$(e2e_dev_backends_empty)"
  said=$(e2e_mig_hear 300)
  e2e_report a_said_after_kill "$said"
  case "$said" in
    kill-late*)
      e2e_mig_serve
      e2e_fail "(c) the kill came after the commit: the guest runs here ($(e2e_mig_guests | tr '\n' ';'))"
      ;;
  esac
  e2e_mig_serve
  b_clean kill 30
  e2e_mig_lists_agree after-restart
  e2e_mig_sync kill-checked
  ;;
esac
[ $E2E_MIG_FAILED = 0 ] || exit 1
echo "E2E-INFO relocd-devices-faults: host $E2E_MIG_ROLE OK"
