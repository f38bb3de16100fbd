-- An alert's identity and its detection delay (engine/src/alerts/mod.rs).
-- Rows written before this migration keep working: the new columns are NULL
-- there, and the dashboards leave such rows out of the detection delay.

-- id: the alert's identity (Alert::identity, 16 hex digits of rule id, rule
-- version, entity and incident start), the same for the firing and the
-- resolved row of one incident and the `id` of the alert's JSON everywhere.
-- rule_version: the rule file's version the incident was found with.
-- first_seen: the event time of the incident's first evidence.
-- detected_at: the event time the engine had reached when it emitted the alert.
ALTER TABLE alerts
    ADD COLUMN alert_id     text,
    ADD COLUMN rule_version text,
    ADD COLUMN first_seen   timestamptz,
    ADD COLUMN detected_at  timestamptz;

-- One row per identity and state, like the primary key: an identity names
-- one (rule, version, entity, incident start).
CREATE UNIQUE INDEX alerts_identity ON alerts (alert_id, state) WHERE alert_id IS NOT NULL;

-- How long each incident took to be notified: from its first evidence to
-- the engine's firing alert, in seconds (event time).
CREATE VIEW detection_delays AS
SELECT rule_id, entity, incident_start, severity, first_seen, detected_at,
       EXTRACT(EPOCH FROM detected_at - first_seen)::double precision AS delay_seconds
FROM alerts
WHERE state = 'firing' AND first_seen IS NOT NULL AND detected_at IS NOT NULL;
