/*
kpi = "cart_abandonment"
title = "Cart abandonment: sessions that added to a cart but did not order"
description = "Over a sliding 15 minutes, reported every minute."
window = "15m"
slide = "1m"
value = "value"
*/
SELECT window_start, window_end,
       1.0 - CAST(count(DISTINCT session_id) FILTER (WHERE event_name = 'shop.order.placed') AS DOUBLE)
         / count(DISTINCT session_id) FILTER (WHERE event_name = 'shop.cart.item_added') AS value
FROM events
WHERE session_id IS NOT NULL
GROUP BY window_start, window_end
HAVING count(DISTINCT session_id) FILTER (WHERE event_name = 'shop.cart.item_added') > 0
