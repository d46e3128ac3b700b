# xl-migrate-remote (two hosts): host A live-migrates the running test guest
# to host B over the link with xl (busybox nc as the transport, no ssh);
# on B it must go on counting from where it stopped on A.
#   A: creates the guest, migrates it, tells B the last counter it saw
#   B: receives the guest, checks it goes on at that counter + 1
. /e2e/lib.sh
role=$(e2e_arg e2e.role)
peer=$(e2e_arg e2e.peer)
[ -n "$peer" ] || e2e_fail "no e2e.peer on the kernel command line (run with two hosts)"
MIGRATE_PORT=8002
COUNTER_PORT=8003
INCOMING=$E2E_CONSOLE_DIR/guest-$E2E_GUEST--incoming.log

case "$role" in
A)
  # the smallest guest the Debian kernel boots in: less to carry over the link
  sed -e 's/^memory .*/memory   = 96/' -e 's/^maxmem .*/maxmem   = 96/' \
    "$E2E_GUEST_CFG" > /tmp/guest-96.cfg
  E2E_GUEST_CFG=/tmp/guest-96.cfg
  e2e_guest_start
  i=0
  until ping -c 1 -W 1 "$peer" >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -ge 60 ] && e2e_fail "cannot reach $peer"; sleep 1
  done
  # B may not listen yet: a refused connection fails before the guest is
  # suspended, so trying again is safe
  n=0
  until e2e_step migrate xl migrate -s "" $E2E_GUEST "exec nc $peer $MIGRATE_PORT"; do
    n=$((n + 1))
    [ $n -ge 20 ] && e2e_fail "xl migrate to $peer failed $n times"
    xl list | grep -q "^$E2E_GUEST " || e2e_fail "the guest is gone after a failed migration"
    sleep 2
  done
  xl list | grep -q "^$E2E_GUEST " && e2e_fail "the guest still runs on A after the migration"
  sleep 1   # let xenconsoled drain the last lines of the source domain
  before=$(e2e_last_counter "$E2E_GUEST_LOG")
  e2e_report counter_at_suspend "$before"
  n=0
  until echo "$before" | nc "$peer" $COUNTER_PORT; do
    n=$((n + 1)); [ $n -ge 30 ] && e2e_fail "cannot tell B the counter"; sleep 1
  done
  e2e_collect "$E2E_GUEST_LOG" guest-console-source.log
  ;;
B)
  xl destroy $E2E_GUEST >/dev/null 2>&1
  rm -f "$E2E_CONSOLE_DIR"/guest-*
  e2e_step receive timeout 240 nc -l -p $MIGRATE_PORT -e xl migrate-receive \
    || e2e_fail "receiving the migration failed"
  xl list | grep -q "^$E2E_GUEST " || e2e_fail "no guest on B after the migration"
  before=$(timeout 60 nc -l -p $COUNTER_PORT | tr -dc 0-9)
  [ -n "$before" ] || e2e_fail "A did not say where the counter was"
  e2e_guest_goes_on migrate "$before" "$INCOMING" 1
  e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
  e2e_collect "$INCOMING" guest-console-target.log
  ;;
*) e2e_fail "unknown role '$role'" ;;
esac
echo "E2E-INFO xl-migrate-remote: host $role OK"
