/*
kpi = "http"
title = "Per route: request rate, error ratio, latency percentiles"
description = "From the edge's SERVER spans, per minute. Latency in milliseconds."
window = "1m"
dimensions = ["http.route"]
values = ["requests_per_s", "error_ratio", "p50_ms", "p95_ms", "p99_ms"]
*/
SELECT window_start, window_end, http_route,
       count(*) / 60.0 AS requests_per_s,
       CAST(count(*) FILTER (WHERE http_response_status_code >= 500) AS DOUBLE) / count(*) AS error_ratio,
       approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
       approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms,
       approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_ms
FROM spans
WHERE kind = 'SERVER' AND service_name = 'shop-gateway' AND http_route IS NOT NULL
GROUP BY window_start, window_end, http_route
