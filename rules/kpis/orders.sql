/*
kpi = "orders"
title = "Orders placed per minute, by currency"
window = "1m"
dimensions = ["shop.order.currency"]
value = "value"
*/
SELECT window_start, window_end, shop_order_currency, count(*) AS value
FROM events
WHERE event_name = 'shop.order.placed'
GROUP BY window_start, window_end, shop_order_currency
