# The harness's side of the dom0 console: one command a line.
#   run NAME   runs /e2e/scenarios/NAME.sh, framed by
#              E2E-SCENARIO-BEGIN NAME / E2E-SCENARIO-END NAME rc secs
#   off        powers the (virtual) host off
# Unknown input is answered with E2E-BAD-COMMAND (the harness resends).
. /e2e/lib.sh
stty -echo 2>/dev/null
echo "E2E-LISTENING"
while :; do
  if ! read -r cmd arg; then
    sleep 1
    continue
  fi
  case "$cmd" in
    run)
      if [ -f "/e2e/scenarios/$arg.sh" ]; then
        t0=$(e2e_now)
        echo "E2E-SCENARIO-BEGIN $arg"
        E2E_SCENARIO=$arg sh "/e2e/scenarios/$arg.sh" < /dev/null 2>&1
        rc=$?
        echo "E2E-SCENARIO-END $arg $rc $(e2e_secs "$t0" "$(e2e_now)")"
      else
        echo "E2E-BAD-COMMAND no scenario named '$arg'"
      fi
      ;;
    off)
      echo "E2E-POWEROFF"
      sync
      poweroff -f
      ;;
    "") ;;
    *) echo "E2E-BAD-COMMAND '$cmd'" ;;
  esac
done
