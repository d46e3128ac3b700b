# driver-domain-denied (host A of the two FLASK hosts; B only checks its
# relocd domain): from the relocd domain (relocd_t), saving and migrating
# dom0 and a guest labelled nomigrate_t (a type relocd's policy module
# does not cover; Xen's example policy builds it through
# nomigrate_t_building) fail with the FLASK denial named (operation,
# domain, permission); `xl dmesg` has the AVC denials with scontext
# relocd_t; the guest runs on, unpaused, and so does dom0. The migrations
# are aimed at B's relocd domain, which would take them.
. /e2e/lib.sh
. /e2e/dd/lib-dd.sh
e2e_dd_wait
e2e_dd_no_dom0_relocd
if [ "$(e2e_arg e2e.role)" = B ]; then
  echo "E2E-INFO driver-domain-denied: host B's relocd domain serves; the checks run on A"
  exit 0
fi
NOMIG=e2e-nomig
NOMIG_LOG=$E2E_CONSOLE_DIR/guest-$NOMIG.log
xl destroy $NOMIG >/dev/null 2>&1
rm -f "$NOMIG_LOG"
e2e_step create-nomigrate xl create "$E2E_GUEST_CFG" "name=\"$NOMIG\"" \
  'init_seclabel="system_u:system_r:nomigrate_t_building"' \
  'seclabel="system_u:system_r:nomigrate_t"' \
  || e2e_fail "xl create of a nomigrate_t guest failed"
xl list -Z
xl list -Z | grep "^$NOMIG " | grep -q nomigrate_t || e2e_fail "the guest is not nomigrate_t"
e2e_wait_counter "$NOMIG_LOG" 3 120 || e2e_fail "the nomigrate_t guest never counted"
nomig=$(xl domid $NOMIG)
e2e_report nomigrate_domid "$nomig"

e2e_dd 'relocd --control /run/relocd.sock list' > /tmp/dd-list.txt
cat /tmp/dd-list.txt
e2e_collect /tmp/dd-list.txt relocd-domain-list.txt

# denied: each command fails, names FLASK's refusal, the domain and the
# permission; nothing is saved
n=0
for what in "save 0 /tmp/dom0.save" "migrate --live 0 169.254.0.12" \
            "save $nomig /tmp/nomig.save" "migrate --live $nomig 169.254.0.12"; do
  n=$((n + 1))
  set -- $what
  dom=$2; [ "$1" = migrate ] && dom=$3
  e2e_dd "relocd --control /run/relocd.sock $what" > /tmp/denied-$n.txt
  rc=$?
  cat /tmp/denied-$n.txt
  e2e_collect /tmp/denied-$n.txt "denied-$n.txt"
  [ $rc != 0 ] || e2e_fail "relocd $what succeeded from the relocd domain"
  grep -q "denied by Xen's security policy (XSM/FLASK): .* on domain $dom (needs FLASK permission " /tmp/denied-$n.txt \
    || e2e_fail "relocd $what: no FLASK denial named for domain $dom: $(tail -2 /tmp/denied-$n.txt | tr '\n' ' ')"
  e2e_report "denied_$1_$dom" "$(grep -o "denied by Xen's security policy.*" /tmp/denied-$n.txt | head -1)"
done
e2e_dd 'ls /tmp/*.save 2>/dev/null; true' | grep -q save && e2e_fail "a save file was left in the relocd domain"

# Xen's side: the AVC denials, with relocd_t as the subject
xl dmesg | grep "avc:  denied" > /tmp/avc.txt
e2e_collect /tmp/avc.txt avc-denials.txt
tail -8 /tmp/avc.txt
grep "scontext=system_u:system_r:relocd_t" /tmp/avc.txt | grep -q "tcontext=system_u:system_r:dom0_t" \
  || e2e_fail "xl dmesg has no AVC denial of relocd_t over dom0_t"
grep "scontext=system_u:system_r:relocd_t" /tmp/avc.txt | grep -q "tcontext=system_u:system_r:nomigrate_t" \
  || e2e_fail "xl dmesg has no AVC denial of relocd_t over nomigrate_t"
e2e_report avc_relocd_t "$(grep -c 'scontext=system_u:system_r:relocd_t' /tmp/avc.txt) lines: $(grep 'scontext=system_u:system_r:relocd_t' /tmp/avc.txt | sed 's/.*denied *{ *\([^}]*\)}.*tcontext=[^ ]*:\([a-z_0-9]*\) .*tclass=\([a-z0-9_]*\).*/\3:\1on \2/' | sort -u | tr '\n' ';')"

# the guest and dom0 run on, unpaused
state=$(xl list $NOMIG | awk 'NR==2 {print $5}')
case "$state" in *p*|*s*|*c*|*d*) e2e_fail "the nomigrate_t guest is '$state' after the denials" ;; esac
c=$(e2e_last_counter "$NOMIG_LOG")
e2e_step counts-on e2e_wait_counter "$NOMIG_LOG" $((c + 3)) 30 || e2e_fail "the nomigrate_t guest stopped counting"
xl list 0 >/dev/null || e2e_fail "dom0 is not listed"
e2e_step destroy xl destroy $NOMIG || e2e_fail "xl destroy failed"
echo "E2E-INFO driver-domain-denied OK"
