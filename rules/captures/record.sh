#!/usr/bin/env bash
# Records the real shop under load, one scenario at a time, through the local
# stack: the six services (shop serve) export OTLP to the Collector, the
# Collector writes Kafka, `engine record --kafka` records the three topics, and
# shop-load drives the gateway with genuine shoppers plus the scenario. The
# recording keeps only this run's telemetry (its own deployment.environment.name)
# and lands beside its ground truth:
#   rules/captures/recorded/NAME.jsonl.zst   NAME.truth.json
#
#   rules/captures/record.sh brute_force card_testing     # some
#   rules/captures/record.sh                              # all fourteen
#   rules/captures/record.sh perf_n_plus_one perf_healthy # bottlenecks (below)
#
# A `perf_*` name records genuine shoppers only, with a bottleneck switched on
# through the services' /admin/chaos at FLAG_AT (60 s) into the run (see
# `perf_flags` below; perf_healthy and the look-alikes switch on what they
# list, or nothing). Its truth is shop-load's plus the bottleneck as a scenario
# of class `attack` from the moment the flag was set to the end of the run,
# with the services it sits in as `service.name` (and `peer.service`) indicators.
# A deploy (`perf_deploys`) stops one service at FLAG_AT and starts it again as
# version DEPLOY_VERSION (SHOP_VERSION), with or without a bottleneck.
#
# Settings (environment): RATE (genuine requests/s, default 4), SEED (1),
# PORT_BASE (28080: gateway; auth, catalog, cart, checkout, payments follow),
# MAX_BYTES (2000000: a recording above it fails; lower RATE), KAFKA
# (127.0.0.1:19092), VIA (kafka, the default: shop -> Collector -> Kafka ->
# `engine record --kafka`; or receiver: the services export straight to a
# private `engine record` receiver on PORT_BASE+20, for when the shared
# Collector or broker may be restarted meanwhile), CARGO_TARGET_DIR (~/.cache/otelguard/target), BIN (a
# folder of prebuilt shop, shop-load and engine: no build); for a
# quick try, DURATION (overrides the table below) and OUT (another folder).
#
# The shop runs with its defaults (lockout after 5 failures, rate limits as in
# shop/README.md), head sampling 1.0 and metrics every 10 s, and hashes with
# the public development keys (SHOP_DEV_KEYS=true), as every recording here did.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${OUT:-$here/recorded}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/otelguard/target}"
RATE="${RATE:-4}"
SEED="${SEED:-1}"
PORT_BASE="${PORT_BASE:-28080}"
MAX_BYTES="${MAX_BYTES:-2000000}"
KAFKA="${KAFKA:-127.0.0.1:19092}"
VIA="${VIA:-kafka}"

# How long each recording lasts: the scenario starts at its default offset
# and lasts its length, both from the scenario catalog (`shop-load
# --list-scenarios`), plus a minute or more for the visits it started.
declare -A duration=(
  [http_flood]=5m
  [distributed_flood]=6m
  [search_abuse]=8m
  [scraping]=10m
  [brute_force]=8m
  [brute_force_distributed]=8m
  [password_spraying]=14m
  [credential_stuffing]=7m
  [account_takeover]=6m
  [card_testing]=8m
  [flash_sale]=9m
  [nat_office]=13m
  [password_typos]=9m
  [power_user]=10m
  [password_spraying_distributed]=12m
  [credential_stuffing_low_slow]=17m
  [card_testing_distributed]=11m
  [campaign_logins]=9m
  [perf_healthy]=3m
  [perf_n_plus_one]=3m
  [perf_blocking_call]=3m
  [perf_pool_undersized]=3m
  [perf_slow_queries]=3m
  [perf_retry_storm]=3m
  [perf_redis_down]=3m
  [perf_slow_downstream]=3m
  [perf_deploy_regression]=3m
  [perf_deploy_clean]=3m
  [perf_missing_index]=3m
  [perf_alloc_heavy]=3m
  [perf_memory_growth]=3m
  [perf_healthy_allocator]=3m
)
# The bottlenecks: `service json ...` pairs sent to /admin/chaos at FLAG_AT,
# and the indicators of the truth's scenario (empty: a look-alike or healthy
# traffic, recorded with the same load).
declare -A perf_flags=(
  [perf_healthy]=""
  [perf_healthy_allocator]=""
  [perf_n_plus_one]='catalog {"n_plus_one":true}'
  [perf_blocking_call]='catalog {"blocking_call_ms":100}'
  [perf_pool_undersized]='catalog {"db_pool_size":1,"db_slow_ms":150}'
  [perf_slow_queries]='catalog {"db_slow_ms":150}'
  [perf_retry_storm]='cart {"redis_down":true} gateway {"retry_storm":4}'
  [perf_redis_down]='cart {"redis_down":true}'
  [perf_slow_downstream]='catalog {"slow_downstream_ms":1500}'
  [perf_missing_index]='catalog {"missing_index":true}'
  [perf_alloc_heavy]='catalog {"alloc_heavy_kb":8192}'
  [perf_memory_growth]='catalog {"memory_growth_kb":512}'
)
# Deploys: at FLAG_AT the named service is stopped and started again as
# version DEPLOY_VERSION, then sent the flags (or none: a clean deploy).
declare -A perf_deploys=(
  [perf_deploy_regression]='catalog {"db_slow_ms":150}'
  [perf_deploy_clean]='catalog {}'
)
DEPLOY_VERSION="${DEPLOY_VERSION:-0.2.0-recorded}"
declare -A perf_indicators=(
  [perf_n_plus_one]='{"service.name":["shop-catalog"]}'
  [perf_blocking_call]='{"service.name":["shop-catalog"]}'
  [perf_pool_undersized]='{"service.name":["shop-catalog"]}'
  [perf_retry_storm]='{"service.name":["shop-gateway","shop-checkout"],"peer.service":["shop-cart"]}'
  [perf_slow_downstream]='{"service.name":["shop-catalog"]}'
  [perf_deploy_regression]='{"service.name":["shop-catalog"]}'
  [perf_missing_index]='{"service.name":["shop-catalog"]}'
  [perf_alloc_heavy]='{"service.name":["shop-catalog"]}'
  [perf_memory_growth]='{"service.name":["shop-catalog"]}'
)
FLAG_AT="${FLAG_AT:-60}"

