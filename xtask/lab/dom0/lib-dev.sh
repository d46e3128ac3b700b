# Helpers of the scenarios whose guest has a vif and a vbd (busybox sh),
# sourced after /e2e/lib.sh (and /e2e/lib-migrate.sh for two hosts). They
# make the device guest (guest/guest-dev.cfg) the test guest of lib.sh's
# helpers (e2e_guest_start, e2e_guest_goes_on, e2e_mig_*), and add:
#   e2e_dev_start            xl create it; wait for its counter, its network
#                            and its first acknowledged block
#   e2e_dev_stream_start     a TCP stream from this dom0 to the guest
#   e2e_dev_stream_check     no byte lost, repeated or reordered either way,
#                            the same connection; the longest gap
#   e2e_dev_stream_goes_on   ... and it carries new lines after an event
#   e2e_dev_blk_last LOG     the guest's last acknowledged block in LOG
#   e2e_dev_blocks_check     every acknowledged block reads back intact
#                            from the shared disk (O_DIRECT in dom0)
#   e2e_dev_no_trace         no domain, backend, xenstore tree or vif left
E2E_GUEST=e2e-dev
E2E_GUEST_CFG=/e2e/guest/guest-dev.cfg
E2E_GUEST_LOG=$E2E_CONSOLE_DIR/guest-$E2E_GUEST.log
E2E_DEV_IP=169.254.0.10
E2E_DEV_PORT=7000
E2E_DEV_STREAM_LOG=/tmp/stream.log
E2E_DEV_STREAM_PIDS=

e2e_dev_wait_line() { # e2e_dev_wait_line LOG PATTERN TIMEOUT_S: PATTERN (grep) in LOG
  _i=0
  until grep -q "$2" "$1" 2>/dev/null; do
    _i=$((_i + 1))
    [ $_i -ge "$3" ] && return 1
    sleep 1
  done
  return 0
}

e2e_dev_start() { # the device guest runs, counts, is on the network, writes
  e2e_guest_start
  e2e_dev_wait_line "$E2E_GUEST_LOG" GUEST-DEV-UP 30 \
    || { tail -5 "$E2E_GUEST_LOG"; e2e_fail "the device guest did not bring its devices up"; }
  grep -q GUEST-DEV-ERROR "$E2E_GUEST_LOG" && e2e_fail "the device guest: $(grep GUEST-DEV-ERROR "$E2E_GUEST_LOG" | head -1)"
  e2e_report dev_guest "$(grep -o 'GUEST-DEV-UP.*' "$E2E_GUEST_LOG" | head -1 | tr -d '\r')"
  e2e_dev_wait_line "$E2E_GUEST_LOG" 'GUEST-BLK acked=3 ' 60 \
    || { tail -5 "$E2E_GUEST_LOG"; e2e_fail "the device guest does not write its disk"; }
  _d=$(xl domid $E2E_GUEST)
  [ -e /sys/class/net/vif$_d.0/brport ] || e2e_fail "vif$_d.0 is not a port of xenbr0"
}

# --- the TCP stream. This dom0 sends "P N" every 0.2 s on one connection
# (busybox nc) and writes each line the guest sends back ("G M N") with
# its own uptime to $E2E_DEV_STREAM_LOG.
e2e_dev_stream_start() {
  rm -f $E2E_DEV_STREAM_LOG /tmp/stream-in /tmp/stream-out
  mkfifo /tmp/stream-in /tmp/stream-out
  : > $E2E_DEV_STREAM_LOG
  ( _n=0
    while :; do
      _n=$((_n + 1))
      echo "P $_n" || exit 0
      usleep 200000
    done ) > /tmp/stream-in &
  E2E_DEV_STREAM_PIDS=$!
  ( while IFS= read -r _l; do
      read -r _up _x < /proc/uptime
      echo "$_up $_l"
    done ) < /tmp/stream-out >> $E2E_DEV_STREAM_LOG &
  E2E_DEV_STREAM_PIDS="$E2E_DEV_STREAM_PIDS $!"
  nc $E2E_DEV_IP $E2E_DEV_PORT < /tmp/stream-in > /tmp/stream-out 2> /tmp/stream-nc.err &
  E2E_DEV_NC_PID=$!
  E2E_DEV_STREAM_PIDS="$E2E_DEV_STREAM_PIDS $E2E_DEV_NC_PID"
  command -v e2e_mig_bg >/dev/null && for _p in $E2E_DEV_STREAM_PIDS; do e2e_mig_bg "$_p"; done
  _i=0
  until [ "$(wc -l < $E2E_DEV_STREAM_LOG)" -ge 10 ]; do
    _i=$((_i + 1))
    if [ $_i -ge 30 ] || ! kill -0 $E2E_DEV_NC_PID 2>/dev/null; then
      cat /tmp/stream-nc.err
      e2e_fail "the TCP stream to the guest ($E2E_DEV_IP:$E2E_DEV_PORT) did not start"
    fi
    sleep 1
  done
  echo "E2E-INFO TCP stream to the guest runs (nc pid $E2E_DEV_NC_PID)"
}

