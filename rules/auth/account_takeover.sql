/*
id = "auth.account_takeover"
title = "Login success after repeated failures"
description = "An account that failed three or more times logs in successfully within ten minutes: the guessing may have worked."
severity = "critical"
tags = ["T1110.001", "T1078"]
window = "10m"
slide = "15s"
entity = ["user.hash"]
value = "failures_before"
for = 1
suppress = "1h"
summary = "account {user.hash} logged in after {value} failures"
runbook = """
1. Treat the account as compromised: end its sessions, reset the password, check orders and payment changes since.
2. Compare the successful login's address and user agent with the account's usual ones.
"""
false_positives = """
A person who mistypes fails once or twice before succeeding: that stays below three.
Someone who has really forgotten a password and tries three or four old ones before
the right one looks the same; the runbook's comparison of address and user agent
with the account's usual ones tells them apart.
"""
maturity = "stable"
*/
-- A sequence: N failures, then a success, on one account, within the window. The
-- success is joined to the failures that came before it.
--
-- Why three: the shop locks an account after five failures in a row
-- (SHOP_LOCKOUT_FAILURES), so a guesser who wants in gets at most four tries per
-- lockout period; waiting for five would only ever see the attacker who reset the
-- counter by other means. People who mistype fail once, rarely twice. The 15 s
-- slide raises the alert at most 15 s after the success.
WITH logins AS (
    SELECT window_start, window_end, user_hash, time, shop_auth_outcome, trace_id
    FROM events
    WHERE event_name = 'shop.auth.login' AND user_hash IS NOT NULL
)
SELECT s.window_start, s.window_end, s.user_hash,
       count(DISTINCT f.time) AS failures_before,
       min(f.time) AS first_seen,
       trace_sample(s.trace_id) AS trace_ids
FROM logins s
JOIN logins f
  ON f.window_start = s.window_start AND f.user_hash = s.user_hash
 AND f.shop_auth_outcome = 'failure' AND f.time < s.time
WHERE s.shop_auth_outcome = 'success'
GROUP BY s.window_start, s.window_end, s.user_hash
HAVING count(DISTINCT f.time) >= 3
