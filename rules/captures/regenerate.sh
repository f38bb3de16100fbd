#!/usr/bin/env bash
# Regenerates every capture in this folder with shop-sim. Deterministic: the
# same shop-sim gives the same bytes. Run from anywhere:
#   rules/captures/regenerate.sh            # all
#   rules/captures/regenerate.sh brute_force demo   # some
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/otelguard/target}"
cargo build --quiet -p shop-sim --bin shop-sim --manifest-path "$root/Cargo.toml"
sim="$CARGO_TARGET_DIR/debug/shop-sim"

SEED=1
RATE=6          # benign requests per second in every fixture
DURATION=12m

declare -A duration=(
  # scenarios that need more event time than the default
  [password_spraying]=15m
  [nat_office]=13m
  [credential_stuffing_low_slow]=17m
)

run() { # name args...
  local name="$1"; shift
  echo "+ shop-sim $* --out rules/captures/$name.jsonl.zst" >&2
  "$sim" "$@" --out "$here/$name.jsonl.zst"
}

targets=("$@")
selected() { [ ${#targets[@]} -eq 0 ] && return 0; local t; for t in "${targets[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }

if selected baseline; then
  run baseline --seed $SEED --rate $RATE --duration $DURATION
fi
for s in $("$sim" --list-scenarios | awk 'NR>1 {print $1}'); do
  selected "$s" || continue
  run "$s" --seed $SEED --rate $RATE --duration "${duration[$s]:-$DURATION}" --scenario "$s"
done
if selected demo; then
  run demo --seed 2 --rate 5 --duration 15m \
    --scenario power_user@1m --scenario brute_force@2m --scenario nat_office@2m \
    --scenario password_typos@3m --scenario credential_stuffing@4m --scenario scraping@5m \
    --scenario http_flood@6m --scenario flash_sale@8m --scenario card_testing@9m \
    --scenario account_takeover@10m --scenario search_abuse@11m
fi
