# Shared by the scripts that run the six shop services on this machine
# (rules/captures/record.sh, shop/flamegraphs.sh); sourced, not run.
# Expects PORT_BASE: the gateway listens on it, auth, catalog, cart,
# checkout and payments on the next five ports, the gateway's admin port on
# PORT_BASE+9 (the other services serve /admin on their own port).

# In start order: a service's callees before it.
services=(payments catalog auth cart checkout gateway)

port_of() { # service
  case "$1" in
    gateway) echo $((PORT_BASE)) ;; auth) echo $((PORT_BASE + 1)) ;;
    catalog) echo $((PORT_BASE + 2)) ;; cart) echo $((PORT_BASE + 3)) ;;
    checkout) echo $((PORT_BASE + 4)) ;; payments) echo $((PORT_BASE + 5)) ;;
  esac
}

admin_of() { # service: host:port of its /admin endpoints
  if [ "$1" = gateway ]; then echo "127.0.0.1:$((PORT_BASE + 9))"; else echo "127.0.0.1:$(port_of "$1")"; fi
}

# The background processes started, stopped by stop_all (also on exit).
pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap stop_all EXIT

wait_healthy() { # url script-name log-hint: waits up to 60 s for url/healthz
  local _
  for _ in $(seq 60); do curl -sf "$1/healthz" >/dev/null && return 0; sleep 1; done
  echo "$2: $1 did not start; see $3" >&2
  return 1
}
