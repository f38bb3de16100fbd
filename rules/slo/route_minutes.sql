/*
kpi = "slo.route_minutes"
title = "Per route and minute: requests, server errors and slow requests (the SLOs' rollup)"
description = """
What the SLO rules and the error-budget KPI read: per route of the edge (the
gateway's SERVER spans) and minute, the requests, those answered 5xx, and
those slower than the latency objective's 1 s. The engine keeps six hours of
minutes and thirty days of hourly sums (`keep`, `keep_hourly`), so a six-hour
burn rate reads 360 rows per route instead of six hours of spans.
Memory: at most 500 routes (`max_keys`) x (360 minutes + 720 hours) x 3 values,
about 50 bytes a bucket: 27 MB at the cap, 0.5 MB for the shop's 10 routes.
"""
window = "1m"
keep = "6h"
keep_hourly = "30d"
max_keys = 500
dimensions = ["http.route"]
values = ["requests", "errors", "slow"]
*/
-- 429 (rate limited) and other 4xx are the client's: only 5xx spend the
-- availability budget.
SELECT window_start, window_end, http_route,
       count(*) AS requests,
       count(*) FILTER (WHERE http_response_status_code >= 500) AS errors,
       count(*) FILTER (WHERE duration_ms > 1000) AS slow
FROM spans
WHERE kind = 'SERVER' AND service_name = 'shop-gateway' AND http_route IS NOT NULL
GROUP BY window_start, window_end, http_route
