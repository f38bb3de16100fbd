/*
kpi = "revenue"
title = "Revenue per minute, by currency (major units)"
window = "1m"
dimensions = ["shop.order.currency"]
value = "value"
*/
SELECT window_start, window_end, shop_order_currency, sum(shop_order_amount) AS value
FROM events
WHERE event_name = 'shop.order.placed'
GROUP BY window_start, window_end, shop_order_currency
