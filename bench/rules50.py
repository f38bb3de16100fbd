#!/usr/bin/env python3
"""Writes bench/rules50/: fifty distinct detection rules for the replay benchmark.

    python3 bench/rules50.py [OUT_DIR]      # default: bench/rules50 beside this file

Not copies of the pack: each rule is its own combination of a source (table
and filter), a grouping (the entity), a measure (count, distinct count, sum,
average, maximum, a filtered count), a window and slide, and a threshold,
over the telemetry contract's columns (docs/schema.md). The output is the
same on every run, so the folder is committed and `bench/compare` checks it
is what this script writes.
"""

import sys
from pathlib import Path

# (window, slide): tumbling and hopping, from 30 s to 15 min
WINDOWS = [
    ("1m", "10s"),
    ("2m", "10s"),
    ("5m", "15s"),
    ("5m", "30s"),
    ("10m", "1m"),
    ("30s", "10s"),
    ("1m", "1m"),
    ("15m", "1m"),
    ("3m", "30s"),
    ("10m", "2m"),
]

# column -> the contract's attribute name (the rule's entity)
ENTITY = {
    "client_address": "client.address",
    "http_route": "http.route",
    "user_agent_original": "user_agent.original",
    "session_id": "session.id",
    "user_id": "user.id",
    "service_name": "service.name",
    "db_collection_name": "db.collection.name",
    "db_operation_name": "db.operation.name",
    "user_hash": "user.hash",
    "shop_auth_failure_reason": "shop.auth.failure_reason",
    "shop_product_id": "shop.product.id",
    "shop_order_currency": "shop.order.currency",
    "http_request_method": "http.request.method",
}

EDGE = "kind = 'SERVER' AND service_name = 'shop-gateway'"

# (name, table, filter, [groupings], [(measure name, SQL, threshold)])
# A grouping is a tuple of columns; each rule takes one grouping and one
# measure of its source.
SOURCES = [
    (
        "edge",
        "spans",
        EDGE + " AND client_address IS NOT NULL",
        [("client_address",), ("client_address", "http_route"), ("user_agent_original",), ("session_id",)],
        [
            ("requests", "count(*)", 1500),
            ("distinct_paths", "count(DISTINCT url_path)", 120),
            ("distinct_routes", "count(DISTINCT http_route)", 12),
            ("server_errors", "count(*) FILTER (WHERE http_response_status_code >= 500)", 40),
            ("throttled", "count(*) FILTER (WHERE http_response_status_code = 429)", 100),
            ("max_ms", "max(duration_ms)", 8000.0),
        ],
    ),
    (
        "routes",
        "spans",
        EDGE,
        [("http_route",), ("http_route", "http_request_method")],
        [
            ("clients", "count(DISTINCT client_address)", 400),
            ("avg_ms", "avg(duration_ms)", 2500.0),
            ("not_found", "count(*) FILTER (WHERE http_response_status_code = 404)", 200),
            ("sessions", "count(DISTINCT session_id)", 500),
        ],
    ),
    (
        "errors",
        "spans",
        "status_code = 'ERROR'",
        [("service_name",)],
        [
            ("error_spans", "count(*)", 300),
            ("error_traces", "count(DISTINCT trace_id)", 200),
        ],
    ),
    (
        "db",
        "spans",
        "db_system_name IS NOT NULL",
        [("service_name",), ("db_collection_name",), ("db_collection_name", "db_operation_name")],
        [
            ("queries", "count(*)", 20000),
            ("db_ms", "sum(duration_ms)", 120000),
            ("slowest_ms", "max(duration_ms)", 5000.0),
        ],
    ),
    (
        "calls",
        "spans",
        "kind = 'CLIENT'",
        [("service_name",)],
        [
            ("calls", "count(*)", 30000),
            ("avg_call_ms", "avg(duration_ms)", 1500.0),
        ],
    ),
    (
        "failed_logins",
        "events",
        "event_name = 'shop.auth.login' AND shop_auth_outcome = 'failure'",
        [("client_address",), ("user_hash",), ("user_agent_original",), ("shop_auth_failure_reason",)],
        [
            ("failures", "count(*)", 25),
            ("accounts", "count(DISTINCT user_hash)", 15),
            ("addresses", "count(DISTINCT client_address)", 30),
        ],
    ),
    (
        "declines",
        "events",
        "event_name = 'shop.payment.attempt' AND shop_payment_outcome = 'declined'",
        [("client_address",), ("session_id",)],
        [
            ("declines", "count(*)", 12),
            ("cards", "count(DISTINCT shop_payment_card_fingerprint)", 6),
            ("declined_amount", "sum(shop_payment_amount)", 5000),
        ],
    ),
    (
        "cart",
        "events",
        "event_name = 'shop.cart.item_added'",
        [("session_id",), ("shop_product_id",), ("client_address",)],
        [
            ("adds", "count(*)", 60),
            ("quantity", "sum(shop_cart_quantity)", 200),
            ("products", "count(DISTINCT shop_product_id)", 40),
        ],
    ),
    (
        "search",
        "events",
        "event_name = 'shop.search.performed'",
        [("client_address",), ("session_id",)],
        [
            ("searches", "count(*)", 80),
            ("empty_searches", "count(*) FILTER (WHERE shop_search_results = 0)", 30),
        ],
    ),
    (
        "orders",
        "events",
        "event_name = 'shop.order.placed'",
        [("user_id",), ("client_address",), ("shop_order_currency",)],
        [
            ("orders", "count(*)", 15),
            ("amount", "sum(shop_order_amount)", 20000),
        ],
    ),
    (
        "latency",
        "metrics",
        "metric_name = 'http.server.request.duration'",
        [("service_name",), ("http_route",)],
        [
            ("observations", "sum(count)", 60000),
            ("mean_s", "sum(sum) / sum(count)", 3.0),
        ],
    ),
]

