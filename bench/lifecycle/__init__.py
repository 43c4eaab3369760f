"""The whole-lifecycle benchmark behind `make bench` (issue #8, item 6).

It starts the local stack (`python -m linli.devstack run --no-actors`) in a temporary
directory, gives it capacity of its own, and drives it open loop at a ladder of
offered rates: needs are POSTed to intake at fixed times whatever the answers, a
simulated canteen and volunteers accept and report every offer through the partners
API, and every event is watched on NATS. Beside the measured figures it measures the
raw ceiling of the same nats-server and PostgreSQL, and it writes JSON, a Markdown
report and a chart.

Modules:

- `stack`: start and stop the local stack, find its processes;
- `procstat`: CPU seconds and memory of processes from /proc;
- `world`: the bench's residents, canteen, volunteers, their tokens and capacity;
- `load`: the open-loop generator, the NATS observer and the simulated helpers;
- `ceiling`: raw nats-py JetStream hops and asyncpg reserve transactions;
- `report`: percentiles, targets, JSON, Markdown and the PNG chart.
"""
