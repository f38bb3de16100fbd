/*
id = "perf.runtime_starvation"
title = "Async runtime starved"
description = "A service's requests start their first piece of work long after they began: something blocks the async runtime's worker threads (a blocking call, CPU work outside spawn_blocking)."
severity = "medium"
window = "1m"
slide = "10s"
entity = ["service.name"]
value = "late_starts"
for = 1
suppress = "30m"
summary = "{value} of {requests} requests on {service.name} started their first step 50 ms or more late (worst {worst_gap_ms} ms)"
runbook = """
1. Open a sample trace: the SERVER span begins, and its first child (acquiring a connection, a query, a call) starts tens of milliseconds later, with nothing in between.
2. Look in the service for blocking calls in async code: `std::thread::sleep`, synchronous I/O, a blocking client, heavy CPU work (hashing, compression, serialisation of large bodies). Move them to `tokio::task::spawn_blocking` or make them async.
3. The runtime's own metrics (`tokio.runtime.*`) show the workers busy while the request rate is ordinary.
"""
false_positives = """
A service under CPU pressure from outside (a noisy neighbour, a build on the same
host) delays first steps too: then every service shows it, not one. Ten late
starts and a fifth of the requests with children keep a few slow scheduling
hiccups from firing.
"""
maturity = "test"
*/
-- The gap between a SERVER span's start and its first child's start. The
-- shop's handlers do their first instrumented step (acquiring a connection, a
-- Redis lookup, a call) within a millisecond or two of the request starting,
-- even in a debug build; 50 ms of nothing is a worker that was not running
-- this task. Requests without children (payments) do not count.
WITH first_child AS (
    SELECT p.window_start, p.window_end, p.service_name, p.trace_id,
           (CAST(min(c.time) AS BIGINT) - CAST(min(p.time) AS BIGINT)) / 1000000.0 AS gap_ms
    FROM spans p
    JOIN spans c
      ON c.window_start = p.window_start AND c.trace_id = p.trace_id
     AND c.parent_span_id = p.span_id
    WHERE p.kind = 'SERVER'
    GROUP BY p.window_start, p.window_end, p.service_name, p.trace_id, p.span_id
)
SELECT window_start, window_end, service_name,
       count(*) FILTER (WHERE gap_ms >= 50) AS late_starts,
       count(*) AS requests,
       CAST(max(gap_ms) AS BIGINT) AS worst_gap_ms,
       trace_sample(trace_id) FILTER (WHERE gap_ms >= 50) AS trace_ids
FROM first_child
GROUP BY window_start, window_end, service_name
HAVING count(*) FILTER (WHERE gap_ms >= 50) >= 10
   AND count(*) FILTER (WHERE gap_ms >= 50) >= 0.2 * count(*)
