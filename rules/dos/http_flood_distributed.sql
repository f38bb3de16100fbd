/*
id = "dos.http_flood.distributed"
title = "Distributed flood on one route"
description = "Many addresses each hammer a single route and do nothing else: the shape of a botnet, not of a crowd of shoppers."
severity = "high"
tags = ["T1498", "T1499.002"]
window = "1m"
slide = "10s"
entity = ["http.route"]
value = "single_route_clients"
for = 1
suppress = "15m"
summary = "{value} addresses hit only {http.route} in one minute"
runbook = """
1. Look at the user agents and the spread of addresses in the sample traces.
2. Turn on the edge's challenge or per-route rate limit for this route.
3. Watch the route's error ratio and latency KPIs while it lasts.
"""
false_positives = """
A flash sale brings many addresses at once, but its shoppers move between routes (products, cart, checkout): they are not counted.
A client that polls one endpoint (a status page) from many devices could match: exclude that route.
"""
maturity = "test"
*/
-- A client counts when, within the window, all its requests went to one route and
-- it sent at least 20 of them (one every 3 s or faster). 50 such clients on one
-- route is a distributed flood: genuine shoppers browse several routes, and even a
-- crowd of them rarely puts 50 single-minded clients on one route.
WITH per_client AS (
    SELECT window_start, window_end, client_address, http_route, count(*) AS n
    FROM spans
    WHERE kind = 'SERVER' AND service_name = 'shop-gateway' AND client_address IS NOT NULL
    GROUP BY window_start, window_end, client_address, http_route
),
routes_per_client AS (
    SELECT window_start, client_address, count(*) AS routes
    FROM per_client
    GROUP BY window_start, client_address
)
SELECT p.window_start, p.window_end, p.http_route,
       count(*) AS single_route_clients,
       sum(p.n) AS requests
FROM per_client p
JOIN routes_per_client r
  ON p.window_start = r.window_start AND p.client_address = r.client_address
WHERE r.routes = 1 AND p.n >= 20
GROUP BY p.window_start, p.window_end, p.http_route
HAVING count(*) >= 50
