/*
id = "perf.retry_storm"
title = "Retry storm between services"
description = "A service sends the same failing call to another again and again within one request: retries without backoff or budget multiply the load on a dependency that is already failing."
severity = "high"
window = "1m"
slide = "10s"
entity = ["service.name", "peer.service"]
value = "stormy_requests"
for = 1
suppress = "30m"
summary = "{value} requests of {service.name} called {peer.service} 3 times or more after failures ({attempts} calls for {calls} requests)"
runbook = """
1. Open a sample trace: under one SERVER span, CLIENT spans to the same route follow each other, each failed (ERROR, 5xx or refused).
2. Fix the dependency's failure first (see its error alerts); then give the caller a retry budget (a few percent of calls), exponential backoff with jitter, and a circuit breaker.
3. A caller that retries what the dependency answered 503 + Retry-After should wait that long, or not retry at all.
"""
false_positives = """
A caller that legitimately calls the same route several times per request (one call
per item) makes repeated CLIENT spans too, but they succeed: only repeats of which
at least two failed count. Five such requests in a minute keep one retried blip
from firing.
"""
maturity = "test"
*/
-- CLIENT spans to another service (`peer.service`), grouped by their parent
-- (the request that made them) and route: a healthy shop calls each route
-- once per request, and calls nothing again after a failure.
WITH calls AS (
    SELECT window_start, window_end, service_name,
           attributes['peer.service'] AS peer_service, trace_id, parent_span_id, name,
           count(*) AS attempts,
           count(*) FILTER (WHERE status_code = 'ERROR') AS failed
    FROM spans
    WHERE kind = 'CLIENT' AND attributes['peer.service'] IS NOT NULL
    GROUP BY window_start, window_end, service_name, attributes['peer.service'],
             trace_id, parent_span_id, name
)
SELECT window_start, window_end, service_name, peer_service,
       count(*) FILTER (WHERE attempts >= 3 AND failed >= 2) AS stormy_requests,
       sum(attempts) AS attempts,
       count(*) AS calls,
       trace_sample(trace_id) FILTER (WHERE attempts >= 3 AND failed >= 2) AS trace_ids
FROM calls
GROUP BY window_start, window_end, service_name, peer_service
HAVING count(*) FILTER (WHERE attempts >= 3 AND failed >= 2) >= 5