e2e_dev_stream_stop() {
  for _p in $E2E_DEV_STREAM_PIDS; do kill "$_p" 2>/dev/null; done
  E2E_DEV_STREAM_PIDS=
  return 0
}

e2e_dev_stream_lines() { wc -l < $E2E_DEV_STREAM_LOG; }

# e2e_dev_stream_check NAME [FROM_LINE]: the connection is the one opened
# first (the guest's own numbers M run on from 1 without a break: a new
# connection would start again at 1), no line of either side lost,
# repeated or out of order (the guest echoes N, which must rise by one a
# line), nc still connected. Reports NAME_stream_lines and
# NAME_stream_max_gap_s: the longest time between two lines back from the
# guest (from line FROM_LINE of the log on, default 1), after line
# NAME_stream_gap_after.
e2e_dev_stream_check() {
  kill -0 "$E2E_DEV_NC_PID" 2>/dev/null \
    || { cat /tmp/stream-nc.err; e2e_fail "$1: the TCP connection to the guest is closed"; }
  _v=$(awk -v f="${2:-1}" '
    { if ($2 != "G" || NF != 4) { bad = "line " NR " is not G M N: " $0; exit }
      if ($3 != pg + 1) { bad = "the guest line " $3 " came after " pg; exit }
      if ($4 != pp + 1) { bad = "the guest echoed " $4 " after " pp; exit }
      if (NR > f && $1 - pt > gap) { gap = $1 - pt; at = pg }
      pg = $3; pp = $4; pt = $1 }
    END { if (bad != "") print "BAD " bad
          else printf "ok %d %.2f %d\n", pg, gap, at }' $E2E_DEV_STREAM_LOG)
  case "$_v" in
    "ok "*) ;;
    *) tail -5 $E2E_DEV_STREAM_LOG; e2e_fail "$1: the TCP stream is broken: ${_v#BAD }" ;;
  esac
  set -- "$1" $_v
  e2e_report "$1_stream_lines" "$3"
  e2e_report "$1_stream_max_gap_s" "$4"
  e2e_report "$1_stream_gap_after" "$5"
  grep -q GUEST-TCP-BAD "$E2E_CONSOLE_DIR"/guest-*.log \
    && e2e_fail "$1: the guest got the stream out of order: $(grep -h GUEST-TCP-BAD "$E2E_CONSOLE_DIR"/guest-*.log | head -1)"
  [ "$(grep -h GUEST-TCP-OPEN "$E2E_CONSOLE_DIR"/guest-*.log | wc -l)" -le 1 ] \
    || e2e_fail "$1: the guest saw the stream connect more than once"
  return 0
}

# e2e_dev_stream_goes_on NAME [FROM_LINE]: 25 more lines (5 s) come back
# within 150 s (TCP's retransmissions back off while the guest is paused:
# after a long pause the next one can be a minute away on a loaded host),
# then e2e_dev_stream_check NAME FROM_LINE
e2e_dev_stream_goes_on() {
  _from=$(e2e_dev_stream_lines)
  _i=0
  until [ "$(e2e_dev_stream_lines)" -ge $((_from + 25)) ]; do
    _i=$((_i + 1))
    if [ $_i -ge 150 ]; then
      tail -3 $E2E_DEV_STREAM_LOG
      e2e_fail "$1: the TCP stream carried $(($(e2e_dev_stream_lines) - _from)) lines in 150 s"
    fi
    sleep 1
  done
  e2e_dev_stream_check "$1" "${2:-1}"
}

# --- the guest's blocks on the shared disk
e2e_dev_blk_last() { # e2e_dev_blk_last LOG -> "N R": the last acknowledged block and its run
  grep -o 'GUEST-BLK acked=[0-9]* run=[0-9a-f]*' "$1" 2>/dev/null | tail -1 \
    | sed 's/GUEST-BLK acked=\([0-9]*\) run=\([0-9a-f]*\)/\1 \2/'
}

