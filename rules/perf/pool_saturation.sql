/*
id = "perf.pool_saturation"
title = "Database connection pool saturated"
description = "A service's requests queue for pooled database connections, seconds a minute and a quarter of the time they spend in queries or more: the pool is too small for the load (or connections are held too long)."
severity = "medium"
window = "1m"
slide = "10s"
entity = ["service.name"]
value = "wait_share"
for = 1
suppress = "30m"
summary = "{service.name} waited {wait_s} s for pooled connections against {query_s} s in queries in a minute ({value} of the time)"
runbook = """
1. Open a sample trace: the `acquire connection` span is long, the queries after it are short.
2. Compare `db.client.connection.count` (used) with `db.client.connection.max`: a pool at its maximum while requests wait is too small, or something holds connections (a transaction kept open across a call, a leak).
3. Raise `SHOP_DB_POOL_MAX` within what PostgreSQL allows (`max_connections` over all instances), or shorten what runs while a connection is held.
"""
false_positives = """
Slow queries alone do not fire it: with enough connections they do not queue, and
the wait stays a small fraction of query time (the `perf_slow_queries` recording).
A burst at start, while the pool opens its connections, lasts well under a second:
five seconds of waiting in a minute, a quarter of the query time or more, is a pool
at its limit (a one-connection pool at half its capacity waits about half its query time).
"""
maturity = "test"
*/
-- Time waiting for a connection (the shop's INTERNAL span `acquire connection`,
-- around the pool's acquire) against time in PostgreSQL spans, per service.
-- Healthy, acquiring takes microseconds (an idle connection is handed out;
-- 0.04 s in the minute before the flag of perf_pool_undersized); seconds of
-- waiting, a quarter of the query time, mean requests queue for connections.
SELECT window_start, window_end, service_name,
       sum(duration_ms) FILTER (WHERE name = 'acquire connection')
         / (sum(duration_ms) FILTER (WHERE name = 'acquire connection')
            + coalesce(sum(duration_ms) FILTER (WHERE db_system_name = 'postgresql'), 0)) AS wait_share,
       CAST(sum(duration_ms) FILTER (WHERE name = 'acquire connection') / 1000 AS BIGINT) AS wait_s,
       CAST(coalesce(sum(duration_ms) FILTER (WHERE db_system_name = 'postgresql'), 0) / 1000 AS BIGINT) AS query_s,
       trace_sample(trace_id) FILTER (WHERE name = 'acquire connection' AND duration_ms >= 100) AS trace_ids
FROM spans
WHERE name = 'acquire connection' OR db_system_name = 'postgresql'
GROUP BY window_start, window_end, service_name
HAVING sum(duration_ms) FILTER (WHERE name = 'acquire connection') >= 5000
   AND sum(duration_ms) FILTER (WHERE name = 'acquire connection')
       >= 0.25 * coalesce(sum(duration_ms) FILTER (WHERE db_system_name = 'postgresql'), 0)
