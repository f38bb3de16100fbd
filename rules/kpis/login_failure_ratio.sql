/*
kpi = "login_failure_ratio"
title = "Share of logins that failed, per minute"
window = "1m"
value = "value"
*/
SELECT window_start, window_end,
       CAST(count(*) FILTER (WHERE shop_auth_outcome = 'failure') AS DOUBLE) / count(*) AS value
FROM events
WHERE event_name = 'shop.auth.login'
GROUP BY window_start, window_end
