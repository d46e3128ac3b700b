# Shell helpers for the e2e dom0 (busybox sh): markers the harness reads on
# the serial console. Every marker starts a line with "E2E-".
#   E2E-STEP-BEGIN name            e2e_step started a command
#   E2E-STEP-END name rc secs      ... and it ended (secs on dom0's clock)
#   E2E-REPORT key=value           a figure for the harness's summary
#   E2E-FAIL message               the scenario failed (and exits 1)
#   E2E-FILE-BEGIN name / E2E-FILE-END name   a file copied to target/e2e/
#   E2E-EXPORT name offset size md5   e2e_export wrote a file onto the
#                                  transfer disk at byte offset
E2E_CONSOLE_DIR=/var/log/xen/console
# the disks, found by their serial numbers (dom0/init links them)
E2E_XFER=/dev/e2e-xfer
E2E_SHARED=/dev/e2e-shared

e2e_now() { cut -d' ' -f1 /proc/uptime; }

e2e_secs() { # e2e_secs T0 T1 -> seconds between two e2e_now readings
  awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'
}

e2e_arg() { # e2e_arg e2e.foo -> value of e2e.foo=... on the kernel command line
  for _a in $(cat /proc/cmdline); do
    case "$_a" in "$1="*) echo "${_a#*=}"; return 0 ;; esac
  done
  return 1
}

e2e_report() { echo "E2E-REPORT $1=$2"; }

e2e_fail() {
  echo "E2E-FAIL $*"
  xl list 2>&1
  exit 1
}

e2e_step() { # e2e_step NAME CMD ARGS... -> runs CMD, times it, returns its rc
  # (the seconds it took are left in E2E_STEP_SECS)
  _name=$1; shift
  _t0=$(e2e_now)
  echo "E2E-STEP-BEGIN $_name"
  "$@"
  _rc=$?
  E2E_STEP_SECS=$(e2e_secs "$_t0" "$(e2e_now)")
  echo "E2E-STEP-END $_name $_rc $E2E_STEP_SECS"
  return $_rc
}

