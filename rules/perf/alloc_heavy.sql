/*
id = "perf.alloc_heavy"
title = "Allocation-heavy requests"
description = "A service's requests each allocate megabytes of heap and free it again (large temporary buffers, copies of whole payloads): CPU and allocator time on every request, and memory that peaks with concurrency."
severity = "low"
window = "1m"
slide = "10s"
entity = ["service.name"]
value = "kib_per_request"
for = 1
suppress = "30m"
summary = "{service.name} allocated {value} KiB per request over {requests} requests ({mib_allocated} MiB in a minute)"
runbook = """
1. Profile the service while it happens (docs/profiling.md): `curl -H "authorization: Bearer $SHOP_ADMIN_TOKEN" 'http://127.0.0.1:PORT/admin/pprof/flamegraph?seconds=20' > now.svg`. The function that allocates stands out above the allocator's and `memcpy`/`memset` frames.
2. The sample traces are requests the service served in that minute; their routes tell which handlers to read first.
3. Reuse buffers, stream instead of collecting a whole payload, borrow instead of cloning. `rust.memory.allocated` over the request rate shows the fix working.
"""
false_positives = """
Password hashing allocates by design (argon2id at OWASP's parameters takes 19 MiB
per hash): a minute of auth made of registrations alone would come near. The shop's
auth averages far less (logins of seeded accounts use light parameters); 4 MiB per
request over 20 requests keeps it out. A service that really moves large bodies
(uploads, exports) allocates their size: raise the threshold there.
"""
maturity = "test"
*/
-- `rust.memory.allocated` is each process's running total of heap bytes
-- allocated (shop/src/services/profiling.rs, a counting global allocator),
-- exported every interval. Between a window's first and last point of one
-- instance, the bytes allocated, over the SERVER spans that instance started
-- in the same interval, is what a request allocates. A healthy shop request
-- allocates tens to hundreds of KiB (debug build); 4 MiB is large buffers.
WITH allocated AS (
    SELECT window_start, window_end, service_name, service_instance_id,
           min(time) AS first_at, max(time) AS last_at,
           max(value) - min(value) AS bytes
    FROM metrics
    WHERE metric_name = 'rust.memory.allocated'
    GROUP BY window_start, window_end, service_name, service_instance_id
    HAVING count(*) >= 3
),
served AS (
    SELECT a.window_start, a.window_end, a.service_name, a.service_instance_id,
           a.bytes, count(*) AS requests,
           trace_sample(s.trace_id) AS trace_ids
    FROM allocated a
    JOIN spans s
      ON s.window_start = a.window_start AND s.service_name = a.service_name
     AND s.service_instance_id = a.service_instance_id
    WHERE s.kind = 'SERVER' AND s.time >= a.first_at AND s.time < a.last_at
    GROUP BY a.window_start, a.window_end, a.service_name, a.service_instance_id, a.bytes
)
SELECT window_start, window_end, service_name,
       CAST(bytes / requests / 1024 AS BIGINT) AS kib_per_request,
       requests,
       CAST(bytes / 1048576 AS BIGINT) AS mib_allocated,
       trace_ids
FROM served
WHERE requests >= 20 AND bytes / requests >= 4194304
