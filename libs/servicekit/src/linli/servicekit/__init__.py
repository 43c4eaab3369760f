"""Shared plumbing for Linli services.

A service package holds only its domain; everything that all four services need to
talk to NATS JetStream and PostgreSQL reliably lives here: settings, logging,
telemetry, the database pool and migrations, the transactional outbox and its relay,
the idempotent inbox, reliable JetStream consumption with dead letters, health
endpoints and HTTP authentication.
"""
