/*
id = "fraud.card_testing.population"
title = "Card testing, shop-wide"
description = "Across all addresses, tiny payments fail on many different cards: stolen card numbers checked from so many addresses that no address crosses the per-address rule."
severity = "high"
tags = ["T1657"]
window = "5m"
slide = "30s"
entity = ["service.name"]
value = "cards"
for = 1
suppress = "1h"
summary = "{value} different cards declined on payments under 5 in five minutes ({declined} of {payments} tiny payments declined), from {addresses} addresses; most from {top_addresses}"
runbook = """
1. Block or challenge the top addresses and their sessions; add a challenge to
   the payment route while it lasts.
2. Flag the declined card fingerprints with the payment processor; review the
   approved tiny payments of the window (cards that work are sold on).
"""
false_positives = """
Genuine tiny payments are rare (the cheapest item costs about 3) and are
declined about 6% of the time: a flash sale with 450 orders in five minutes has
one. A shopper whose card is declined retries with another card once or twice.
"""
maturity = "test"
*/
-- Payments under 5 (in the currency's major unit): at least 10 distinct cards
-- declined in five minutes, and at least half of the tiny payments declined.
-- Card testers pay the least they can (1-3) to check a card; the shop's own
-- tiny orders are few and mostly approved. Counted per address first, so the
-- alert can name the addresses that tried most cards.
WITH by_address AS (
    SELECT window_start, window_end, service_name, client_address,
           count(*) AS payments,
           count(*) FILTER (WHERE shop_payment_outcome = 'declined') AS declined,
           count(DISTINCT shop_payment_card_fingerprint) FILTER (WHERE shop_payment_outcome = 'declined') AS cards,
           min(trace_id) FILTER (WHERE shop_payment_outcome = 'declined') AS trace_id
    FROM events
    WHERE event_name = 'shop.payment.attempt' AND shop_payment_amount < 5
      AND client_address IS NOT NULL
    GROUP BY window_start, window_end, service_name, client_address
)
SELECT window_start, window_end, service_name,
       sum(cards) AS cards,
       sum(declined) AS declined,
       sum(payments) AS payments,
       count(*) FILTER (WHERE declined > 0) AS addresses,
       array_to_string(array_slice(
           array_agg(client_address || ' (' || CAST(cards AS VARCHAR) || ')'
                     ORDER BY cards DESC, client_address) FILTER (WHERE declined > 0),
           1, 5), ', ') AS top_addresses,
       trace_sample(trace_id) AS trace_ids
FROM by_address
GROUP BY window_start, window_end, service_name
HAVING sum(cards) >= 10 AND sum(declined) >= 0.5 * sum(payments)
