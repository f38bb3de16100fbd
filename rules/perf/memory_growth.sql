/*
id = "perf.memory_growth"
title = "Memory growing with requests"
description = "A service's resident memory climbs steadily while it serves, by tens of KiB or more per request, and is not given back: something keeps a piece of every request (a cache without a bound, a list that is only appended to, a leak)."
severity = "medium"
window = "2m"
slide = "10s"
entity = ["service.name"]
value = "kib_per_request"
for = 1
suppress = "30m"
summary = "{service.name} grew {mib_grown} MiB in {seconds} s, {value} KiB per request over {requests} requests, rising at {rises} of {steps} exports"
runbook = """
1. `process.memory.usage` of the service (resident bytes) and `rust.memory.used` (heap bytes not freed) climb together: the heap keeps what requests leave behind. If only the resident size climbs, look at the allocator (fragmentation) or memory mapped outside the heap.
2. The sample traces are requests served while it grew: start with their routes. The shop's `/admin/chaos` (GET) shows `retained_memory_kb` when a rehearsal's `memory_growth_kb` is the cause.
3. Bound what grows (an LRU with a size, a ring buffer) or stop keeping it; a restart only buys time (the growth per request tells how long).
"""
false_positives = """
A cache warming up after a start climbs too, then flattens: it takes 32 MiB and
a rise at three exports in four to fire, and no single step may be more than a
quarter of the growth. Memory-hard password hashing (argon2, 19 MiB a hash) lifts
auth in one or two steps when registrations come together, then stays flat: it is
a step, not a climb.
"""
maturity = "test"
*/
-- `process.memory.usage` (resident bytes, one point per export and instance).
-- Over the window: how much it grew from the first point to the last, how
-- many exports saw it rise, and its largest single step; a steady climb
-- rises at most exports by a small share each time. Per request: the growth
-- over the SERVER spans the instance started between the two points.
WITH points AS (
    SELECT window_start, window_end, service_name, service_instance_id, time,
           value - lag(value) OVER (
               PARTITION BY window_start, service_name, service_instance_id ORDER BY time
           ) AS step
    FROM metrics
    WHERE metric_name = 'process.memory.usage'
),
growth AS (
    SELECT window_start, window_end, service_name, service_instance_id,
           min(time) AS first_at, max(time) AS last_at,
           count(step) AS steps,
           count(*) FILTER (WHERE step > 0) AS rises,
           sum(step) AS grown,
           max(step) AS largest_step
    FROM points
    GROUP BY window_start, window_end, service_name, service_instance_id
    HAVING count(step) >= 6
),
climbing AS (
    SELECT * FROM growth
    WHERE grown >= 33554432 AND rises >= 0.75 * steps AND largest_step <= 0.25 * grown
),
served AS (
    SELECT g.window_start, g.window_end, g.service_name, g.grown, g.steps, g.rises,
           g.first_at, g.last_at,
           count(*) AS requests,
           trace_sample(s.trace_id) AS trace_ids
    FROM climbing g
    JOIN spans s
      ON s.window_start = g.window_start AND s.service_name = g.service_name
     AND s.service_instance_id = g.service_instance_id
    WHERE s.kind = 'SERVER' AND s.time >= g.first_at AND s.time < g.last_at
    GROUP BY g.window_start, g.window_end, g.service_name, g.service_instance_id,
             g.grown, g.steps, g.rises, g.first_at, g.last_at
)
SELECT window_start, window_end, service_name,
       CAST(grown / requests / 1024 AS BIGINT) AS kib_per_request,
       requests, steps, rises,
       CAST(grown / 1048576 AS BIGINT) AS mib_grown,
       (CAST(last_at AS BIGINT) - CAST(first_at AS BIGINT)) / 1000000000 AS seconds,
       trace_ids
FROM served
WHERE requests >= 20 AND grown / requests >= 65536
