/*
id = "slo.availability.fast_burn"
title = "Availability SLO: error budget burning fast on a route"
description = """
The availability objective: 99.5% of a route's requests answer without a
server error (5xx), over 30 days; its error budget is the other 0.5%. A burn
rate is the share of 5xx over a window divided by 0.5%: 1 spends the budget
in exactly 30 days. Fast burn, as the SRE workbook pages on: 14.4x over the
last hour and over the last 5 minutes, both (2% of the month's budget in an
hour; the short window makes it resolve minutes after the errors stop).
"""
severity = "high"
tags = ["slo"]
window = "1m"
entity = ["http.route"]
value = "burn_1h"
suppress = "1h"
summary = "{http.route} spends its error budget {value}x as fast as a 99.5% availability SLO allows over the last hour ({burn_5m}x over 5 minutes; {errors_1h} of {requests_1h} requests 5xx)"
runbook = """
1. Open the route in the viewer (Routes) and the route error surge alert if it fired: which status, since when?
2. Find the failing dependency in the traces of a 5xx request (database, Redis, payments) and recent deploys.
3. At this rate the month's budget is gone in about two days: roll back or fail over now, then open a ticket for the cause.
"""
false_positives = """
A route with little traffic: a few failures among few requests make a high ratio.
The rule asks for 100 requests in the hour. A one-minute restart burst burns
the 5-minute window but not the hour (see slo_healthy's catalog_restart).
"""
maturity = "test"
*/
-- burn = (5xx share) / (1 - 0.995); fast burn: >= 14.4 over 1 h and over 5 min.
WITH by_route AS (
  SELECT window_start, window_end, http_route,
         sum(requests) AS requests_1h,
         sum(errors) AS errors_1h,
         sum(requests) FILTER (WHERE bucket_start >= window_end - INTERVAL '5 minutes') AS requests_5m,
         sum(errors) FILTER (WHERE bucket_start >= window_end - INTERVAL '5 minutes') AS errors_5m
  FROM rollup('slo.route_minutes', '1h')
  GROUP BY window_start, window_end, http_route)
SELECT window_start, window_end, http_route,
       round(errors_1h / requests_1h / 0.005, 1) AS burn_1h,
       round(errors_5m / requests_5m / 0.005, 1) AS burn_5m,
       CAST(errors_1h AS BIGINT) AS errors_1h,
       CAST(requests_1h AS BIGINT) AS requests_1h
FROM by_route
WHERE requests_1h >= 100
  AND errors_1h / requests_1h >= 14.4 * 0.005
  AND errors_5m / requests_5m >= 14.4 * 0.005