order=(http_flood credential_stuffing brute_force account_takeover card_testing
  distributed_flood password_spraying search_abuse scraping brute_force_distributed
  flash_sale nat_office password_typos power_user)

for tool in jq zstd curl; do
  command -v "$tool" >/dev/null || { echo "record.sh: needs $tool (apt-get install $tool)" >&2; exit 1; }
done
if "$root/compose/local/stack" status | grep -qv ' up$\| up '; then
  "$root/compose/local/stack" up
fi
if [ -n "${BIN:-}" ]; then
  bin="$BIN" # prebuilt shop, shop-load and engine (a shared target folder may be rebuilt meanwhile)
else
  cargo build --quiet -p shop --bin shop --bin shop-load --manifest-path "$root/Cargo.toml"
  cargo build --quiet -p engine --features kafka --bin engine --manifest-path "$root/Cargo.toml"
  bin="$CARGO_TARGET_DIR/debug"
fi
mkdir -p "$out"

# services, port_of, admin_of, pids, stop_all, wait_healthy
source "$root/shop/local-services.sh"

record() { # name
  local name="$1" dur="${DURATION:-${duration[$1]:-4m}}"
  local env="recording-$name-$(date +%s)"
  local work
  work="$(mktemp -d "${TMPDIR:-/tmp}/otelguard-record-$name.XXXX")"
  echo "== $name: $dur, genuine $RATE req/s, environment $env, work $work" >&2

  local s u urls=()
  for s in "${services[@]}"; do
    urls+=("SHOP_${s^^}_URL=http://127.0.0.1:$(port_of "$s")")
  done
  local perf=false token=""
  [[ "$name" == perf_* ]] && perf=true
  $perf && token="record-$(date +%s%N)-chaos-token"
  local otlp="127.0.0.1:$((PORT_BASE + 20))" endpoint=() recorder
  if [ "$VIA" = receiver ]; then
    endpoint=(OTEL_EXPORTER_OTLP_ENDPOINT="http://$otlp" OTEL_EXPORTER_OTLP_PROTOCOL=grpc)
    "$bin/engine" record --otlp-grpc "$otlp" --otlp-http off "$work/raw.jsonl" 2>"$work/record.log" &
    recorder=$!
    sleep 2
  fi
  start() { # service [version]: one service of this run, in the background
    env "${urls[@]}" ${endpoint[@]+"${endpoint[@]}"} \
      "SHOP_${1^^}_ADDR=127.0.0.1:$(port_of "$1")" \
      SHOP_GATEWAY_ADMIN_ADDR="$(admin_of gateway)" SHOP_ADMIN_TOKEN="$token" \
      SHOP_ENVIRONMENT="$env" SHOP_DEV_KEYS=true ${2:+SHOP_VERSION="$2"} \
      OTEL_TRACES_SAMPLER_ARG=1.0 OTEL_METRIC_EXPORT_INTERVAL=10000 \
      OTEL_BSP_SCHEDULE_DELAY=1000 OTEL_BLRP_SCHEDULE_DELAY=1000 RUST_LOG=info \
      "$bin/shop" serve "$1" >>"$work/$1.log" 2>&1 &
  }
  declare -A pid_of=()
  for s in "${services[@]}"; do
    start "$s"
    pids+=($!)
    pid_of[$s]=$!
  done
  u="http://127.0.0.1:$(port_of gateway)"
  wait_healthy "$u" record.sh "$work/*.log" || return 1

