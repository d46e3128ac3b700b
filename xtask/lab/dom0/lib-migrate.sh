# Helpers of the relocd restore and migration scenarios (busybox sh),
# sourced after /e2e/lib.sh:
#   e2e_mig_start TRAP [ARGS] a two-host scenario's start: this host clean,
#                            TRAP the EXIT trap, e2e_mig_config,
#                            e2e_mig_serve ARGS, e2e_mig_wait_link
#   e2e_mig_serve [ARGS]     relocd serve --backend xen with this host's
#                            xend-config.sxp (e2e_mig_config) and ARGS
#   e2e_mig_config ALLOW     writes that config: relocation server on port
#                            8002, hosts-allow ALLOW (regexes)
#   e2e_mig_wait_link        the link is up; the peer's messages are taken
#   e2e_mig_tell / _hear     messages between the two dom0s (port 8005),
#                            numbered and acknowledged: none lost or repeated
#   e2e_mig_sync NAME        both hosts wait for each other
#   e2e_mig_lists_agree L    relocd list --json shows what xl list shows
#   e2e_mig_timeline_*       the guest's console lines, timed on one clock
#   e2e_mig_end              the EXIT trap: stops what was started, collects
#                            the daemon's log and Xen's message tail
#   e2e_mig_kill_in_stop_copy / e2e_mig_kill_daemon
#                            B's daemon killed -9 in the stop-and-copy of a
#                            live move A -> B (A's part / B's), the phase
#                            asserted; the guest goes on at A
E2E_MIG_SOCK=/tmp/rm.sock
E2E_MIG_LOG=/tmp/relocd-serve.log
E2E_MIG_CONFIG=/tmp/xend-config.sxp
E2E_MIG_STATE=/tmp/rm-state
E2E_MIG_MSG_PORT=8005
E2E_MIG_TL_PORT=8004
E2E_MIG_PIDS=
E2E_MIG_ROLE=$(e2e_arg e2e.role)
E2E_MIG_PEER=$(e2e_arg e2e.peer)
E2E_MIG_ALLOW=   # e2e_mig_start's hosts-allow, if set; else the peer's address

e2e_mig_config() { # e2e_mig_config ALLOW
  cat > "$E2E_MIG_CONFIG" <<EOF
(xend-relocation-server yes)
(xend-relocation-port 8002)
(xend-relocation-address '')
(xend-relocation-hosts-allow '$1')
EOF
}

