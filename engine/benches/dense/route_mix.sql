/*
id = "bench.dense.route_mix"
severity = "low"
tags = ["T1499"]
window = "15m"
slide = "1m"
entity = ["http.route"]
value = "requests"
summary = "{value}"
*/
-- A dense aggregate for the replay benchmark: every span, per route, over 15
-- minutes sliding by the minute; it never fires. See BENCHMARKS.md (panes).
SELECT window_start, window_end, http_route, count(*) AS requests,
       count(DISTINCT client_address) AS clients, array_agg(trace_id) AS trace_ids
FROM spans
GROUP BY window_start, window_end, http_route
HAVING count(*) > 100000000