# e2e_dev_blocks_check NAME RUN UPTO: blocks 1..UPTO of the shared disk,
# read with O_DIRECT (no page cache of this dom0 between it and the disk),
# are the guest's, every line as it wrote it. Reports NAME_blocks_checked.
e2e_dev_blocks_check() {
  [ -n "$2" ] && [ "$3" -ge 1 ] 2>/dev/null || e2e_fail "$1: no acknowledged block to check ('$2' '$3')"
  _v=$(dd if="$E2E_SHARED" bs=4096 skip=1 count="$3" iflag=direct 2>/dev/null | awk -v r="$2" -v n="$3" '
    { b = int((NR - 1) / 64) + 1
      want = sprintf("E2EBLK %s %010d %02d xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", r, b, (NR - 1) % 64)
      if ($0 != want) { bad++; if (!first) first = b } }
    END { if (NR != n * 64 && !first) { bad++; first = int(NR / 64) + 1 }
          printf "%d %d %d\n", NR, bad, first }')
  set -- "$1" "$2" "$3" $_v
  if [ "$5" != 0 ]; then
    dd if="$E2E_SHARED" bs=4096 skip="$6" count=1 iflag=direct 2>/dev/null | head -2
    e2e_fail "$1: $5 of the $(($3 * 64)) lines of blocks 1-$3 (run $2) read back wrong, the first in block $6"
  fi
  e2e_report "$1_blocks_checked" "$3"
  echo "E2E-INFO $1: blocks 1-$3 of run $2 intact on $E2E_SHARED"
}

# e2e_dev_blocks_go_on NAME LOG AFTER [RUN]: the guest acknowledges a block
# past AFTER in LOG within 60 s (of run RUN, if given: the same boot of the
# guest); then every block up to the newest is checked
e2e_dev_blocks_go_on() {
  _i=0
  _run=$4
  while :; do
    set -- "$1" "$2" "$3" $(e2e_dev_blk_last "$2")
    if [ -n "$4" ] && [ "$4" -gt "$3" ]; then
      [ -z "$_run" ] || [ "$5" = "$_run" ] || e2e_fail "$1: the guest writes blocks of run $5, not $_run: it rebooted"
      break
    fi
    _i=$((_i + 1))
    [ $_i -ge 60 ] && e2e_fail "$1: the guest acknowledged no block after $3 in 60 s"
    sleep 1
  done
  e2e_report "$1_blk_acked" "$4"
  e2e_dev_blocks_check "$1" "$5" "$4"
}

# e2e_dev_no_trace WHAT DOMID [TIMEOUT_S [soft]]: this host has nothing
# left of domain DOMID: not in xl list, no xenstore tree
# (/local/domain/DOMID, /libxl/DOMID), no backend (vif, vbd), no
# vifDOMID.* interface. With `soft` a failure is reported and the scenario
# goes on (e2e_mig_soft_fail; status 1).
e2e_dev_no_trace() {
  _i=0
  while :; do
    _left=
    xl list | awk 'NR > 1 { print $2 }' | grep -qx "$2" && _left="$_left domain;"
    for _p in /local/domain/$2 /libxl/$2 /local/domain/0/backend/vif/$2 /local/domain/0/backend/vbd/$2; do
      xenstore-exists "$_p" 2>/dev/null && _left="$_left $_p;"
    done
    for _n in /sys/class/net/vif$2.*; do
      [ -e "$_n" ] && _left="$_left ${_n##*/};"
    done
    [ -z "$_left" ] && break
    _i=$((_i + 1))
    if [ $_i -ge "${3:-20}" ]; then
      xenstore-ls /local/domain/0/backend 2>&1 | head -20
      [ "$4" = soft ] || e2e_fail "$1: domain $2 left traces:$_left"
      e2e_mig_soft_fail "$1: domain $2 left traces:$_left"
      return 1
    fi
    sleep 1
  done
  echo "E2E-INFO $1: nothing of domain $2 left here (${_i} s)"
}

e2e_dev_end() { # the EXIT trap of the device scenarios (after lib-migrate's)
  _rc=$?
  e2e_dev_stream_stop
  [ -f $E2E_DEV_STREAM_LOG ] && e2e_collect $E2E_DEV_STREAM_LOG stream.log
  [ -s /var/log/xen/xen-hotplug.log ] && e2e_collect /var/log/xen/xen-hotplug.log xen-hotplug.log
  (exit $_rc)
  e2e_mig_end
}

e2e_dev_stream_mark() { echo $(($(e2e_dev_stream_lines) + 1)); } # the next stream line

# e2e_dev_backends_empty: no vif or vbd backend of any domain in this
# dom0's xenstore and no vif interface (prints what is left; status 1)
e2e_dev_backends_empty() {
  _left=
  for _t in vif vbd; do
    for _d in $(xenstore-list /local/domain/0/backend/$_t 2>/dev/null); do
      _left="$_left backend/$_t/$_d;"
    done
  done
  for _n in /sys/class/net/vif*; do
    [ -e "$_n" ] && _left="$_left ${_n##*/};"
  done
  [ -z "$_left" ] && return 0
  echo "$_left"
  return 1
}