# e2e_mig_start TRAP [ARGS...]: the start of a scenario on two hosts. Fails
# without a peer; removes the save files, the daemon's log and state, the
# test guest and the guests' console logs; sets TRAP (e2e_mig_end or a
# function that ends with it) as the EXIT trap; writes this host's config,
# which admits the peer by its link address (E2E_MIG_ALLOW instead, if
# set); starts the daemon (e2e_mig_serve ARGS) and waits for the link.
e2e_mig_start() {
  [ -n "$E2E_MIG_PEER" ] || e2e_fail "no e2e.peer on the kernel command line (run with two hosts)"
  rm -f /var/lib/xen/save/* "$E2E_MIG_LOG"
  rm -rf "$E2E_MIG_STATE"
  trap "$1" EXIT
  shift
  xl destroy $E2E_GUEST >/dev/null 2>&1
  rm -f "$E2E_CONSOLE_DIR"/guest-*
  _allow=$E2E_MIG_ALLOW
  case "$E2E_MIG_ROLE" in
  A) [ -n "$_allow" ] || _allow='^169\\.254\\.0\\.2$' ;;
  B) [ -n "$_allow" ] || _allow='^169\\.254\\.0\\.1$' ;;
  *) e2e_fail "unknown role '$E2E_MIG_ROLE'" ;;
  esac
  e2e_mig_config "$_allow"
  e2e_mig_serve "$@"
  e2e_mig_wait_link
}

e2e_mig_serve() { # e2e_mig_serve [ARGS...]: the daemon, its PID in E2E_MIG_PID
  rm -f "$E2E_MIG_SOCK"
  mkdir -p "$E2E_MIG_STATE"
  _cfg=
  [ -f "$E2E_MIG_CONFIG" ] && _cfg="--config $E2E_MIG_CONFIG"
  echo "=== relocd serve $_cfg $* (uptime $(e2e_now))" >> "$E2E_MIG_LOG"
  # shellcheck disable=SC2086
  relocd serve --backend xen $_cfg --control "$E2E_MIG_SOCK" \
    --state-dir "$E2E_MIG_STATE" "$@" >> "$E2E_MIG_LOG" 2>&1 &
  E2E_MIG_PID=$!
  _i=0
  until [ -S "$E2E_MIG_SOCK" ]; do
    _i=$((_i + 1))
    if [ $_i -ge 150 ] || ! kill -0 "$E2E_MIG_PID" 2>/dev/null; then
      tail -20 "$E2E_MIG_LOG"
      e2e_fail "relocd serve --backend xen did not come up"
    fi
    sleep 0.1
  done
}

e2e_mig_stop() { # stops the daemon (TERM), if it runs
  [ -n "$E2E_MIG_PID" ] || return 0
  kill -CONT "$E2E_MIG_PID" 2>/dev/null   # (a scenario may have frozen it)
  kill "$E2E_MIG_PID" 2>/dev/null
  wait "$E2E_MIG_PID" 2>/dev/null
  E2E_MIG_PID=
  return 0
}

e2e_mig_relocd() { relocd --control "$E2E_MIG_SOCK" "$@"; }

e2e_mig_bg() { E2E_MIG_PIDS="$E2E_MIG_PIDS $1"; } # a background PID to end at exit

e2e_mig_end() { # the EXIT trap
  _rc=$?
  # a host that fails tells its peer, which may be waiting for a message
  [ "$_rc" != 0 ] && [ -n "$E2E_MIG_PEER" ] && e2e_mig_tell "abort" 4
  for _p in $E2E_MIG_PIDS; do kill "$_p" 2>/dev/null; done
  e2e_mig_stop
  [ -s "$E2E_MIG_LOG" ] && e2e_collect "$E2E_MIG_LOG" relocd-serve.log
  xl dmesg 2>&1 | tail -40 > /tmp/xl-dmesg-tail.txt
  e2e_collect /tmp/xl-dmesg-tail.txt xl-dmesg-tail.txt
  for _f in "$E2E_CONSOLE_DIR"/guest-*.log; do
    [ -f "$_f" ] && e2e_collect "$_f" "console-${_f##*/}"
  done
  [ -f /tmp/timeline-local ] && e2e_collect /tmp/timeline-local timeline-local.txt
  [ -f /tmp/timeline-peer ] && e2e_collect /tmp/timeline-peer timeline-peer.txt
  rm -f /var/lib/xen/save/*
  return 0
}

# --- messages between the dom0s, numbered and acknowledged.
# A message is one line on its own TCP connection to the peer's port 8005:
#   m SCENARIO SEQ TEXT
# where SEQ counts this host's messages in this scenario from 1. The
# peer's server (busybox `nc -ll -e`, a process a connection) appends a
# well-formed line of its own scenario to its inbox and only then answers
#   ack SCENARIO SEQ
# on the same connection. The teller sends the same line again until that
# answer comes (after a refused connection, an empty or other answer, a
# timeout), so no message is lost; a message the peer had stored before
# its answer was lost is stored twice, and the reader takes each SEQ once,
# in order, so none is repeated or taken out of turn. A line that is not
# a message (empty, cut short, another scenario's) is neither stored nor
# acknowledged, so nothing is invented.
E2E_MIG_INBOX=/tmp/e2e-msg-inbox
E2E_MIG_SENT=/tmp/e2e-msg-sent   # the last SEQ this host used
E2E_MIG_READ=/tmp/e2e-msg-read   # the last SEQ of the peer's this host took
E2E_MIG_SERVER=/tmp/e2e-msg-server.sh
E2E_MIG_MSG_PID=
E2E_MIG_CR=$(printf '\r')

e2e_mig_msg_listen() { # starts this host's message server (once a scenario)
  : > "$E2E_MIG_INBOX"
  echo 0 > "$E2E_MIG_SENT"
  echo 0 > "$E2E_MIG_READ"
  cat > "$E2E_MIG_SERVER" <<'EOS'
# one connection to the message server: stdin and stdout are the socket
IFS= read -r -t 10 line || exit 0
case "$line" in "m $E2E_SCENARIO "[0-9]*" "?*) ;; *) exit 0 ;; esac
rest=${line#"m $E2E_SCENARIO "}
case "${rest%% *}" in *[!0-9]*) exit 0 ;; esac
echo "$rest" >> /tmp/e2e-msg-inbox || exit 0
echo "ack $E2E_SCENARIO ${rest%% *}"
EOS
  export E2E_SCENARIO
  _i=0
  while :; do
    nc -ll -p $E2E_MIG_MSG_PORT -e sh "$E2E_MIG_SERVER" < /dev/null > /dev/null 2>&1 &
    E2E_MIG_MSG_PID=$!
    sleep 0.3
    kill -0 "$E2E_MIG_MSG_PID" 2>/dev/null && break
    # the port is still held (by the scenario before): again
    _i=$((_i + 1))
    [ $_i -ge 30 ] && e2e_fail "cannot listen for messages on port $E2E_MIG_MSG_PORT"
  done
  e2e_mig_bg "$E2E_MIG_MSG_PID"
}

e2e_mig_tell() { # e2e_mig_tell MSG [TRIES]: sends until the peer acknowledges
  [ -n "$1" ] || { echo "E2E-INFO e2e_mig_tell: an empty message"; return 1; }
  read -r _seq < "$E2E_MIG_SENT" || _seq=0
  _seq=$((_seq + 1))
  echo "$_seq" > "$E2E_MIG_SENT"   # used up even if it never arrives
  _n=0
  while :; do
    _ack=$(echo "m $E2E_SCENARIO $_seq $1" | timeout 10 nc -w 3 "$E2E_MIG_PEER" $E2E_MIG_MSG_PORT 2>/dev/null)
    [ "${_ack%"$E2E_MIG_CR"}" = "ack $E2E_SCENARIO $_seq" ] && return 0
    _n=$((_n + 1))
    [ $_n -ge "${2:-120}" ] && { echo "E2E-INFO the peer did not take message $_seq '$1' ($_n tries)"; return 1; }
    sleep 0.5
  done
}

e2e_mig_hear() { # e2e_mig_hear TIMEOUT_S -> the peer's next message, in order
  # (nothing and status 1 when none came in time); a peer that failed
  # says "abort", which is returned whatever its number
  read -r _want < "$E2E_MIG_READ" || _want=0
  _want=$((_want + 1))
  read -r _up _x < /proc/uptime
  _end=$((${_up%.*} + $1))
  while :; do
    _got=
    _abort=
    while IFS= read -r _l; do
      case "$_l" in
        "$_want "*) [ -n "$_got" ] || _got=${_l#"$_want "} ;;
        *" abort") _abort=1 ;;
      esac
    done < "$E2E_MIG_INBOX"
    if [ -n "$_got" ]; then
      echo "$_want" > "$E2E_MIG_READ"
      echo "$_got"
      return 0
    fi
    [ -n "$_abort" ] && { echo abort; return 0; }
    read -r _up _x < /proc/uptime
    [ "${_up%.*}" -ge "$_end" ] && return 1
    usleep 50000
  done
}

e2e_mig_sync() { # e2e_mig_sync NAME: both hosts have got here
  e2e_mig_tell "sync $1" || e2e_fail "sync $1: the peer does not take messages"
  _m=$(e2e_mig_hear 200)
  [ "$_m" = "sync $1" ] || e2e_fail "sync $1: the peer said '$_m'"
}

e2e_mig_wait_link() { # the peer answers pings; this host takes its messages
  _i=0
  until ping -c 1 -W 1 "$E2E_MIG_PEER" >/dev/null 2>&1; do
    _i=$((_i + 1)); [ $_i -ge 60 ] && e2e_fail "cannot reach $E2E_MIG_PEER"; sleep 1
  done
  [ -n "$E2E_MIG_MSG_PID" ] || e2e_mig_msg_listen
}

# --- relocd list against xl list
e2e_mig_lists_agree() { # e2e_mig_lists_agree LABEL
  e2e_mig_relocd list --json > /tmp/relocd-list.json || e2e_fail "relocd list failed ($1)"
  xl list > /tmp/xl-list.txt || e2e_fail "xl list failed ($1)"
  # one line a domain: id name mem_mib vcpus state
  tr '{' '\n' < /tmp/relocd-list.json | grep '"id"' | tr -d '"}] ' | awk -F, '
    { id = ""; name = ""; mem = ""; vcpus = ""; state = ""
      for (k = 1; k <= NF; k++) {
        c = index($k, ":"); key = substr($k, 1, c - 1); v = substr($k, c + 1)
        if (key == "id") id = v
        else if (key == "name") name = v
        else if (key == "memory_bytes") mem = int(v / 1048576)
        else if (key == "vcpus") vcpus = v
        else if (key == "state") state = v
      }
      print id, name, mem, vcpus, state }' | sort -n > /tmp/relocd-list.txt
  awk 'NR > 1 { s = "running"
                if ($5 ~ /p/) s = "paused"
                if ($5 ~ /s/) s = "shutdown"
                if ($5 ~ /c/) s = "crashed"
                if ($5 ~ /d/) s = "dying"
                print $2, $1, $3, $4, s }' /tmp/xl-list.txt | sort -n > /tmp/xl-list-cols.txt
  if ! cmp -s /tmp/relocd-list.txt /tmp/xl-list-cols.txt; then
    echo "xl list:"; cat /tmp/xl-list.txt
    echo "relocd list:"; cat /tmp/relocd-list.json
    diff /tmp/xl-list-cols.txt /tmp/relocd-list.txt
    e2e_fail "relocd list differs from xl list ($1)"
  fi
  echo "E2E-INFO lists agree ($1): $(tr '\n' ';' < /tmp/relocd-list.txt)"
}

e2e_mig_guests() { # the domains other than Domain-0 in xl list, one a line
  xl list | awk 'NR > 1 && $2 != 0 { print $1, $2, $5 }'
}

e2e_mig_no_guest() { # e2e_mig_no_guest WHAT TIMEOUT_S: xl list has only Domain-0
  _i=0
  while [ -n "$(e2e_mig_guests)" ]; do
    _i=$((_i + 1))
    if [ $_i -ge "$2" ]; then
      xl list
      e2e_fail "a domain is left over after $1: $(e2e_mig_guests | tr '\n' ';')"
    fi
    sleep 1
  done
  echo "E2E-INFO no guest domain after $1 (${_i} s)"
}

e2e_mig_guest_state() { xl list | awk -v n="$E2E_GUEST" '$1 == n { print $5 }'; }

e2e_mig_counts_on() { # e2e_mig_counts_on WHAT: listed, running, counter +3 in 30 s
  _st=$(e2e_mig_guest_state)
  [ -n "$_st" ] || e2e_fail "the guest is gone after $1"
  case "$_st" in *p*|*s*|*c*|*d*) e2e_fail "the guest is in state $_st after $1" ;; esac
  grep -q GUEST-CORRUPT "$E2E_GUEST_LOG" && e2e_fail "the guest found its working set changed"
  _c=$(e2e_last_counter "$E2E_GUEST_LOG")
  e2e_step "$1-counts-on" e2e_wait_counter "$E2E_GUEST_LOG" $((_c + 3)) 30 \
    || e2e_fail "the guest stopped counting after $1"
}

e2e_mig_guest96() { # the test guest with 96 MiB (the least the kernel boots in)
  sed -e 's/^memory .*/memory   = 96/' -e 's/^maxmem .*/maxmem   = 96/' \
    "$E2E_GUEST_CFG" > /tmp/guest-96.cfg
  E2E_GUEST_CFG=/tmp/guest-96.cfg
}

