-- Fixed-window request counters for public endpoints (servicekit ratelimit.py, ADR 0041):
-- one row per bucket and client, keyed by a digest of the client's address (never the
-- address itself), shared by every replica through the service's database.
CREATE TABLE rate_limit_hits (
    bucket       text        NOT NULL,
    client_sha256 bytea      NOT NULL,
    hits         integer     NOT NULL,
    window_start timestamptz NOT NULL,
    PRIMARY KEY (bucket, client_sha256)
);
CREATE INDEX rate_limit_hits_by_window ON rate_limit_hits (bucket, window_start);
