/*
id = "fraud.card_testing"
title = "Card testing"
description = "Many small payments with many different cards from one address, mostly declined: stolen card numbers being checked."
severity = "high"
tags = ["T1657"]
window = "10m"
slide = "30s"
entity = ["client.address"]
value = "cards"
for = 1
suppress = "1h"
summary = "{client.address} tried {value} different cards in ten minutes"
runbook = """
1. Block the address and the session; flag the card fingerprints with the payment processor.
2. Review any approved payments from this address.
"""
false_positives = """
A shopper whose card is declined tries a second or third card: at most a few.
"""
maturity = "stable"
*/
-- At least 6 distinct card fingerprints and at least half declined, from one address
-- within ten minutes.
SELECT window_start, window_end, client_address,
       count(DISTINCT shop_payment_card_fingerprint) AS cards,
       count(*) AS attempts,
       min(time) AS first_seen,
       trace_sample(trace_id) AS trace_ids
FROM events
WHERE event_name = 'shop.payment.attempt' AND client_address IS NOT NULL
GROUP BY window_start, window_end, client_address
HAVING count(DISTINCT shop_payment_card_fingerprint) >= 6
   AND CAST(count(*) FILTER (WHERE shop_payment_outcome = 'declined') AS DOUBLE) / count(*) >= 0.5