# --- the guest's console lines on one clock.
# Each host follows the newest guest console log (reading on at its end
# every 0.1 s, no fork a line) and writes each GUEST counter line
#   UPTIME LINE
# to /tmp/timeline-local, and sends it to the peer, which writes it with
# ITS uptime at arrival to /tmp/timeline-peer. For a migration X -> Y, X's
# two files hold the guest's last line at X and its first at Y on X's
# clock; the relay from Y is idle then (the migration stream has ended), so
# its delay is a network round trip at most. Each counter line is also
# printed as "E2E-INFO guest-line ROLE ..." on the serial console, where
# the harness stamps it with the host's clock (console.log), a check.
e2e_mig_follow() { # e2e_mig_follow: runs until killed; stdout: the relay
  _cur=
  _part=
  _seen=" "
  # a log there already: followed from its end (its old lines are not timed)
  for _f in "$E2E_CONSOLE_DIR"/guest-*.log; do
    [ -f "$_f" ] || continue
    _seen="$_seen$_f "
    exec 3< "$_f"
    _cur=$_f
    while IFS= read -r _l <&3; do :; done
    _part=$_l
  done
  while :; do
    if [ -n "$_cur" ] && IFS= read -r _l <&3; then
      _l=$_part$_l
      _part=
      case "$_l" in
        *"GUEST counter="*" sum="*)
          read -r _up _x < /proc/uptime
          echo "$_up $_l" >> /tmp/timeline-local
          echo "$_l"
          echo "E2E-INFO guest-line $E2E_MIG_ROLE ${_l#*GUEST }" >&5
          ;;
      esac
      continue
    fi
    _part=$_part$_l
    # at the end of the log followed: a log that appeared since is followed
    for _f in "$E2E_CONSOLE_DIR"/guest-*.log; do
      [ -f "$_f" ] || continue
      case "$_seen" in
        *" $_f "*) ;;
        *) _seen="$_seen$_f "; exec 3< "$_f"; _cur=$_f; _part= ;;
      esac
    done
    usleep 100000
  done
}

