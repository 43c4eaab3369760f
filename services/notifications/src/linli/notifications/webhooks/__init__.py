"""Webhooks and the per-community event stream, for community apps.

* `api.py`: `/v1/subscriptions…` (roles `system`, `admin`), thin handlers over
  `service.py`.
* `stream.py`: `/v1/communities/{community}/events`, Server-Sent Events from JetStream
  replay. It reads no table, so it has no use case or SQL of its own.
* `service.py`: `WebhookService`: register, list, pause and resume, rotate, delete,
  attempts, replay.
* `store.py`: all SQL of webhooks: subscriptions, deliveries, attempts, need kinds,
  parked events.
* `consumer.py`: the durable `notifications` (every event) and `record_deliveries`: one
  delivery per matching subscription, in the inbox transaction.
* `delivery.py`: `DeliveryWorker`, on servicekit's `WakeLoop`: per-endpoint leases,
  signed POSTs, retries, disabling.
* `ssrf.py`: the endpoint URL guard (at registration and at every connect).
* Secrets at rest are sealed with servicekit's `sealing.SecretBox` (Fernet).

The composition root wires it (`linli.notifications.app.wire_webhooks`).
"""
