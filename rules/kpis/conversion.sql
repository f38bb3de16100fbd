/*
kpi = "conversion"
title = "Conversion: sessions that ordered / sessions that viewed a product"
description = "Over a sliding 15 minutes (a shopping session spans minutes), reported every minute."
window = "15m"
slide = "1m"
value = "value"
*/
SELECT window_start, window_end,
       CAST(count(DISTINCT session_id) FILTER (WHERE event_name = 'shop.order.placed') AS DOUBLE)
         / count(DISTINCT session_id) FILTER (WHERE event_name = 'shop.product.viewed') AS value
FROM events
WHERE session_id IS NOT NULL
GROUP BY window_start, window_end
HAVING count(DISTINCT session_id) FILTER (WHERE event_name = 'shop.product.viewed') > 0
