# relocd-migrate-no-memory (two hosts): B has less free memory than the
# guest needs, so B's relocd refuses it at admission. A paused ballast
# domain (the test guest's kernel, never run) takes all but about 40 MiB of
# B's free memory (`xl info`'s free_memory, what relocd's admission reads).
# `relocd migrate --live` from A exits 1 and prints B's reason (the words
# "refused" and "not enough free memory"); the guest runs on at A as the
# same domain and was never stopped: relocd never asked it to suspend (a
# xenstore watch on its control/shutdown: a live migration asks for the
# suspend before it pauses anything), xl list never showed it paused or
# suspended (sampled as fast as xl answers, a few times a second here),
# and its console counter went on without a gap over 8 s (a coarse check:
# its tick is 1-2 s under TCG and stretches to 3-5 s while dom0 copies or
# samples; a stop of the guest is caught by the two checks before); B has
# no domain of the guest's name. The words of B's reason are checked last,
# so that a run tells about the guest's fate either way. The ballast is
# destroyed whatever happens.
. /e2e/lib.sh
. /e2e/lib-migrate.sh
BALLAST=e2e-ballast
LEAVE_MIB=40
no_memory_end() {
  _rc=$?
  xl destroy $BALLAST >/dev/null 2>&1
  xl destroy $E2E_GUEST >/dev/null 2>&1
  (exit $_rc)
  e2e_mig_end
}
xl destroy $BALLAST >/dev/null 2>&1
e2e_mig_start no_memory_end

free_mib() { xl info | awk '$1 == "free_memory" { print $3 }'; }

