/*
id = "auth.credential_stuffing"
title = "Credential stuffing"
description = "Fast logins on many distinct accounts from one address, most of them unknown or wrong: a list of leaked pairs being tried."
severity = "critical"
tags = ["T1110.004"]
window = "2m"
slide = "10s"
entity = ["client.address"]
value = "accounts"
for = 1
suppress = "1h"
summary = "{client.address} tried {value} accounts in two minutes"
runbook = """
1. Some pairs may have worked: list successful logins from this address and reset those accounts.
2. Block the address; add a challenge to the login route.
"""
false_positives = """
An office behind one NAT address logs in many people, but at human pace and nearly all successfully.
"""
maturity = "stable"
*/
-- 20 distinct accounts from one address in two minutes, at least half failing, and
-- the failures including unknown user names (a leaked list holds names the shop
-- never had).
SELECT window_start, window_end, client_address,
       count(DISTINCT user_hash) AS accounts,
       count(*) FILTER (WHERE shop_auth_outcome = 'success') AS successes,
       min(time) AS first_seen,
       trace_sample(trace_id) AS trace_ids
FROM events
WHERE event_name = 'shop.auth.login' AND client_address IS NOT NULL
GROUP BY window_start, window_end, client_address
HAVING count(DISTINCT user_hash) >= 20
   AND CAST(count(*) FILTER (WHERE shop_auth_outcome = 'failure') AS DOUBLE) / count(*) >= 0.5
   AND count(*) FILTER (WHERE shop_auth_failure_reason = 'unknown_user') >= 3
