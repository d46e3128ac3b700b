# xl-migrate: live-migrate the running test guest to the same host with xl
# (needs PV log-dirty, i.e. the shadow-paging hypervisor); it must go on
# counting from where it stopped, its memory intact. The bar relocd's own
# live migration will be held to.
. /e2e/lib.sh
e2e_guest_start
# the receiving domain is first named e2e-guest--incoming, and xenconsoled
# keeps the log name it chose then
INCOMING=$E2E_CONSOLE_DIR/guest-$E2E_GUEST--incoming.log
rm -f "$INCOMING"
# -s "": no ssh; xl runs the last argument with sh -c as the transport
e2e_step migrate xl migrate -s "" $E2E_GUEST "exec xl migrate-receive" \
  || e2e_fail "xl migrate failed (without shadow paging Xen cannot log-dirty a PV guest)"
xl list
xl list | grep -q "^$E2E_GUEST " || e2e_fail "the guest is gone after the migration"
sleep 1   # let xenconsoled drain the last lines of the source domain
before=$(e2e_last_counter "$E2E_GUEST_LOG")
e2e_report counter_at_suspend "$before"
e2e_guest_goes_on migrate "$before" "$INCOMING" 1
e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
e2e_collect "$E2E_GUEST_LOG" guest-console-source.log
e2e_collect "$INCOMING" guest-console-target.log
echo "E2E-INFO xl-migrate OK: counter $before at suspend, $((before + 1)) first after"