e2e_collect() { # e2e_collect FILE [NAME] -> the harness saves it as NAME
  _n=${2:-${1##*/}}
  echo "E2E-FILE-BEGIN $_n"
  [ -f "$1" ] && cat "$1"
  echo
  echo "E2E-FILE-END $_n"
}

# e2e_export FILE [NAME]: copies FILE, however big, onto the transfer disk
# (dom0 boots with one when the harness attached it) at the next free MiB
# and tells the harness, which extracts it after the scenario into
# target/e2e/SCENARIO/NAME, checks its MD5 and, for a NAME ending in
# `.save`, runs Xen's verify-stream-v2 on it (a rejected stream fails the
# scenario). Returns non-zero if the file could not be written.
e2e_export() {
  _n=${2:-${1##*/}}
  [ -b "$E2E_XFER" ] && [ -f /run/e2e-xfer-next ] \
    || { echo "E2E-WARN no transfer disk: $_n not exported"; return 1; }
  [ -f "$1" ] || { echo "E2E-WARN e2e_export: no file $1"; return 1; }
  _size=$(wc -c < "$1")
  _at=$(cat /run/e2e-xfer-next)
  _mib=$(((_size + 1048575) / 1048576))
  _disk=$(($(blockdev --getsize64 "$E2E_XFER") / 1048576))
  [ $((_at + _mib)) -le "$_disk" ] \
    || { echo "E2E-WARN the transfer disk is full: $_n not exported"; return 1; }
  _sum=$(md5sum < "$1" | cut -c1-32)
  e2e_step "export-$_n" dd if="$1" of="$E2E_XFER" bs=1M seek="$_at" conv=notrunc,fsync 2>/dev/null \
    || { echo "E2E-WARN writing $_n onto $E2E_XFER failed"; return 1; }
  echo $((_at + _mib)) > /run/e2e-xfer-next
  echo "E2E-EXPORT $_n $((_at * 1048576)) $_size $_sum"
}

# The test guest prints "GUEST counter=N sum=CRC" every second; xenconsoled
# writes it to $E2E_CONSOLE_DIR/guest-NAME.log.
e2e_counters() { # e2e_counters LOG [FROM_LINE] -> the counters, one a line
  tail -n +"${2:-1}" "$1" 2>/dev/null | grep -o 'GUEST counter=[0-9]*' | cut -d= -f2
}

e2e_last_counter() { e2e_counters "$@" | tail -1; }

e2e_wait_counter() { # e2e_wait_counter LOG MIN TIMEOUT_S [FROM_LINE]
  _i=0
  while [ "$_i" -lt "$3" ]; do
    _c=$(e2e_last_counter "$1" "${4:-1}")
    if [ -n "$_c" ] && [ "$_c" -ge "$2" ]; then
      echo "E2E-INFO counter $_c (>= $2) after ${_i}s"
      return 0
    fi
    sleep 1
    _i=$((_i + 1))
  done
  echo "E2E-INFO counter did not reach $2 within $3 s; console log ends with:"
  tail -5 "$1" 2>/dev/null
  return 1
}

# The test guest (lab/guest/): its name, config and console log.
E2E_GUEST=e2e-guest
E2E_GUEST_CFG=/e2e/guest/guest.cfg
E2E_GUEST_LOG=$E2E_CONSOLE_DIR/guest-$E2E_GUEST.log

e2e_guest_start() { # creates the test guest and waits until it counted to 5
  xl destroy $E2E_GUEST >/dev/null 2>&1
  rm -f "$E2E_CONSOLE_DIR"/guest-*
  e2e_step create xl create "$E2E_GUEST_CFG" || e2e_fail "xl create failed"
  e2e_step first-counter e2e_wait_counter "$E2E_GUEST_LOG" 1 120 \
    || e2e_fail "the guest never counted"
  e2e_wait_counter "$E2E_GUEST_LOG" 5 60 || e2e_fail "the guest stopped counting"
}

e2e_log_mark() { # the number of the next line the guest's console log gets
  echo $(($(wc -l < "$E2E_GUEST_LOG") + 1))
}

# e2e_guest_blocks: the 64 KiB blocks of the test guest's working set
# (e2e.ws_mb in its config, 4 MiB when it has none)
e2e_guest_blocks() {
  _ws=$(sed -n 's/.*e2e\.ws_mb=\([0-9]*\).*/\1/p' "$E2E_GUEST_CFG" | head -1)
  echo $((${_ws:-4} * 16))
}

# e2e_guest_verified NAME LOG FROM_LINE [TIMEOUT_S]: after a resume the
# guest checks its whole working set once and prints GUEST-VERIFY-ALL
# (lab/guest/init): waits for that line in LOG from line FROM_LINE on
# (60 s), fails unless it says ok for every block. Reports NAME_verify_all.
e2e_guest_verified() {
  _i=0
  until _v=$(tail -n +"$3" "$2" 2>/dev/null | grep -o 'GUEST-VERIFY-ALL .*' | head -1) && [ -n "$_v" ]; do
    _i=$((_i + 1))
    if [ $_i -ge "${4:-60}" ]; then
      tail -5 "$2"
      e2e_fail "the guest did not verify its working set after $1 (no GUEST-VERIFY-ALL in $((${4:-60})) s)"
    fi
    sleep 1
  done
  _v=$(echo "$_v" | tr -d '\r')
  e2e_report "$1_verify_all" "$_v"
  _want=$(e2e_guest_blocks)
  case "$_v" in
    "GUEST-VERIFY-ALL ok blocks=$_want "*) ;;
    "GUEST-VERIFY-ALL ok "*) e2e_fail "after $1 the guest verified other than its $_want blocks: $_v" ;;
    *) e2e_fail "after $1 the guest found its working set changed: $_v" ;;
  esac
}

# e2e_guest_goes_on NAME BEFORE LOG FROM_LINE: after an interruption (a
# restore, a migration) the guest's counter, last seen at BEFORE, must go on
# at BEFORE+1 in console log LOG from line FROM_LINE on, rise by one a tick,
# without a reboot, with a working set that still changes and that the guest
# found intact, every block of it (e2e_guest_verified). Reports NAME's
# first counter and the guest's verdict.
e2e_guest_goes_on() {
  e2e_step "$1-counting" e2e_wait_counter "$3" $(($2 + 3)) 60 "$4" \
    || e2e_fail "the guest did not go on counting after $1"
  _first=$(e2e_counters "$3" "$4" | head -1)
  e2e_report "first_counter_after_$1" "$_first"
  tail -n +"$4" "$3" | grep -q GUEST-BOOTED && e2e_fail "the guest rebooted during $1"
  [ "$_first" = $(($2 + 1)) ] \
    || e2e_fail "after $1 the counter went on at $_first, not $(($2 + 1))"
  _prev=$2
  for _c in $(e2e_counters "$3" "$4"); do
    [ "$_c" = $((_prev + 1)) ] || e2e_fail "after $1 the counter jumped from $_prev to $_c"
    _prev=$_c
  done
  grep -q GUEST-CORRUPT "$E2E_CONSOLE_DIR"/guest-* && e2e_fail "the guest found its working set changed"
  grep -h 'GUEST counter=' "$E2E_CONSOLE_DIR"/guest-* | grep -vq 'sum=[0-9a-f]\{16\}' \
    && e2e_fail "a counter line has no checksum"
  _sums=$(tail -n +"$4" "$3" | grep -o 'sum=[0-9a-f]*' | sort -u | wc -l)
  [ "$_sums" -ge 2 ] || e2e_fail "the working set did not change after $1"
  e2e_guest_verified "$1" "$3" "$4"
  return 0
}

# relocd's daemon with the Xen backend, for the scenarios that drive relocd.
E2E_RELOCD_SOCK=/tmp/r.sock
E2E_RELOCD_LOG=/tmp/relocd-serve.log

e2e_relocd_serve() { # starts `relocd serve --backend xen` in the background,
  # its PID in E2E_RELOCD_PID, and waits up to 10 s for its socket; the log
  # is appended to (a restarted daemon keeps the first one's lines)
  rm -f "$E2E_RELOCD_SOCK"
  mkdir -p /tmp/rs
  relocd serve --backend xen --control "$E2E_RELOCD_SOCK" --state-dir /tmp/rs \
    >> "$E2E_RELOCD_LOG" 2>&1 &
  E2E_RELOCD_PID=$!
  _i=0
  until [ -S "$E2E_RELOCD_SOCK" ]; do
    _i=$((_i + 1))
    if [ $_i -ge 100 ] || ! kill -0 "$E2E_RELOCD_PID" 2>/dev/null; then
      cat "$E2E_RELOCD_LOG"
      e2e_fail "relocd serve --backend xen did not come up"
    fi
    sleep 0.1
  done
}

e2e_relocd_stop() {
  kill "$E2E_RELOCD_PID" 2>/dev/null
  wait "$E2E_RELOCD_PID" 2>/dev/null
  return 0
}

e2e_relocd() { relocd --control "$E2E_RELOCD_SOCK" "$@"; }

e2e_json_num() { # e2e_json_num FILE KEY -> the number after "KEY": in FILE
  tr ',{}' '\n\n\n' < "$1" | sed -n "s/^ *\"$2\" *: *\([-0-9.eE+]*\) *$/\1/p" | head -1
}

e2e_guest_state() { # the test guest's state letters in xl list (r-----, --p---, ...)
  xl list | awk -v n="$E2E_GUEST" '$1 == n { print $5 }'
}

e2e_guest_counts_on() { # e2e_guest_counts_on WHAT: the guest is listed, not
  # paused, and its counter rises by 3 within 30 s
  _st=$(e2e_guest_state)
  [ -n "$_st" ] || e2e_fail "the guest is gone after $1"
  case "$_st" in *p*|*s*|*c*|*d*) e2e_fail "the guest is in state $_st after $1" ;; esac
  _c=$(e2e_last_counter "$E2E_GUEST_LOG")
  e2e_step "$1-counts-on" e2e_wait_counter "$E2E_GUEST_LOG" $((_c + 3)) 30 \
    || e2e_fail "the guest stopped counting after $1"
}

