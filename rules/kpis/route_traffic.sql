/*
kpi = "route_traffic"
title = "Requests per route every 10 seconds (kept: the routes' traffic baselines)"
description = """
The edge's requests per route and 10-second window. The engine keeps ten
minutes of them (`keep`), from which `baseline('route_traffic', 'requests', 30, 12)`
gives each route's mean and deviation over its last five minutes
(`dos.route_traffic_surge`). Memory: 60 windows x at most 1000 routes.
"""
window = "10s"
keep = "10m"
dimensions = ["http.route"]
value = "requests"
*/
SELECT window_start, window_end, http_route, count(*) AS requests
FROM spans
WHERE kind = 'SERVER' AND service_name = 'shop-gateway' AND http_route IS NOT NULL
GROUP BY window_start, window_end, http_route
