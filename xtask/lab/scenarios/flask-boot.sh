# flask-boot (on each of the two FLASK hosts the FLASK scenarios share):
# Xen with XSM/FLASK enforcing and relocd's policy module as a boot
# module: dom0 boots, xl list answers, the relocd domain runs as relocd_t
# (domain 1), and the test guest is created (domU_t) and counts.
. /e2e/lib.sh
. /e2e/dd/lib-dd.sh
e2e_step xl-info sh -c 'xl info > /tmp/xl-info.txt' || e2e_fail "xl info failed"
e2e_report xen_version "$(awk -F': *' '/^xen_version/ {print $2}' /tmp/xl-info.txt)"
e2e_report flask "$(xl dmesg | grep -o -E 'Flask: +[A-Z][a-z]+ in [a-z]+ mode' | head -1)"
xl dmesg | grep -i -E "flask|xsm" | head -5
xl dmesg | grep -q -E "Flask: +(Starting in|Policy loaded, continuing in) enforcing" || e2e_fail "Xen's log does not say FLASK enforces"
e2e_step xl-list xl list -Z || e2e_fail "xl list -Z failed"
xl list -Z | grep -q "^Domain-0 .*dom0_t" || e2e_fail "dom0 is not dom0_t"
e2e_dd_wait
e2e_dd_report_figures
E2E_GUEST_LOG=$E2E_CONSOLE_DIR/guest-$E2E_GUEST.log
xl destroy $E2E_GUEST >/dev/null 2>&1
rm -f "$E2E_GUEST_LOG"
e2e_step create xl create "$E2E_GUEST_CFG" || e2e_fail "xl create of the test guest failed under FLASK"
xl list -Z | grep "^$E2E_GUEST " | grep -q domU_t || e2e_fail "the test guest is not domU_t"
e2e_step first-counter e2e_wait_counter "$E2E_GUEST_LOG" 3 120 || e2e_fail "the guest never counted"
avc=$(xl dmesg | grep -c "avc:  denied")
e2e_report avc_denials_so_far "$avc"
xl dmesg | grep "avc:  denied" | tail -5
e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
# its console log goes too: a later scenario on these hosts reads the
# log of a guest of this name from its first line
sleep 1
rm -f "$E2E_GUEST_LOG"
echo "E2E-INFO flask-boot OK"
