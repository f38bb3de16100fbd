/*
id = "dos.route_traffic_surge"
title = "Traffic on a route far above its own baseline, from single-minded clients"
description = "A route gets ten times its usual traffic (its own mean over the last five minutes), and most of it from clients that send ten requests or more in 30 s to that route alone: a flood, from one address or many."
severity = "high"
tags = ["T1498", "T1499"]
window = "30s"
slide = "10s"
entity = ["http.route"]
value = "surge"
suppress = "30m"
summary = "{http.route} gets {value}x its usual traffic ({requests} requests in 30 s, usually {usual}); {single_minded} of them from {clients} clients that call nothing else, e.g. {top_addresses}"
runbook = """
1. Block or challenge the addresses named (and those of the window's spans with the same user agent).
2. If they are too many to block, rate-limit the route for clients without a session.
3. Check the route's latency and errors: is the flood hurting genuine shoppers?
"""
false_positives = """
No hand-set volume: the bar is the route's own recent traffic (ten times its
mean per 10 s over the last five minutes, and ten deviations above it), so a
quiet route and a busy one are judged alike; a route with under two minutes
of history is not judged (the warm-up). A flash sale or a campaign also
multiplies a route's traffic, but its shoppers send a request or two to each
route and move on: the rule wants half the surge from clients that sent ten
requests or more to that route alone. A poller (a status page on many
devices) would match: exclude its route.
"""
maturity = "experimental"
*/
-- requests per client and route in the window; a client is single-minded
-- when it sent 10 or more and all to one route
WITH per_client AS (
    SELECT window_start, window_end, client_address, http_route, count(*) AS n
    FROM spans
    WHERE kind = 'SERVER' AND service_name = 'shop-gateway' AND http_route IS NOT NULL
    GROUP BY window_start, window_end, client_address, http_route
),
routes_per_client AS (
    SELECT window_start, client_address, count(*) AS routes
    FROM per_client
    GROUP BY window_start, client_address
),
per_route AS (
    SELECT p.window_start, p.window_end, p.http_route,
           sum(p.n) AS requests,
           sum(p.n) FILTER (WHERE r.routes = 1 AND p.n >= 10) AS single_minded,
           count(*) FILTER (WHERE r.routes = 1 AND p.n >= 10) AS clients,
           array_to_string(array_slice(array_agg(p.client_address || ' (' || CAST(p.n AS VARCHAR) || ')'
               ORDER BY p.n DESC, p.client_address) FILTER (WHERE r.routes = 1 AND p.n >= 10), 1, 5), ', ') AS top_addresses
    FROM per_client p
    JOIN routes_per_client r
      ON p.window_start = r.window_start AND p.client_address = r.client_address
    GROUP BY p.window_start, p.window_end, p.http_route
)
-- the baseline: the route's requests per 10 s over the 30 windows before this
-- one (five minutes), for routes with 12 of them at least (two minutes)
SELECT t.window_start, t.window_end, t.http_route,
       round(t.requests / (3 * b.mean), 1) AS surge,
       t.requests, CAST(round(3 * b.mean) AS BIGINT) AS usual,
       t.single_minded, t.clients, t.top_addresses
FROM per_route t
JOIN baseline('route_traffic', 'requests', 30, 12) b
  ON b.window_start = t.window_start AND b.http_route = t.http_route
WHERE t.requests >= 3 * 10 * b.mean
  AND t.requests >= 3 * (b.mean + 10 * coalesce(b.stddev, 0))
  AND t.single_minded * 2 >= t.requests
