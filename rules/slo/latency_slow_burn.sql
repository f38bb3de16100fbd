/*
id = "slo.latency.slow_burn"
title = "Latency SLO: budget of slow requests burning slowly on a route"
description = """
The latency objective of `slo.latency.fast_burn` (99% of a route's requests
within 1 s, over 30 days). Slow burn: 6x over the last six hours and over
the last 30 minutes, both.
"""
severity = "medium"
tags = ["slo"]
window = "1m"
entity = ["http.route"]
value = "burn_6h"
suppress = "6h"
summary = "{http.route} spends its latency budget {value}x as fast as '99% within 1 s' allows over six hours ({burn_30m}x over 30 minutes; {slow_6h} of {requests_6h} requests over 1 s)"
runbook = """
1. Not a page: open a ticket. Which spans grew (compare a slow trace with a fast one of the same route)?
2. Check the route's p95 and p99 in the viewer (the `http` KPI) since the last deploy.
"""
false_positives = """
A route slow by design needs its own objective. The rule asks for 360
requests in six hours.
"""
maturity = "test"
*/
-- burn = (share over 1 s) / (1 - 0.99); slow burn: >= 6 over 6 h and over 30 min.
WITH by_route AS (
  SELECT window_start, window_end, http_route,
         sum(requests) AS requests_6h,
         sum(slow) AS slow_6h,
         sum(requests) FILTER (WHERE bucket_start >= window_end - INTERVAL '30 minutes') AS requests_30m,
         sum(slow) FILTER (WHERE bucket_start >= window_end - INTERVAL '30 minutes') AS slow_30m
  FROM rollup('slo.route_minutes', '6h')
  GROUP BY window_start, window_end, http_route)
SELECT window_start, window_end, http_route,
       round(slow_6h / requests_6h / 0.01, 1) AS burn_6h,
       round(slow_30m / requests_30m / 0.01, 1) AS burn_30m,
       CAST(slow_6h AS BIGINT) AS slow_6h,
       CAST(requests_6h AS BIGINT) AS requests_6h
FROM by_route
WHERE requests_6h >= 360
  AND slow_6h / requests_6h >= 6 * 0.01
  AND slow_30m / requests_30m >= 6 * 0.01
