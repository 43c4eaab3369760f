"""`make faults`: Linli driven through injected faults, then checked from PostgreSQL and
JetStream (../shared/RELIABILITY.md rows 1-9, issue #10 "Deliver").

The services run as processes (tests/harness `Lifecycle`, two replicas each) on a
nats-server and a PostgreSQL of this run's own, so the driver can kill and restart them.
"""
