-- Seed catalog: 8 categories, 480 products (60 each), deterministic names,
-- prices from 1.99 to 201.98 EUR. Accounts are seeded by the auth service
-- (argon2 hashes cannot be made in SQL): see shop/README.md.

INSERT INTO categories (id, name) VALUES
    ('books', 'Books'),
    ('electronics', 'Electronics'),
    ('garden', 'Garden'),
    ('kitchen', 'Kitchen'),
    ('outdoor', 'Outdoor'),
    ('toys', 'Toys'),
    ('clothing', 'Clothing'),
    ('music', 'Music');

INSERT INTO products (id, sku, name, description, category_id, price_cents, currency, stock)
SELECT
    n,
    'SKU-' || lpad(n::text, 5, '0'),
    initcap(adj) || ' ' || noun || ' ' || n,
    'A ' || adj || ' ' || noun || ' from the ' || c.name || ' department.',
    c.id,
    199 + (n * 7919) % 20000,
    'EUR',
    (n * 37) % 250
FROM generate_series(1, 480) AS n
JOIN LATERAL (
    SELECT id, name FROM categories ORDER BY id OFFSET (n - 1) % 8 LIMIT 1
) AS c ON true
CROSS JOIN LATERAL (
    SELECT (ARRAY['classic', 'compact', 'deluxe', 'eco', 'heavy-duty', 'portable', 'smart', 'vintage'])[1 + n % 8] AS adj,
           (ARRAY['lamp', 'kit', 'set', 'box', 'pack', 'edition', 'model', 'bundle', 'series', 'collection'])[1 + n % 10] AS noun
) AS words;
