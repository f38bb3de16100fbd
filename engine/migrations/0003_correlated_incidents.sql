-- Correlated incidents: the alerts folded by the engine's correlator
-- (engine/src/incidents/, docs/rules.md "Incidents"), one row per incident
-- in its latest state. Alertmanager, the webhook and the alerts topic notify
-- these; the alerts table keeps every member alert, and the `incidents` view
-- (0001) each member's own lifecycle.

-- incident_id: the incident's identity, its lead alert's alert_id.
-- rule_id, severity, entity: the lead alert's (the one that opened it).
-- members: the listed members (at most 10, the lead first, then the highest
-- values) as JSON objects {id, rule_id, entity, value, state, window_end};
-- member_count counts them all.
CREATE TABLE correlated_incidents (
    incident_id      text PRIMARY KEY,
    state            text NOT NULL CHECK (state IN ('firing', 'resolved')),
    rule_id          text NOT NULL,
    severity         text NOT NULL,
    highest_severity text NOT NULL,
    entity           jsonb NOT NULL,
    summary          text NOT NULL,
    rules            text[] NOT NULL,
    member_count     bigint NOT NULL,
    open_members     bigint NOT NULL,
    entity_count     bigint NOT NULL,
    members          jsonb NOT NULL,
    incident_start   timestamptz NOT NULL,
    incident_end     timestamptz NOT NULL,
    written_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX correlated_incidents_firing ON correlated_incidents (incident_start) WHERE state = 'firing';
