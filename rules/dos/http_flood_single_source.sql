/*
id = "dos.http_flood.single_source"
title = "HTTP flood from a single address"
description = "One client address sends requests to the edge at a rate no person, and no office of people, produces."
severity = "high"
tags = ["T1498", "T1499.002"]
window = "1m"
slide = "10s"
entity = ["client.address"]
value = "requests"
for = 1
suppress = "15m"
summary = "{value} requests in one minute from {client.address}"
runbook = """
1. Open the sample traces: which routes, which user agent, any session?
2. If the address is not a known partner or monitor, block or rate-limit it at the edge.
3. Check the route error/latency KPIs: did the flood hurt other users?
"""
false_positives = """
Load tests and synthetic monitors run from a fixed address: list them and exclude them here.
A large office behind one NAT address stays far below this rate (see nat_office fixture).
"""
maturity = "stable"
*/
-- Threshold: 3000 requests a minute (50/s on average) from one address. A genuine
-- shopper makes well under 1 request/s, a fast power user 1 to 3/s, and an office
-- of 50 shoppers behind one NAT address about 25/s: the threshold sits at twice
-- the busiest genuine case. A flood of 200/s crosses it within 20 s.
SELECT window_start, window_end, client_address,
       count(*) AS requests,
       min(end_time) AS first_seen,
       trace_sample(trace_id) AS trace_ids
FROM spans
WHERE kind = 'SERVER' AND service_name = 'shop-gateway' AND client_address IS NOT NULL
GROUP BY window_start, window_end, client_address
HAVING count(*) >= 3000
