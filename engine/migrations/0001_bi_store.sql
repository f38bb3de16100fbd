-- The BI store: what the engine's PostgreSQL sink writes (engine/src/sinks/postgres.rs)
-- and what the Grafana dashboards read (dashboards/, docs/dashboards.md).
-- Every write is an upsert on the keys below, so replaying a capture twice, a
-- restart or a Kafka re-read writes no duplicate row.

-- One row per KPI value, in the contract's shape (docs: telemetry-contract.md).
-- A KPI with several values is one row per value, named `kpi.column`.
CREATE TABLE kpi_values (
    kpi          text        NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    -- the KPI's dimensions by the contract's names, e.g. {"shop.order.currency": "EUR"}
    dimensions   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- NULL when the figure is not a number (a ratio over nothing)
    value        double precision,
    written_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kpi, window_start, window_end, dimensions)
);
CREATE INDEX kpi_values_kpi_end ON kpi_values (kpi, window_end);

-- The rule pack as the engine loaded it: what a dashboard lists and joins.
CREATE TABLE rules (
    rule_id    text        PRIMARY KEY,
    title      text        NOT NULL,
    severity   text        NOT NULL,
    tags       text[]      NOT NULL DEFAULT '{}',
    runbook    text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per state transition of an incident: `firing`, then `resolved`.
-- An incident is identified by (rule_id, entity, incident_start): the start of
-- the window in which it fired. A resolved row carries its incident's start.
CREATE TABLE alerts (
    rule_id        text        NOT NULL,
    entity         jsonb       NOT NULL,
    incident_start timestamptz NOT NULL,
    state          text        NOT NULL CHECK (state IN ('firing', 'resolved')),
    severity       text        NOT NULL,
    window_start   timestamptz NOT NULL,
    window_end     timestamptz NOT NULL,
    value          double precision,
    tags           text[]      NOT NULL DEFAULT '{}',
    summary        text        NOT NULL,
    trace_ids      text[]      NOT NULL DEFAULT '{}',
    runbook        text,
    written_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_id, entity, incident_start, state)
);
CREATE INDEX alerts_window_end ON alerts (window_end);

-- An entity as text: `key=value` pairs in key order, e.g. `client.address=203.0.113.9`.
CREATE FUNCTION entity_text(e jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT string_agg(key || '=' || value, ' ' ORDER BY key COLLATE "C") FROM jsonb_each_text(e)
$$;

-- Revenue and orders per hour and per day, by currency (from the `revenue` and
-- `orders` KPIs; a value belongs to the hour its window starts in, UTC).
CREATE VIEW revenue_hourly AS
SELECT date_trunc('hour', window_start, 'UTC') AS hour,
       dimensions ->> 'shop.order.currency' AS currency,
       sum(value) FILTER (WHERE kpi = 'revenue') AS revenue,
       sum(value) FILTER (WHERE kpi = 'orders') AS orders
FROM kpi_values
WHERE kpi IN ('revenue', 'orders')
GROUP BY 1, 2;

CREATE VIEW revenue_daily AS
SELECT date_trunc('day', hour, 'UTC') AS day, currency, sum(revenue) AS revenue, sum(orders) AS orders
FROM revenue_hourly
GROUP BY 1, 2;

-- The checkout funnel (the `checkout_funnel` KPI): sessions at each step, one
-- row per window, steps in the order a shopper takes them.
CREATE VIEW checkout_funnel AS
SELECT window_start, window_end,
       sum(value) FILTER (WHERE kpi = 'checkout_funnel.viewed') AS viewed,
       sum(value) FILTER (WHERE kpi = 'checkout_funnel.added_to_cart') AS added_to_cart,
       sum(value) FILTER (WHERE kpi = 'checkout_funnel.checked_out') AS checked_out,
       sum(value) FILTER (WHERE kpi = 'checkout_funnel.ordered') AS ordered
FROM kpi_values
WHERE kpi LIKE 'checkout\_funnel.%'
GROUP BY 1, 2;

-- Firing alerts per rule and severity per hour (of their window end, UTC).
CREATE VIEW alerts_hourly AS
SELECT date_trunc('hour', window_end, 'UTC') AS hour, rule_id, severity, count(*) AS alerts
FROM alerts
WHERE state = 'firing'
GROUP BY 1, 2, 3;

-- Incidents: each firing with its resolution, if any.
CREATE VIEW incidents AS
SELECT f.rule_id, f.entity, f.incident_start, f.severity,
       f.window_end AS fired_at, r.window_end AS resolved_at,
       f.value, f.tags, f.summary, f.trace_ids, f.runbook
FROM alerts f
LEFT JOIN alerts r
       ON r.rule_id = f.rule_id AND r.entity = f.entity
      AND r.incident_start = f.incident_start AND r.state = 'resolved'
WHERE f.state = 'firing';

CREATE VIEW open_incidents AS
SELECT rule_id, entity, incident_start, severity, fired_at, value, tags, summary, trace_ids, runbook
FROM incidents
WHERE resolved_at IS NULL;