e2e_mig_timeline_listen() { # receives the peer's relay (start before sync)
  rm -f /tmp/timeline-local /tmp/timeline-peer /tmp/tl.fifo
  : > /tmp/timeline-local
  : > /tmp/timeline-peer
  rm -f /tmp/tl-hold.fifo
  mkfifo /tmp/tl.fifo /tmp/tl-hold.fifo
  # busybox nc ends the connection when its stdin ends: give it one that
  # does not (a FIFO this shell holds open)
  exec 6<> /tmp/tl-hold.fifo
  nc -l -p $E2E_MIG_TL_PORT < /tmp/tl-hold.fifo > /tmp/tl.fifo 2>/dev/null &
  e2e_mig_bg $!
  ( while IFS= read -r _l; do
      read -r _up _x < /proc/uptime
      echo "$_up $_l" >> /tmp/timeline-peer
    done < /tmp/tl.fifo ) &
  e2e_mig_bg $!
}

e2e_mig_timeline_relay() { # follows the local console, relays it (after sync)
  exec 5>&1
  rm -f /tmp/relay.fifo
  mkfifo /tmp/relay.fifo
  nc "$E2E_MIG_PEER" $E2E_MIG_TL_PORT < /tmp/relay.fifo > /dev/null 2>&1 &
  e2e_mig_bg $!
  e2e_mig_follow > /tmp/relay.fifo &
  e2e_mig_bg $!
}

