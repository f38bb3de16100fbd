/*
kpi = "payment_decline_ratio"
title = "Share of payment attempts declined, per minute"
window = "1m"
value = "value"
*/
SELECT window_start, window_end,
       CAST(count(*) FILTER (WHERE shop_payment_outcome = 'declined') AS DOUBLE) / count(*) AS value
FROM events
WHERE event_name = 'shop.payment.attempt'
GROUP BY window_start, window_end
