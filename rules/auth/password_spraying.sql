/*
id = "auth.password_spraying"
title = "Password spraying"
description = "One address tries one or two common passwords on many accounts, slowly, to stay under per-account lockout."
severity = "high"
tags = ["T1110.003"]
window = "15m"
slide = "1m"
entity = ["client.address"]
value = "accounts"
for = 1
suppress = "1h"
summary = "{client.address} failed logins on {value} distinct accounts in 15 minutes"
runbook = """
1. List the accounts tried (user.hash in the events of the sample traces).
2. Block the address; force a password change for any account that logged in from it.
"""
false_positives = """
An office behind one NAT address has many people logging in, but nearly all succeed; typos touch one or two accounts.
"""
maturity = "test"
*/
-- Failures on at least 8 distinct accounts from one address in 15 minutes, with
-- few attempts per account (at most 3 on average: spraying, not brute force) and
-- mostly failures (an office logs in successfully).
SELECT window_start, window_end, client_address,
       count(DISTINCT user_hash) FILTER (WHERE shop_auth_outcome = 'failure') AS accounts,
       count(*) AS attempts,
       min(time) FILTER (WHERE shop_auth_outcome = 'failure') AS first_seen,
       trace_sample(trace_id) AS trace_ids
FROM events
WHERE event_name = 'shop.auth.login' AND client_address IS NOT NULL
GROUP BY window_start, window_end, client_address
HAVING count(DISTINCT user_hash) FILTER (WHERE shop_auth_outcome = 'failure') >= 8
   AND CAST(count(*) AS DOUBLE) / count(DISTINCT user_hash) <= 3
   AND CAST(count(*) FILTER (WHERE shop_auth_outcome = 'failure') AS DOUBLE) / count(*) >= 0.7
