/*
id = "perf.deploy_regression"
title = "A route got slower with a new version"
description = "After a deploy (service.version changes), a route of the service answers at least twice as slowly as the previous version did in the same window: the release brought a regression."
severity = "medium"
window = "10m"
slide = "30s"
# twenty slides per window and a percentile: aggregate each row once, in its
# slide (docs/rules.md, "panes"); 2x cheaper on the hour capture
panes = true
entity = ["service.name", "http.route"]
value = "slowdown"
for = 1
suppress = "1h"
summary = "{http.route} on {service.name} {new_version}: median {new_p50_ms} ms, {value}x the {old_p50_ms} ms of {old_version}"
runbook = """
1. Open a sample trace of the new version: which of its spans (a query, a call, its own time) takes the extra time? Compare with a trace of the old version.
2. Look at what the release changed on that path: a migration (a dropped index), a query, a dependency, a configuration (pool sizes, timeouts).
3. Roll back if the route matters and the cause is not obvious; the alert resolves once the new version's median is back within twice the old one's.
"""
false_positives = """
A new process starts cold (connections, caches): its first requests are slower, which the median over twenty requests or more absorbs.
Traffic that changes at the moment of the deploy (a different mix of products, a sale) can change a route's median without any regression: compare the traces.
A version that lives alone in the window (no previous version to compare with) is never judged.
"""
maturity = "test"
*/
-- Per window, each version of each service's routes: its median duration over
-- its SERVER spans (twenty or more). A version whose first request came after
-- another's first is the newer one; a route whose median doubled, by 50 ms or
-- more, from the older version to the newer is a regression of that deploy.
WITH per_version AS (
    SELECT window_start, window_end, service_name, http_route, service_version,
           approx_percentile_cont(duration_ms, 0.5) AS p50_ms,
           min(time) AS first_at,
           trace_sample(trace_id) AS trace_ids
    FROM spans
    WHERE kind = 'SERVER' AND service_version IS NOT NULL AND http_route IS NOT NULL
      AND http_route NOT LIKE '/admin/%' AND http_route <> '/healthz'
    GROUP BY window_start, window_end, service_name, http_route, service_version
    HAVING count(*) >= 20
)
SELECT n.window_start, n.window_end, n.service_name, n.http_route,
       round(n.p50_ms / o.p50_ms, 1) AS slowdown,
       n.service_version AS new_version, o.service_version AS old_version,
       round(n.p50_ms, 1) AS new_p50_ms, round(o.p50_ms, 1) AS old_p50_ms,
       n.first_at AS first_seen,
       n.trace_ids
FROM per_version n
JOIN per_version o
  ON n.window_start = o.window_start AND n.service_name = o.service_name
 AND n.http_route = o.http_route AND n.service_version <> o.service_version
 AND n.first_at > o.first_at
WHERE n.p50_ms >= 2 * o.p50_ms AND n.p50_ms - o.p50_ms >= 50
