/*
id = "dos.expensive_endpoint_abuse"
title = "Abuse of the expensive search endpoint"
description = "One address makes the search service spend far more server time than any shopper does, or searches far faster than any shopper: a cheap request that is expensive to answer, repeated."
severity = "medium"
tags = ["T1499.003"]
window = "2m"
slide = "10s"
entity = ["client.address"]
value = "server_seconds"
for = 1
suppress = "15m"
summary = "{client.address} used {value} s of search time in two minutes"
runbook = """
1. Look at the search queries' length and the user agent in the sample traces.
2. Rate-limit search per address or session; cap query length.
"""
false_positives = """
A shopper who searches a lot makes a search every few seconds with short queries: about 10 s of server time in two minutes at most.
A fast power user makes about one request a second, a fifth of them searches: some 25 searches in two minutes; an office behind one address, about 40.
"""
maturity = "test"
*/
-- Two signs, either enough:
-- * server time spent on /api/search for one address, summed over two minutes: 60 s
--   of server time in 120 s means the address keeps a search worker busy half the
--   time (a search made slow by long queries, or by a slow catalog);
-- * searches alone: 150 in two minutes (1.25 a second, sustained) from one address.
--   When searches are cheap, as on an idle catalog, the server time stays low
--   however fast a bot searches, yet the bot still costs a database query per
--   search and scrapes the results; 150 is six times a fast power user's searches
--   and four times an office's behind one NAT address.
SELECT window_start, window_end, client_address,
       sum(duration_ms) / 1000.0 AS server_seconds,
       count(*) AS searches,
       min(end_time) AS first_seen,
       trace_sample(trace_id) AS trace_ids
FROM spans
WHERE kind = 'SERVER' AND service_name = 'shop-gateway' AND http_route = '/api/search'
GROUP BY window_start, window_end, client_address
HAVING (sum(duration_ms) >= 60000 AND count(*) >= 30) OR count(*) >= 150
