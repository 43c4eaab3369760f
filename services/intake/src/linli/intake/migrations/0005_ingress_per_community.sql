-- Ingress de-duplication is per community (issue #10, ADR 0028): the same CloudEvent
-- (source, id) sent for two communities is two commands, each with its own need. Keyed
-- globally, the second was answered "duplicate" with the first community's need id.
ALTER TABLE needs DROP CONSTRAINT needs_ingress_source_ingress_event_id_key;
ALTER TABLE needs ADD CONSTRAINT needs_ingress_once_per_community
    UNIQUE (community, ingress_source, ingress_event_id);
