/*
id = "perf.slow_downstream"
title = "Slow downstream service"
description = "A service that others call answers most of its requests slowly by itself (not because of what it calls in turn): its callers wait for it."
severity = "medium"
window = "1m"
slide = "10s"
entity = ["service.name"]
value = "slow_requests"
for = 1
suppress = "30m"
summary = "{value} of {requests} requests to {service.name} took over 1 s of its own time (median {p50_ms} ms)"
runbook = """
1. Open a sample trace: the caller's CLIENT span lasts as long as the downstream's SERVER span, and that span's time is its own (no slow call beneath it).
2. Check the downstream: its database and Redis spans, CPU, recent deploys. The slowness of its callers follows from it; fix it there.
3. Check that callers time out (`SHOP_UPSTREAM_TIMEOUT_MS`) and shed rather than queue: a slow dependency without a timeout holds every caller's request as long as it takes.
"""
false_positives = """
Password hashing makes registrations and logins with unknown names slow in a debug
build: they stay under half of auth's requests and under twenty a minute at the
shop's traffic. A service that is slow because what it calls is slow does not
count: its own time is its duration less its calls.
"""
maturity = "test"
*/
-- A called service's own time per request: its SERVER span's duration less
-- the CLIENT spans it made (the slowness of what it calls is that service's).
-- Gateway spans are roots and have no caller inside the shop. Twenty slow
-- requests in a minute, half of the service's requests, each over 1 s of its
-- own: the shop's downstreams answer in milliseconds.
WITH served AS (
    SELECT window_start, window_end, service_name, trace_id, span_id, duration_ms
    FROM spans
    WHERE kind = 'SERVER' AND parent_span_id IS NOT NULL
),
calls AS (
    SELECT window_start, trace_id, parent_span_id, duration_ms
    FROM spans
    WHERE kind = 'CLIENT' AND attributes['peer.service'] IS NOT NULL
),
own AS (
    SELECT s.window_start, s.window_end, s.service_name, s.trace_id,
           s.duration_ms - coalesce(sum(c.duration_ms), 0) AS own_ms
    FROM served s
    LEFT JOIN calls c
      ON c.window_start = s.window_start AND c.trace_id = s.trace_id
     AND c.parent_span_id = s.span_id
    GROUP BY s.window_start, s.window_end, s.service_name, s.trace_id, s.span_id, s.duration_ms
)
SELECT window_start, window_end, service_name,
       count(*) FILTER (WHERE own_ms >= 1000) AS slow_requests,
       count(*) AS requests,
       CAST(approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY own_ms) AS BIGINT) AS p50_ms,
       trace_sample(trace_id) FILTER (WHERE own_ms >= 1000) AS trace_ids
FROM own
GROUP BY window_start, window_end, service_name
HAVING count(*) FILTER (WHERE own_ms >= 1000) >= 20
   AND count(*) FILTER (WHERE own_ms >= 1000) >= 0.5 * count(*)
