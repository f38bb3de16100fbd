/*
id = "slo.latency.fast_burn"
title = "Latency SLO: budget of slow requests burning fast on a route"
description = """
The latency objective: 99% of a route's requests answer within 1 s, over 30
days; its budget is the other 1%. Burn rate: the share of requests slower
than 1 s over a window, divided by 1%. Fast burn: 14.4x over the last hour
and over the last 5 minutes, both.
"""
severity = "high"
tags = ["slo"]
window = "1m"
entity = ["http.route"]
value = "burn_1h"
suppress = "1h"
summary = "{http.route} spends its latency budget {value}x as fast as '99% within 1 s' allows over the last hour ({burn_5m}x over 5 minutes; {slow_1h} of {requests_1h} requests over 1 s)"
runbook = """
1. Open a slow request's trace: which span takes the time (a query, a downstream, waiting for a connection)?
2. See the perf rules' alerts at the same time (pool saturation, slow downstream, runtime starvation).
3. If one client's traffic makes the route slow (search abuse), rate-limit it.
"""
false_positives = """
A route that is slow by design (an export) needs its own objective: this one
holds every route to 1 s. The rule asks for 100 requests in the hour.
"""
maturity = "test"
*/
-- burn = (share over 1 s) / (1 - 0.99); fast burn: >= 14.4 over 1 h and over 5 min.
WITH by_route AS (
  SELECT window_start, window_end, http_route,
         sum(requests) AS requests_1h,
         sum(slow) AS slow_1h,
         sum(requests) FILTER (WHERE bucket_start >= window_end - INTERVAL '5 minutes') AS requests_5m,
         sum(slow) FILTER (WHERE bucket_start >= window_end - INTERVAL '5 minutes') AS slow_5m
  FROM rollup('slo.route_minutes', '1h')
  GROUP BY window_start, window_end, http_route)
SELECT window_start, window_end, http_route,
       round(slow_1h / requests_1h / 0.01, 1) AS burn_1h,
       round(slow_5m / requests_5m / 0.01, 1) AS burn_5m,
       CAST(slow_1h AS BIGINT) AS slow_1h,
       CAST(requests_1h AS BIGINT) AS requests_1h
FROM by_route
WHERE requests_1h >= 100
  AND slow_1h / requests_1h >= 14.4 * 0.01
  AND slow_5m / requests_5m >= 14.4 * 0.01
