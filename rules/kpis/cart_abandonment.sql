/*
kpi = "cart_abandonment"
title = "Cart abandonment: sessions that added to a cart but did not order"
description = "Over a sliding 15 minutes, reported every minute."
window = "15m"
slide = "1m"
value = "value"
*/
-- Of the sessions that added to a cart in the window, the share that placed
-- no order in it. One row per session that added, with whether it ordered:
-- a session that orders what it added before the window does not count,
-- so the share stays between 0 and 1.
SELECT window_start, window_end,
       1.0 - CAST(sum(ordered) AS DOUBLE) / count(*) AS value
FROM (
    SELECT window_start, window_end, session_id,
           max(CASE WHEN event_name = 'shop.order.placed' THEN 1 ELSE 0 END) AS ordered
    FROM events
    WHERE session_id IS NOT NULL
      AND event_name IN ('shop.cart.item_added', 'shop.order.placed')
    GROUP BY window_start, window_end, session_id
    HAVING max(CASE WHEN event_name = 'shop.cart.item_added' THEN 1 ELSE 0 END) = 1
) AS sessions
GROUP BY window_start, window_end