case "$E2E_MIG_ROLE" in
A)
  e2e_mig_guest96
  e2e_guest_start
  domid=$(xl domid $E2E_GUEST)
  # the guest's console lines with this dom0's uptime (/tmp/timeline-local)
  exec 5>&1
  : > /tmp/timeline-local
  e2e_mig_follow > /dev/null &
  e2e_mig_bg $!
  e2e_mig_sync ready
  said=$(e2e_mig_hear 120)
  case "$said" in
    "ballast free="*) e2e_report b_free_mib "${said#ballast free=}" ;;
    *) e2e_fail "B could not lower its free memory: B said '$said'" ;;
  esac
  xenstore-watch /local/domain/$domid/control/shutdown > /tmp/watch.out 2>&1 &
  wp=$!
  e2e_mig_bg $wp
  ( while :; do echo "$(e2e_now) $(e2e_mig_guest_state)"; usleep 100000; done ) > /tmp/states.txt 2>&1 &
  sp=$!
  e2e_mig_bg $sp
  sleep 3
  t0=$(e2e_now)
  e2e_step relocd-migrate sh -c "relocd --control $E2E_MIG_SOCK migrate --live $E2E_GUEST $E2E_MIG_PEER > /tmp/migrate.out 2>&1"
  rc=$?
  t1=$(e2e_now)
  sleep 4   # the guest's next lines, and whatever a late pause would show
  kill $sp $wp 2>/dev/null
  cat /tmp/migrate.out
  e2e_collect /tmp/migrate.out migrate.out
  e2e_collect /tmp/states.txt guest-states.txt
  e2e_report migrate_rc "$rc"
  e2e_report migrate_message "$(tr '\n' ' ' < /tmp/migrate.out | cut -c1-300)"
  e2e_mig_tell "done $rc" || e2e_fail "cannot tell B"
  [ $rc = 1 ] || e2e_fail "relocd migrate to a host without the memory exited $rc, not 1"
  # the words of B's reason are checked last, the guest's fate first
  # never stopped: no suspend request, never paused, no long gap
  events=$(grep -c . /tmp/watch.out)
  e2e_report control_shutdown_events "$events (1: the watch's own first event)"
  [ "$events" -le 1 ] || e2e_fail "relocd wrote the guest's control/shutdown: $(tr '\n' ' ' < /tmp/watch.out)"
  samples=$(grep -c . /tmp/states.txt)
  stopped=$(awk '$2 ~ /[ps]/' /tmp/states.txt | head -3 | tr '\n' ';')
  e2e_report state_samples "$samples in $(e2e_secs "$(head -1 /tmp/states.txt | cut -d' ' -f1)" "$(tail -1 /tmp/states.txt | cut -d' ' -f1)") s"
  [ "$samples" -ge 5 ] || e2e_fail "only $samples samples of the guest's state"
  [ -z "$stopped" ] || e2e_fail "the guest was paused or suspended during the attempt: $stopped"
  gap=$(awk -v a="$t0" -v b="$t1" '$1 >= a - 3 && $1 <= b + 4 { if (n++) { d = $1 - p; if (d > m) m = d } p = $1 }
                                   END { printf "%.2f %d", m, n }' /tmp/timeline-local)
  e2e_report guest_longest_gap_s "${gap% *} over ${gap#* } lines"
  [ "${gap#* }" -ge 3 ] || e2e_fail "the guest printed ${gap#* } counter lines around the attempt"
  awk -v g="${gap% *}" 'BEGIN { exit !(g < 8) }' \
    || e2e_fail "the guest's console stopped for ${gap% *} s during the attempt"
  [ "$(xl domid $E2E_GUEST 2>/dev/null)" = "$domid" ] || e2e_fail "the guest's domain id changed ($domid)"
  e2e_mig_counts_on refusal
  e2e_mig_lists_agree after
  b_end=$(e2e_mig_hear 60)
  e2e_report b_after "$b_end"
  [ "$b_end" = "no $E2E_GUEST" ] || e2e_fail "B after the refusal: '$b_end'"
  grep -q "refused" /tmp/migrate.out \
    || e2e_mig_soft_fail "relocd migrate does not say B refused: $(tr '\n' ' ' < /tmp/migrate.out)"
  grep -q "not enough free memory" /tmp/migrate.out \
    || e2e_mig_soft_fail "relocd migrate does not give B's reason (not enough free memory): $(tr '\n' ' ' < /tmp/migrate.out)"
  e2e_mig_sync checked
  e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
  ;;
B)
  # a paused domain holding all but LEAVE_MIB of the free memory
  free0=$(free_mib)
  e2e_report free_mib_before "$free0"
  [ -n "$free0" ] || e2e_fail "xl info shows no free_memory"
  n=0
  size=$((free0 - LEAVE_MIB))
  until sed -e "s/^name .*/name     = \"$BALLAST\"/" -e "s/^memory .*/memory   = $size/" \
          -e "s/^maxmem .*/maxmem   = $size/" "$E2E_GUEST_CFG" > /tmp/ballast.cfg \
        && xl create -p /tmp/ballast.cfg > /tmp/ballast.out 2>&1; do
    cat /tmp/ballast.out
    n=$((n + 1))
    [ $n -ge 6 ] && e2e_fail "cannot start a ballast domain of $size MiB (free: $(free_mib) MiB)"
    xl destroy $BALLAST >/dev/null 2>&1
    size=$((size - 16))
  done
  free1=$(free_mib)
  e2e_report ballast_mib "$size"
  e2e_report free_mib_with_ballast "$free1"
  [ "$free1" -lt 96 ] || e2e_fail "B still has $free1 MiB free with the ballast"
  e2e_mig_sync ready
  e2e_mig_tell "ballast free=$free1" || e2e_fail "cannot tell A"
  said=$(e2e_mig_hear 300)
  e2e_report a_said "$said"
  left=$(xl list | awk -v n="$E2E_GUEST" '$1 == n')
  others=$(e2e_mig_guests | grep -v "^$BALLAST " | tr '\n' ';')
  if [ -n "$left$others" ]; then
    e2e_mig_tell "left $left $others"
    e2e_fail "B has a domain after the refused migration: $left $others"
  fi
  e2e_mig_tell "no $E2E_GUEST" || e2e_fail "cannot tell A"
  e2e_mig_lists_agree after
  grep -i "refus\|memory" "$E2E_MIG_LOG" | tail -3
  e2e_mig_sync checked
  e2e_step destroy-ballast xl destroy $BALLAST || e2e_fail "xl destroy of the ballast failed"
  ;;
esac
[ $E2E_MIG_FAILED = 0 ] || exit 1
echo "E2E-INFO relocd-migrate-no-memory: host $E2E_MIG_ROLE OK"
