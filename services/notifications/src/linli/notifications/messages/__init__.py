"""Messages to people: families, operators and volunteers told in words they understand.

* `api.py`: `/v1/communities/{community}/recipients` (operators and admins): add, list,
  delete; addresses shown masked.
* `service.py`: use cases: recipients, and `settle` (the outcome of one send: sent,
  retried, or failed with `notification.failed` in the outbox).
* `store.py`: all SQL of messages (the `people_*` tables of `0002_people.sql`).
* `consumer.py`: the durable `notifications-people` (the types in `plan.CONSUMED`) and
  `record_messages`: one message per (event, recipient) in the inbox transaction.
* `plan.py` (which event tells whom what), `templates.py` (zh-CN and en; never names,
  addresses or free text), `schedule.py` (quiet hours, backoff): pure functions.
* `providers.py`: e-mail over SMTP, SMS to a file, the console.
* `sender.py`: the background sender, on servicekit's `WakeLoop`.

The composition root wires it (`linli.notifications.app.wire_messages`). It needs no
other notifications table, so it runs alone on servicekit's tables and `0002_people.sql`.
"""
