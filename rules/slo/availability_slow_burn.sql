/*
id = "slo.availability.slow_burn"
title = "Availability SLO: error budget burning slowly on a route"
description = """
The availability objective of `slo.availability.fast_burn` (99.5% of a
route's requests without 5xx, over 30 days). Slow burn, as the SRE workbook
opens a ticket on: 6x over the last six hours and over the last 30 minutes,
both (5% of the month's budget in six hours). It catches a degradation too
mild for the fast burn and for the route error surge (which wants 20% 5xx in
a minute) that would still spend the budget in five days.
"""
severity = "medium"
tags = ["slo"]
window = "1m"
entity = ["http.route"]
value = "burn_6h"
suppress = "6h"
summary = "{http.route} spends its error budget {value}x as fast as a 99.5% availability SLO allows over six hours ({burn_30m}x over 30 minutes; {errors_6h} of {requests_6h} requests 5xx)"
runbook = """
1. Not a page: open a ticket. Which status codes, and since when (the route's error ratio in the viewer)?
2. Look for a slowly failing dependency (a replica, a pool near its limit) or a deploy that added a rare failure.
3. `slo.availability.budget_remaining` says how much of the month is left to spend.
"""
false_positives = """
A route with little traffic; the rule asks for 360 requests in six hours.
Right after a start the six hours hold less: the rule reads what it has.
"""
maturity = "test"
*/
-- burn = (5xx share) / (1 - 0.995); slow burn: >= 6 over 6 h and over 30 min.
WITH by_route AS (
  SELECT window_start, window_end, http_route,
         sum(requests) AS requests_6h,
         sum(errors) AS errors_6h,
         sum(requests) FILTER (WHERE bucket_start >= window_end - INTERVAL '30 minutes') AS requests_30m,
         sum(errors) FILTER (WHERE bucket_start >= window_end - INTERVAL '30 minutes') AS errors_30m
  FROM rollup('slo.route_minutes', '6h')
  GROUP BY window_start, window_end, http_route)
SELECT window_start, window_end, http_route,
       round(errors_6h / requests_6h / 0.005, 1) AS burn_6h,
       round(errors_30m / requests_30m / 0.005, 1) AS burn_30m,
       CAST(errors_6h AS BIGINT) AS errors_6h,
       CAST(requests_6h AS BIGINT) AS requests_6h
FROM by_route
WHERE requests_6h >= 360
  AND errors_6h / requests_6h >= 6 * 0.005
  AND errors_30m / requests_30m >= 6 * 0.005
