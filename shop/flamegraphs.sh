#!/usr/bin/env bash
# Flamegraphs of the shop's bottlenecks, each before and after its flag, from
# the services' own profiler (`GET /admin/pprof/flamegraph`, see
# docs/profiling.md):
#
#   shop/flamegraphs.sh                          # every bottleneck, into docs/images/
#   shop/flamegraphs.sh alloc_heavy n_plus_one   # some
#
# Starts the six services (`shop serve`) on PORT_BASE (29080: gateway; auth,
# catalog, cart, checkout, payments follow; the gateway's admin on +9) with an
# admin token, and genuine shoppers (`shop-load`, RATE requests/s) for the
# whole run. For each bottleneck: a PROFILE_SECONDS-long flamegraph of the service it
# sits in with the flag off (`flamegraph-NAME-before.svg`), then the flag set
# through /admin/chaos, a few seconds to settle, the same flamegraph with it on
# (`-after.svg`), and every flag cleared.
#
# Settings (environment): RATE (4), PROFILE_SECONDS (20), FREQUENCY (99), PORT_BASE,
# OUT (docs/images), BIN (a folder of prebuilt shop and shop-load; else they
# are built into CARGO_TARGET_DIR, ~/.cache/otelguard/target). Needs
# PostgreSQL and Redis of the local stack (compose/local/stack up). The
# services export no telemetry (OTEL_SDK_DISABLED): the profiles show their
# own work, and the shared Collector sees nothing of this run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="${OUT:-$root/docs/images}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/otelguard/target}"
RATE="${RATE:-4}"
SECONDS_EACH="${PROFILE_SECONDS:-20}"
FREQUENCY="${FREQUENCY:-99}"
PORT_BASE="${PORT_BASE:-29080}"

# name: the service profiled, the flags that make the bottleneck, and the
# flags already set in "before" (the same failing dependency, without the
# bottleneck itself).
declare -A target=(
  [blocking_call]=catalog [n_plus_one]=catalog [missing_index]=catalog
  [pool_undersized]=catalog [alloc_heavy]=catalog [slow_downstream]=catalog
  [retry_storm]=gateway [memory_growth]=catalog
)
declare -A flags=(
  [blocking_call]='{"blocking_call_ms":100}'
  [n_plus_one]='{"n_plus_one":true}'
  [missing_index]='{"missing_index":true}'
  [pool_undersized]='{"db_pool_size":1,"db_slow_ms":150}'
  [alloc_heavy]='{"alloc_heavy_kb":8192}'
  [slow_downstream]='{"slow_downstream_ms":1500}'
  [retry_storm]='{"retry_storm":4}'
  [memory_growth]='{"memory_growth_kb":512}'
)
declare -A before=(
  [retry_storm]='cart {"redis_down":true}'
)
order=(blocking_call n_plus_one missing_index pool_undersized alloc_heavy slow_downstream retry_storm memory_growth)

if [ -n "${BIN:-}" ]; then
  bin="$BIN"
else
  cargo build --quiet -p shop --bin shop --bin shop-load --manifest-path "$root/Cargo.toml"
  bin="$CARGO_TARGET_DIR/debug"
fi
mkdir -p "$out"
work="$(mktemp -d "${TMPDIR:-/tmp}/otelguard-flamegraphs.XXXX")"
token="flamegraphs-$(date +%s%N)-admin-token"
auth="authorization: Bearer $token"

# services, port_of, admin_of, pids, stop_all, wait_healthy
source "$here/local-services.sh"

urls=()
for s in "${services[@]}"; do urls+=("SHOP_${s^^}_URL=http://127.0.0.1:$(port_of "$s")"); done
for s in "${services[@]}"; do
  env "${urls[@]}" "SHOP_${s^^}_ADDR=127.0.0.1:$(port_of "$s")" \
    SHOP_GATEWAY_ADMIN_ADDR="$(admin_of gateway)" SHOP_ADMIN_TOKEN="$token" \
    SHOP_DEV_KEYS=true OTEL_SDK_DISABLED=true RUST_LOG=warn \
    "$bin/shop" serve "$s" >>"$work/$s.log" 2>&1 &
  pids+=($!)
done
gateway="http://127.0.0.1:$(port_of gateway)"
wait_healthy "$gateway" flamegraphs.sh "$work/*.log" || exit 1

names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${order[@]}")
for name in "${names[@]}"; do
  [ -n "${target[$name]:-}" ] || { echo "flamegraphs.sh: no bottleneck $name; they are: ${order[*]}" >&2; exit 1; }
done
# Shoppers for the whole run (each profile plus settling time).
total=$(( ${#names[@]} * (2 * SECONDS_EACH + 15) + 30 ))
SHOP_DEV_KEYS=true "$bin/shop-load" --gateway "$gateway" --rate "$RATE" --duration "${total}s" \
  >"$work/load.log" 2>&1 &
pids+=($!)
sleep 10

chaos() { # service method [json]
  curl -sf -X "$2" -H "$auth" -H 'content-type: application/json' ${3:+-d "$3"} \
    "http://$(admin_of "$1")/admin/chaos" >/dev/null
}
flamegraph() { # service file
  curl -sf -H "$auth" -o "$2" \
    "http://$(admin_of "$1")/admin/pprof/flamegraph?seconds=$SECONDS_EACH&frequency=$FREQUENCY"
}

for name in "${names[@]}"; do
  service="${target[$name]}"
  set -- ${before[$name]:-}
  while [ $# -ge 2 ]; do chaos "$1" PUT "$2"; shift 2; done
  echo "== $name: $service, ${SECONDS_EACH} s before" >&2
  flamegraph "$service" "$out/flamegraph-$name-before.svg"
  chaos "$service" PUT "${flags[$name]}"
  sleep 5
  echo "== $name: $service, ${SECONDS_EACH} s after ${flags[$name]}" >&2
  flamegraph "$service" "$out/flamegraph-$name-after.svg"
  for s in "${services[@]}"; do chaos "$s" DELETE; done
  sleep 5
done
echo "flamegraphs.sh: written to $out (work files in $work)" >&2
