/*
id = "dos.route_error_surge"
title = "Error surge on a route"
description = "A route answers a large share of its requests with server errors (5xx): an outage, or an attack that succeeds in exhausting it."
severity = "medium"
tags = ["T1499"]
window = "1m"
slide = "10s"
entity = ["http.route"]
value = "error_ratio"
for = 2
suppress = "15m"
summary = "{value} of requests to {http.route} failed with 5xx"
runbook = """
1. Open the sample traces: which downstream span carries the error?
2. Check the dependency's health (database, Redis, payments) and recent deploys.
3. If the traffic is abusive, see the flood and search-abuse alerts at the same time.
"""
false_positives = """
A deploy that restarts a service produces a short burst: `for = 2` asks for two windows in a row (20 s).
"""
maturity = "test"
*/
-- At least 20% of at least 50 requests in a minute end in 5xx, two windows in a row.
-- A healthy shop has well under 1% server errors; 50 requests keeps a quiet route's
-- single failure from counting.
SELECT window_start, window_end, http_route,
       CAST(count(*) FILTER (WHERE http_response_status_code >= 500) AS DOUBLE) / count(*) AS error_ratio,
       count(*) AS requests,
       min(end_time) FILTER (WHERE http_response_status_code >= 500) AS first_seen,
       trace_sample(trace_id) FILTER (WHERE http_response_status_code >= 500) AS trace_ids
FROM spans
WHERE kind = 'SERVER' AND service_name = 'shop-gateway' AND http_route IS NOT NULL
GROUP BY window_start, window_end, http_route
HAVING count(*) >= 50
   AND CAST(count(*) FILTER (WHERE http_response_status_code >= 500) AS DOUBLE) / count(*) >= 0.2
