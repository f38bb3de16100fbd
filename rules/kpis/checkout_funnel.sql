/*
kpi = "checkout_funnel"
title = "Checkout funnel: sessions at each step, per quarter hour"
description = """Sessions that viewed a product, added to a cart, started a checkout and
ordered, counted once per step in each quarter hour (tumbling 15 minutes, the length
of a shopping session). The BI view `checkout_funnel` and the Business dashboard read it."""
window = "15m"
values = ["viewed", "added_to_cart", "checked_out", "ordered"]
*/
SELECT window_start, window_end,
       count(DISTINCT session_id) FILTER (WHERE event_name = 'shop.product.viewed') AS viewed,
       count(DISTINCT session_id) FILTER (WHERE event_name = 'shop.cart.item_added') AS added_to_cart,
       count(DISTINCT session_id) FILTER (WHERE event_name = 'shop.checkout.started') AS checked_out,
       count(DISTINCT session_id) FILTER (WHERE event_name = 'shop.order.placed') AS ordered
FROM events
WHERE session_id IS NOT NULL
  AND event_name IN ('shop.product.viewed', 'shop.cart.item_added', 'shop.checkout.started', 'shop.order.placed')
GROUP BY window_start, window_end
