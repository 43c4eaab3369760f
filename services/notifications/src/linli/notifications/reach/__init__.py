"""Partners reached where they are (ADR 0043): a partner's own delivery preferences
(its webhook, its duty contacts, its quiet hours), offers pushed with signed one-use
links, and reminders before a due visit or repair."""