# e2e_mig_gap NAME BEFORE: on the source host of a migration, the seconds
# between the guest's line BEFORE here and its line BEFORE+1 at the peer
# (waits up to 60 s for it). Reports NAME_guest_gap_s, the guest's
# interval between lines here just before (the median of the last five)
# and the gap less the guest's nominal 1 s tick, an estimate of its pause.
e2e_mig_gap() {
  _i=0
  until grep -q "GUEST counter=$(($2 + 1)) " /tmp/timeline-peer; do
    _i=$((_i + 1))
    [ $_i -ge 60 ] && { echo "E2E-INFO no line $(($2 + 1)) from the peer"; tail -3 /tmp/timeline-peer; return 1; }
    sleep 1
  done
  _t0=$(grep "GUEST counter=$2 " /tmp/timeline-local | head -1 | cut -d' ' -f1)
  _t1=$(grep "GUEST counter=$(($2 + 1)) " /tmp/timeline-peer | head -1 | cut -d' ' -f1)
  [ -n "$_t0" ] || { echo "E2E-INFO no line $2 here"; return 1; }
  # the guest's usual interval just before: the median of the last five
  _tick=$(sed -n "1,/GUEST counter=$2 /p" /tmp/timeline-local | tail -6 | cut -d' ' -f1 \
    | awk 'NR > 1 { print $1 - p } { p = $1 }' \
    | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print 1 }')
  _gap=$(awk -v a="$_t0" -v b="$_t1" 'BEGIN { printf "%.2f", b - a }')
  e2e_report "$1_guest_gap_s" "$_gap"
  e2e_report "$1_guest_tick_median_s" "$(awk -v t="$_tick" 'BEGIN { printf "%.2f", t }')"
  e2e_report "$1_guest_pause_est_s" "$(awk -v g="$_gap" 'BEGIN { printf "%.2f", g - 1 }')"
  _rtt=$(ping -c 3 "$E2E_MIG_PEER" 2>/dev/null | sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p')
  e2e_report "$1_link_rtt_ms" "${_rtt:-?}"
}

e2e_mig_num() { # e2e_mig_num FILE KEY -> the number after "KEY": in FILE
  tr ',{}' '\n\n\n' < "$1" | sed -n "s/^ *\"$2\" *: *\([-0-9.eE+]*\) *$/\1/p" | head -1
}

e2e_mig_report_json() { # e2e_mig_report_json NAME FILE: relocd migrate --json's figures
  for _k in rounds pages_sent bytes_sent downtime_ms total_ms bandwidth_mib_s; do
    e2e_report "$1_$_k" "$(e2e_mig_num "$2" $_k)"
  done
}

# A failure the scenario goes on after (to learn more in one run): printed
# as E2E-FAIL (the harness counts it), the scenario exits 1 at its end.
E2E_MIG_FAILED=0
e2e_mig_soft_fail() {
  echo "E2E-FAIL $*"
  E2E_MIG_FAILED=1
}

# e2e_mig_session_open: a TCP connection to or from relocd's relocation
# port (8002) is established here (read from /proc/net/tcp and tcp6,
# without a fork, so that it can come right before a kill)
e2e_mig_session_open() {
  for _f in /proc/net/tcp /proc/net/tcp6; do
    [ -r "$_f" ] || continue
    while read -r _x _loc _rem _st _rest; do
      [ "$_st" = 01 ] || continue
      case "$_loc $_rem" in *:1F42\ *|*:1F42) return 0 ;; esac
    done < "$_f"
  done
  return 1
}