  # A consumer group of its own: it reads the topics from their start, and
  # the filter below keeps this run's environment only.
  if [ "$VIA" = kafka ]; then
    "$bin/engine" record --kafka "$KAFKA" --group "otelguard-$env" "$work/raw.jsonl" 2>"$work/record.log" &
    recorder=$!
    sleep 3
  fi
  local scenario=(--scenario "$name") switcher=""
  if $perf; then
    scenario=()
    # The bottleneck, FLAG_AT seconds into the run; the moment is its start.
    (
      sleep "$FLAG_AT"
      date -u +%Y-%m-%dT%H:%M:%S.%3NZ >"$work/flag_at"
      if [ -n "${perf_deploys[$name]:-}" ]; then
        # A deploy: the old version drains and stops, the new one starts;
        # its pid goes to the parent through a file.
        set -- ${perf_deploys[$name]}
        kill -TERM "${pid_of[$1]}" 2>/dev/null || true
        while kill -0 "${pid_of[$1]}" 2>/dev/null; do sleep 0.2; done
        start "$1" "$DEPLOY_VERSION"
        echo $! >"$work/deployed.pid"
        for _ in $(seq 60); do
          curl -sf "http://127.0.0.1:$(port_of "$1")/healthz" >/dev/null && break
          sleep 0.5
        done
      fi
      set -- ${perf_flags[$name]:-} ${perf_deploys[$name]:-}
      while [ $# -ge 2 ]; do
        local target="$1" body="$2" admin
        shift 2
        admin="$(admin_of "$target")"
        curl -sf -X PUT -H "authorization: Bearer $token" -H 'content-type: application/json' \
          -d "$body" "http://$admin/admin/chaos" >>"$work/flags.log" ||
          echo "record.sh: setting $body on $target failed" >&2
      done
    ) &
    switcher=$!
  fi
  if ! SHOP_DEV_KEYS=true "$bin/shop-load" --gateway "$u" --rate "$RATE" --duration "$dur" --seed "$SEED" \
    "${scenario[@]}" --truth "$work/$name.truth.json" --capture "$name.jsonl.zst"; then
    stop_all
    kill -INT "$recorder"
    wait "$recorder" || true
    echo "record.sh: shop-load failed for $name" >&2
    return 1
  fi
  if [ -n "$switcher" ]; then
    wait "$switcher" || true
    [ -f "$work/deployed.pid" ] && pids+=("$(cat "$work/deployed.pid")")
    local indicators="${perf_indicators[$name]:-}"
    if [ -n "$indicators" ]; then
      # The bottleneck as the truth's attack: from the flag to the run's end.
      jq --arg name "$name" --arg start "$(cat "$work/flag_at")" --argjson ind "$indicators" \
        --arg about "${perf_flags[$name]:-}${perf_deploys[$name]:+deploy of $DEPLOY_VERSION: ${perf_deploys[$name]}}" '
        .scenarios += [{name: $name, class: "attack", start: $start, end: .end,
                        description: ("/admin/chaos: " + $about), requests: 0, indicators: $ind}]
      ' "$work/$name.truth.json" >"$work/truth.tmp" && mv "$work/truth.tmp" "$work/$name.truth.json"
    fi
  fi
  stop_all # the services flush their telemetry on SIGTERM
  sleep 15 # Collector batches, then Kafka
  kill -INT "$recorder"
  wait "$recorder" || { echo "record.sh: engine record failed; see $work/record.log" >&2; return 1; }

  jq -c --arg env "$env" '
    def mine: any(.resource.attributes[]?;
      .key == "deployment.environment.name" and .value.stringValue == $env);
    with_entries(select(.value | type == "array") | .value |= map(select(mine)))
    | select([.[] | length] | add > 0)
  ' "$work/raw.jsonl" >"$work/$name.jsonl"
  local lines
  lines=$(wc -l <"$work/$name.jsonl")
  [ "$lines" -gt 0 ] || { echo "record.sh: nothing of $env reached Kafka; see $work" >&2; return 1; }
  zstd -q -f -19 --long=27 "$work/$name.jsonl" -o "$out/$name.jsonl.zst"
  cp "$work/$name.truth.json" "$out/$name.truth.json"
  local size
  size=$(stat -c %s "$out/$name.jsonl.zst")
  echo "== $name: $lines lines, $size bytes -> rules/captures/recorded/$name.jsonl.zst" >&2
  if [ "$size" -gt "$MAX_BYTES" ]; then
    echo "record.sh: $name is $size bytes, over $MAX_BYTES; record it again with a lower RATE" >&2
    return 1
  fi
  rm -rf "$work"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${order[@]}")
failed=()
for name in "${targets[@]}"; do
  record "$name" || failed+=("$name")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "record.sh: not recorded: ${failed[*]}" >&2
  exit 1
fi
