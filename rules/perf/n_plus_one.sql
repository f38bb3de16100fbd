/*
id = "perf.n_plus_one"
title = "N+1 queries"
description = "Requests of one service run the same database statement many times each, once per item, where one query would do: the N+1 pattern."
severity = "medium"
window = "1m"
slide = "10s"
entity = ["service.name"]
value = "requests"
for = 1
suppress = "30m"
summary = "{value} requests on {service.name} in a minute ran one statement up to {most_executions} times each: {statement}"
runbook = """
1. Open a sample trace: the repeated database spans sit under one parent, each with the same `db.query.text`.
2. Find the loop in the service's code that runs it (one query per listed item) and replace it with one query (`WHERE id = ANY($1)`, a join) or a batch.
3. Until then the route's latency and the database's load grow with the page size.
"""
false_positives = """
A handler that really writes one row per item (an order's lines) repeats its INSERT
once per item: the shop's carts rarely hold ten lines, and it takes three such
requests in a minute. Raise the repetitions for services with large batches.
"""
maturity = "test"
*/
-- One (trace, parent span, statement) is one request running one statement;
-- ten or more runs of it under the same parent is a loop, not a query. A
-- healthy shop runs each statement once per request (a listing is one SELECT;
-- checkout's INSERT of order lines repeats once per cart line, rarely ten).
-- Three such requests in a minute keep one odd order from firing.
WITH repeated AS (
    SELECT window_start, window_end, service_name, trace_id, parent_span_id,
           attributes['db.query.text'] AS statement,
           count(*) AS executions
    FROM spans
    WHERE kind = 'CLIENT' AND db_system_name IS NOT NULL
    GROUP BY window_start, window_end, service_name, trace_id, parent_span_id,
             attributes['db.query.text']
    HAVING count(*) >= 10
)
SELECT window_start, window_end, service_name,
       count(*) AS requests,
       max(executions) AS most_executions,
       min(statement) AS statement,
       trace_sample(trace_id) AS trace_ids
FROM repeated
GROUP BY window_start, window_end, service_name
HAVING count(*) >= 3