# --- B's daemon killed in the stop-and-copy (relocd-migrate-faults,
# relocd-devices-faults). A moves the test guest to B with one pre-copy
# round at 2 MiB/s (so that the stop-and-copy has megabytes to send). When
# a xenstore watch on A sees relocd ask the guest to suspend (the
# stop-and-copy begins), A freezes its own daemon (SIGSTOP: the
# stop-and-copy takes about a second, less than telling B takes on a
# loaded machine) and tells B "kill"; B kills its daemon (kill -9,
# e2e_mig_kill_daemon) and says whether the relocation connection was open
# and the half-built copy there; then A's daemon goes on (SIGCONT): the
# migration fails, A resumes the guest. A kill after B's commit (the
# migration succeeds, or A is in doubt) fails as a miss, B told
# "kill-late"; else B is told "kill-done RC", restarts its daemon and says
# "clean" or what is left.

# e2e_mig_kill_in_stop_copy CASE [MARK]: A's part. MARK, if given, runs
# right before the migration starts (a scenario's own marks). Asserts the
# phase (relocd had asked the guest to suspend before B was told, the
# migration still ran then, B's daemon was killed amid the transfer, the
# migration failed before the commit) and that the guest, resumed, verifies
# its working set and counts on as the same domain. B's word after its
# restart is left in E2E_MIG_B_END (heard before A's own checks, which may
# fail; the caller checks it last). Figures kill_*.
e2e_mig_kill_in_stop_copy() {
  _kdom=$(xl domid $E2E_GUEST)
  # the suspend request is the watch's second event (the first is its
  # registration)
  xenstore-watch -n 2 /local/domain/$_kdom/control/shutdown > /tmp/watch.out 2>&1 &
  _kwatch=$!
  e2e_mig_bg $_kwatch
  sleep 1
  _kfrom=$(e2e_log_mark)
  [ -z "$2" ] || $2
  _kt0=$(e2e_now)
  relocd --control $E2E_MIG_SOCK migrate --live --max-iters 1 --bandwidth 2M/s --json $E2E_GUEST $E2E_MIG_PEER \
    > /tmp/migrate-kill.json 2>&1 &
  _kmig=$!
  while kill -0 $_kwatch 2>/dev/null && kill -0 $_kmig 2>/dev/null; do usleep 50000; done
  _ksuspend=no
  kill -0 $_kwatch 2>/dev/null || _ksuspend=yes
  # A's daemon is frozen in the stop-and-copy until B's daemon is dead, so
  # the kill cannot land after the commit
  _kfrozen=no
  if [ $_ksuspend = yes ] && kill -0 $_kmig 2>/dev/null; then
    kill -STOP "$E2E_MIG_PID" && _kfrozen=yes
  fi
  _krunning=no
  kill -0 $_kmig 2>/dev/null && _krunning=yes
  echo "E2E-INFO ($1) suspend asked: $_ksuspend at $(e2e_secs "$_kt0" "$(e2e_now)") s, A's daemon frozen: $_kfrozen; telling B to kill its daemon"
  e2e_mig_tell kill 20 || { kill -CONT "$E2E_MIG_PID"; e2e_fail "($1) cannot tell B to kill its daemon"; }
  _kb_said=$(e2e_mig_hear 60)
  kill -CONT "$E2E_MIG_PID"
  e2e_step kill-migrate-ends wait $_kmig
  _krc=$?
  cat /tmp/migrate-kill.json
  e2e_collect /tmp/migrate-kill.json migrate-kill.json
  cat /tmp/watch.out
  e2e_report kill_migrate_rc "$_krc"
  e2e_report kill_migrate_message "$(tr '\n' ' ' < /tmp/migrate-kill.json | cut -c1-300)"
  e2e_report kill_migrate_ended_after_s "$(e2e_secs "$_kt0" "$(e2e_now)")"
  e2e_report kill_state_after "$(e2e_mig_guest_state)"
  e2e_report kill_suspend_asked_before_kill "$_ksuspend"
  e2e_report kill_migration_running_when_b_told "$_krunning"
  e2e_report kill_a_daemon_frozen "$_kfrozen"
  e2e_report kill_b_said "$_kb_said"
  [ $_krc != 0 ] || { e2e_mig_tell "kill-late $_krc"; e2e_fail "($1) the migration succeeded: the kill came after B's commit"; }
  if grep -q "in doubt" /tmp/migrate-kill.json; then
    e2e_mig_tell "kill-late $_krc"
    e2e_fail "($1) the kill came after B's commit (A: in doubt, the guest stays suspended here): the test missed the stop-and-copy"
  fi
  e2e_mig_tell "kill-done $_krc" || e2e_fail "cannot tell B after the kill"
  _ki=0   # the source resumes the guest: not paused, not shut down
  while case "$(e2e_mig_guest_state)" in *p*|*s*) true ;; *) false ;; esac && [ $_ki -lt 10 ]; do
    sleep 1; _ki=$((_ki + 1))
  done
  e2e_report kill_resumed_within_s "$_ki"
  E2E_MIG_B_END=$(e2e_mig_hear 120)
  e2e_report kill_b_after_restart "$E2E_MIG_B_END"
  [ $_ksuspend = yes ] \
    || e2e_fail "($1) the migration ended (rc $_krc) before relocd asked the guest to suspend: the kill did not hit the stop-and-copy"
  [ $_krunning = yes ] \
    || e2e_fail "($1) the migration had ended (rc $_krc) when B was told to kill its daemon"
  case "$_kb_said" in
    "killed session=open copy=yes") ;;
    *) e2e_fail "($1) B's daemon was not killed amid a transfer: B said '$_kb_said'" ;;
  esac
  # its check of its working set holds up its counter (10-25 s for
  # 12 MiB under TCG): first
  e2e_guest_verified kill "$E2E_GUEST_LOG" "$_kfrom" 120
  e2e_mig_counts_on kill
  [ "$(xl domid $E2E_GUEST 2>/dev/null)" = "$_kdom" ] || e2e_fail "($1) the guest's domain id changed ($_kdom)"
}

