/*
id = "auth.brute_force.single_account"
title = "Brute force on one account"
description = "Many wrong passwords for one account in a few minutes, from one address or from many rotating ones."
severity = "high"
tags = ["T1110.001"]
window = "5m"
slide = "15s"
entity = ["user.hash"]
value = "failures"
for = 1
suppress = "30m"
summary = "{value} failed logins in five minutes on account {user.hash}"
runbook = """
1. The account is identified by its keyed hash; look it up in the auth service to find the person.
2. Check whether any login on it succeeded since (see auth.account_takeover).
3. Lock the account or require a second factor; block the addresses if few.
"""
false_positives = """
A person who forgot a password tries a few times, runs into the shop's lockout at 5
failures in a row, perhaps retries once or twice while locked, then resets it: 7 at most.
The account is the entity, so rotating addresses do not hide the attack.
"""
maturity = "stable"
*/
-- 8 failed logins (wrong password, or refused while locked) on one account within
-- five minutes. The shop locks an account after 5 failures in a row
-- (SHOP_LOCKOUT_FAILURES), so a guesser's later tries are refused as `locked` and
-- still count. A person mistyping fails once or twice; one who has forgotten the
-- password reaches the lockout and may retry once or twice more: 7. Eight is the
-- first count no genuine pattern reaches; at one guess every 4 s it trips ~30 s in.
SELECT window_start, window_end, user_hash,
       count(*) AS failures,
       count(DISTINCT client_address) AS addresses,
       min(time) AS first_seen,
       trace_sample(trace_id) AS trace_ids
FROM events
WHERE event_name = 'shop.auth.login' AND shop_auth_outcome = 'failure'
  AND shop_auth_failure_reason IN ('bad_password', 'locked') AND user_hash IS NOT NULL
GROUP BY window_start, window_end, user_hash
HAVING count(*) >= 8
