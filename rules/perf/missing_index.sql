/*
id = "perf.missing_index"
title = "Hot lookup no index can serve"
description = "A service runs a lookup many times a minute whose condition wraps the column in an expression (`id + 0 = $1`, `lower(email) = $1`): an index on the column cannot serve it, so the database reads the whole table every time, and each lookup costs more as the table grows."
severity = "medium"
window = "1m"
slide = "10s"
entity = ["service.name"]
value = "executions"
for = 1
suppress = "30m"
summary = "{service.name} ran {value} lookups on {db_collection_name} in a minute that no index on the column serves (p50 {p50_ms} ms): {statement}"
runbook = """
1. Open a sample trace: the database span's `db.query.text` compares an expression of a column with a parameter.
2. Compare the column itself (`WHERE id = $1`), or give the table an index on that very expression (`CREATE INDEX ... ON products ((id + 0))`, `... ON accounts (lower(email))`); `EXPLAIN` the statement to see the sequential scan go.
3. Until then the statement's duration grows with the table, and so does the database's CPU.
"""
false_positives = """
A table that has an index on the expression itself (an expression index) serves
the lookup: the rule reads the statement, not the plan, so it cannot tell. Mute it
for that statement or, better, write the condition so that it reads as indexed.
Twenty runs a minute keeps rare reports and maintenance queries out.
"""
maturity = "test"
*/
-- The statement text is the evidence: after WHERE, a column under arithmetic
-- (`col + 0`, `col * 1`) or inside a function (`lower(col)`, `date(col)`,
-- `coalesce(col, ...)`, `cast(col as ...)`) compared for equality with a bound
-- parameter. Range conditions (`>=`) and expressions on the parameter side
-- are not matched. The shop's own statements compare columns as they are.
WITH lookups AS (
    SELECT window_start, window_end, service_name, db_collection_name,
           attributes['db.query.text'] AS statement, duration_ms, trace_id
    FROM spans
    WHERE kind = 'CLIENT' AND db_system_name IS NOT NULL
      AND regexp_like(
            attributes['db.query.text'],
            '(?is)\bwhere\b.*\b([a-z_][a-z0-9_.]*\s*[-+*/]\s*[0-9]+|(lower|upper|trim|date|coalesce|cast|to_char|abs)\s*\(\s*[a-z_][a-z0-9_.]*[^()]*\))\s*=\s*\$[0-9]+'
          )
)
SELECT window_start, window_end, service_name,
       min(db_collection_name) AS db_collection_name,
       count(*) AS executions,
       round(approx_percentile_cont(duration_ms, 0.5), 2) AS p50_ms,
       min(statement) AS statement,
       trace_sample(trace_id) AS trace_ids
FROM lookups
GROUP BY window_start, window_end, service_name
HAVING count(*) >= 20