# e2e_mig_kill_daemon CASE: B's part of a kill amid a transfer (the
# stop-and-copy above, or a scenario's pre-copy): kills its daemon (-9) at
# once, then tells A whether a relocation connection was open right before
# (read without a fork) and whether the half-built copy of the guest is
# there right after, "killed session=open|closed copy=yes|no" (also left in
# E2E_MIG_KILLED); status 1 unless open and there. Figure CASE_after_kill_domains.
e2e_mig_kill_daemon() {
  _open=closed
  e2e_mig_session_open && _open=open
  kill -9 "$E2E_MIG_PID"
  wait "$E2E_MIG_PID" 2>/dev/null
  E2E_MIG_PID=
  echo "E2E-INFO ($1) daemon killed at uptime $(e2e_now); relocation connection $_open"
  e2e_report "$1_after_kill_domains" "$(e2e_mig_guests | tr '\n' ';')"
  _copy=no
  e2e_mig_guests | grep -q "^$E2E_GUEST " && _copy=yes
  E2E_MIG_KILLED="session=$_open copy=$_copy"
  e2e_mig_tell "killed $E2E_MIG_KILLED" || e2e_fail "($1) cannot tell A about the kill"
  [ $_open = open ] && [ $_copy = yes ]
}

e2e_mig_tx() { cat /sys/class/net/eth0/statistics/tx_bytes 2>/dev/null || echo 0; }
e2e_mig_report_tx() { # e2e_mig_report_tx NAME BEFORE: bytes eth0 sent since BEFORE
  e2e_report "$1_eth0_tx_bytes" $(($(e2e_mig_tx) - $2))
}

