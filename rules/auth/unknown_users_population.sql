/*
id = "auth.unknown_users.population"
title = "Logins for accounts that do not exist, shop-wide"
description = "Across all addresses, a large share of login attempts name accounts the shop never had: a leaked list of name/password pairs replayed from many addresses, one or two tries each."
severity = "critical"
tags = ["T1110.004"]
window = "5m"
slide = "30s"
entity = ["service.name"]
value = "unknown_users"
for = 1
suppress = "1h"
summary = "{value} logins for unknown accounts in five minutes ({attempts} attempts in all), from {addresses} addresses; most from {top_addresses}"
runbook = """
1. A list of leaked pairs is being replayed: some pairs may work. List the
   successful logins of the window from the failing addresses and reset those accounts.
2. Block or challenge the top addresses; put a challenge on the login route while it lasts.
"""
false_positives = """
A person who mistypes the login name fails with unknown_user once, then gets it
right. A campaign that brings 600 customers back in five minutes makes about 10
of them, 2% of its logins (20 and 15% needed).
"""
maturity = "test"
*/
-- 20 unknown_user failures in five minutes that make at least 15% of all login
-- attempts. Leaked lists are mostly names the shop never had (55% in the
-- stuffing captures); genuine name typos are rare and diluted by the successes
-- around them. At the low-and-slow pace (~20 unknown names a minute) it crosses
-- in about a minute.
WITH by_address AS (
    SELECT window_start, window_end, service_name, client_address,
           count(*) AS attempts,
           count(*) FILTER (WHERE shop_auth_failure_reason = 'unknown_user') AS unknown,
           min(trace_id) FILTER (WHERE shop_auth_failure_reason = 'unknown_user') AS trace_id
    FROM events
    WHERE event_name = 'shop.auth.login' AND client_address IS NOT NULL
    GROUP BY window_start, window_end, service_name, client_address
)
SELECT window_start, window_end, service_name,
       sum(unknown) AS unknown_users,
       sum(attempts) AS attempts,
       count(*) FILTER (WHERE unknown > 0) AS addresses,
       array_to_string(array_slice(
           array_agg(client_address || ' (' || CAST(unknown AS VARCHAR) || ')'
                     ORDER BY unknown DESC, client_address) FILTER (WHERE unknown > 0),
           1, 5), ', ') AS top_addresses,
       trace_sample(trace_id) AS trace_ids
FROM by_address
GROUP BY window_start, window_end, service_name
HAVING sum(unknown) >= 20 AND sum(unknown) >= 0.15 * sum(attempts)