SEVERITIES = ["info", "low", "medium", "high"]


def scaled(threshold, window):
    """The threshold for a window: given for 5 minutes, scaled to the window's
    length for counts and sums (never below 3); averages and maxima as given."""
    seconds = {"s": 1, "m": 60, "h": 3600}
    length = int(window[:-1]) * seconds[window[-1]]
    if isinstance(threshold, float):
        return threshold
    return max(3, round(threshold * length / 300))


def combinations():
    """Fifty (source, grouping, measure, window) choices, all different:
    round-robin over the sources, each source walking its own groupings and
    measures, the windows walking on their own."""
    picked = []
    seen = set()
    cursors = {s[0]: 0 for s in SOURCES}
    w = 0
    while len(picked) < 50:
        for source in SOURCES:
            name, _table, _filter, groupings, measures = source
            i = cursors[name]
            if i >= len(groupings) * len(measures):
                continue
            cursors[name] += 1
            grouping = groupings[i % len(groupings)]
            measure = measures[(i // len(groupings) + i) % len(measures)]
            key = (name, grouping, measure[0])
            if key in seen:
                continue
            seen.add(key)
            picked.append((source, grouping, measure, WINDOWS[w % len(WINDOWS)]))
            w += 1
            if len(picked) == 50:
                break
    return picked


def rule(n, source, grouping, measure, window):
    name, table, where, _g, _m = source
    value, sql, threshold = measure
    size, slide = window
    limit = scaled(threshold, size)
    by = ", ".join(grouping)
    entity = ", ".join(f'"{ENTITY[c]}"' for c in grouping)
    rid = f"bench.{n:02}.{name}.{value}.by_{'_'.join(grouping)}"
    sample = "" if table == "metrics" else ",\n       trace_sample(trace_id) AS trace_ids"
    first = {"spans": "min(end_time)", "events": "min(time)", "metrics": "min(time)"}[table]
    return f"""/*
id = "{rid}"
title = "{value} by {by}, {size} every {slide} (benchmark rule {n})"
description = "Generated by bench/rules50.py for the replay benchmark: {sql} over {table} where {where.replace('"', "'")}."
severity = "{SEVERITIES[n % len(SEVERITIES)]}"
window = "{size}"
slide = "{slide}"
entity = [{entity}]
value = "{value}"
for = 1
summary = "{{value}} {value} in {size}"
maturity = "experimental"
*/
SELECT window_start, window_end, {by},
       {sql} AS {value},
       {first} AS first_seen{sample}
FROM {table}
WHERE {where}
GROUP BY window_start, window_end, {by}
HAVING {sql} >= {limit}
"""


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "rules50"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.sql"):
        old.unlink()
    for n, (source, grouping, measure, window) in enumerate(combinations(), start=1):
        (out / f"r{n:02}_{source[0]}_{measure[0]}_by_{'_'.join(grouping)}.sql").write_text(rule(n, source, grouping, measure, window))
    print(f"50 rules in {out}")


if __name__ == "__main__":
    main()