# The live move of relocd-migrate-remote, A to B, both daemons serving:
# A moves the test guest with `relocd migrate --live FLAGS` ($1) and checks
# it is gone; B checks the counter goes on with memory intact, runs the
# scenario's own check ($2, a function name, if given), then destroys it.
# The lists agree on both hosts before and after.
e2e_mig_live_move() {
  case "$E2E_MIG_ROLE" in
  A)
    e2e_mig_guest96
    e2e_guest_start
    e2e_mig_timeline_listen
    e2e_mig_sync ready
    e2e_mig_timeline_relay
    e2e_mig_lists_agree before
    sleep 3
    domid=$(xl domid $E2E_GUEST)
    tx0=$(e2e_mig_tx)
    e2e_step relocd-migrate sh -c "relocd --control $E2E_MIG_SOCK migrate --live $1 --json $E2E_GUEST $E2E_MIG_PEER > /tmp/migrate.json 2> /tmp/migrate.err"
    rc=$?
    e2e_mig_report_tx migrate "$tx0"
    cat /tmp/migrate.json /tmp/migrate.err
    e2e_collect /tmp/migrate.json migrate.json
    if [ $rc != 0 ]; then
      e2e_mig_tell "failed" 20
      [ "$(xl domid $E2E_GUEST 2>/dev/null)" = "$domid" ] || e2e_fail "after the failed migration the guest is not domain $domid"
      e2e_mig_counts_on failed-migration
      e2e_fail "relocd migrate --live $1 to B failed (rc $rc): $(cat /tmp/migrate.json /tmp/migrate.err | tail -2 | tr '\n' ' ')"
    fi
    e2e_mig_report_json migrate /tmp/migrate.json
    sleep 1   # let xenconsoled drain the source domain's last lines
    before=$(e2e_last_counter "$E2E_GUEST_LOG")
    e2e_report counter_at_suspend "$before"
    e2e_mig_tell "$before" || e2e_fail "cannot tell B the counter"
    xl list | grep -q "^$E2E_GUEST " && e2e_fail "the guest is still on A after the migration"
    xl list | awk '$2 == "'"$domid"'"' | grep -q . && e2e_fail "domain $domid is still on A"
    e2e_mig_lists_agree after
    e2e_mig_gap migrate "$before" || e2e_fail "no guest-measured gap"
    e2e_mig_sync checked
    ;;
  B)
    e2e_mig_timeline_listen
    e2e_mig_sync ready
    e2e_mig_timeline_relay
    before=$(e2e_mig_hear 400)
    case "$before" in
      ''|*[!0-9]*)
        e2e_mig_no_guest "the failed migration" 30
        e2e_fail "A's migration failed ('$before'); B has no leftover domain"
        ;;
    esac
    xl list
    xl list | grep -q "^$E2E_GUEST " || e2e_fail "no $E2E_GUEST on B after the migration"
    log=$(ls -t "$E2E_CONSOLE_DIR"/guest-*.log 2>/dev/null | head -1)
    [ -n "$log" ] || e2e_fail "no guest console log on B"
    e2e_report target_console_log "${log##*/}"
    e2e_guest_goes_on migrate "$before" "$log" 1
    e2e_mig_lists_agree after
    [ -z "$2" ] || $2
    e2e_mig_sync checked
    e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy on B failed"
    ;;
  esac
}
