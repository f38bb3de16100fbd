/*
id = "dos.scraping.catalog_walk"
title = "Catalog scraping"
description = "One address views a large share of the catalog, product after product, and never puts anything in a cart."
severity = "low"
tags = ["T1119"]
window = "5m"
slide = "30s"
entity = ["client.address"]
value = "distinct_products"
for = 1
suppress = "30m"
summary = "{client.address} viewed {value} distinct products in five minutes without a cart"
runbook = """
1. Check the user agent: a known search engine crawler is allowed by robots.txt; others are not.
2. Rate-limit product pages per address; consider a challenge.
"""
false_positives = """
Shoppers compare a few dozen products at most; an office behind one NAT views more products in total but also adds to carts.
"""
maturity = "test"
*/
-- 150 distinct product pages in five minutes (one every two seconds, each new) with
-- no cart activity at all.
SELECT v.window_start, v.window_end, v.client_address,
       v.distinct_products,
       v.first_seen,
       v.trace_ids
FROM (
    SELECT window_start, window_end, client_address,
           count(DISTINCT url_path) AS distinct_products,
           min(end_time) AS first_seen,
           trace_sample(trace_id) AS trace_ids
    FROM spans
    WHERE kind = 'SERVER' AND service_name = 'shop-gateway' AND http_route = '/api/products/{id}'
    GROUP BY window_start, window_end, client_address
) v
LEFT JOIN (
    SELECT DISTINCT window_start, client_address
    FROM spans
    WHERE kind = 'SERVER' AND service_name = 'shop-gateway' AND http_route = '/api/cart/items'
) c ON v.window_start = c.window_start AND v.client_address = c.client_address
WHERE c.client_address IS NULL AND v.distinct_products >= 150
