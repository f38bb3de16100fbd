/*
kpi = "slo.budget_remaining"
title = "Per route: the share of the 30-day error budgets still to spend"
description = """
For the availability objective (99.5% without 5xx) and the latency objective
(99% within 1 s): 1 - spent / budget over the last 30 days, from the hourly
sums `slo.route_minutes` keeps (the hour in progress included). 1 is
untouched, 0 spent, below 0 overspent. Every five minutes, per route.
"""
window = "5m"
dimensions = ["http.route"]
values = ["availability", "latency", "requests"]
*/
SELECT window_start, window_end, http_route,
       1 - (sum(errors) / sum(requests)) / 0.005 AS availability,
       1 - (sum(slow) / sum(requests)) / 0.01 AS latency,
       sum(requests) AS requests
FROM rollup('slo.route_minutes', '30d', 'hourly')
GROUP BY window_start, window_end, http_route
HAVING sum(requests) > 0