# Save files live in dom0's RAM (the initramfs root, at most half of dom0's
# 768 MiB): the save scenarios clear the folder when they start and end,
# failed or not, so that one's leftovers cannot fill it for the next.
E2E_SAVE_DIR=/var/lib/xen/save
e2e_saves_clear() { rm -f "$E2E_SAVE_DIR"/*; }

e2e_save_scenario_end() { # the EXIT trap of the save scenarios
  e2e_relocd_stop
  [ -s "$E2E_RELOCD_LOG" ] && e2e_collect "$E2E_RELOCD_LOG" relocd-serve.log
  e2e_saves_clear
}

# A heartbeat in dom0: a background loop notes the uptime every 0.2 s; the
# longest gap between two notes shows how long dom0's user space got no CPU
# (e.g. while a save runs).
e2e_heartbeat_start() {
  rm -f /tmp/heartbeat
  ( while :; do e2e_now >> /tmp/heartbeat; sleep 0.2; done ) &
  E2E_HEARTBEAT_PID=$!
}

e2e_heartbeat_stop() { # e2e_heartbeat_stop NAME -> reports NAME_dom0_max_gap_s
  kill "$E2E_HEARTBEAT_PID" 2>/dev/null
  wait "$E2E_HEARTBEAT_PID" 2>/dev/null
  e2e_report "$1_dom0_max_gap_s" "$(awk 'NR > 1 && $1 - p > m { m = $1 - p } { p = $1 }
                                       END { printf "%.1f", m }' /tmp/heartbeat)"
}
