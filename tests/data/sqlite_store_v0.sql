-- The SQLite store schema before rollups (PRAGMA user_version 0), as comparer/stores/sqlite.py
-- created it: test data for the migration at open (tests/test_store_migration.py).
CREATE TABLE IF NOT EXISTS exchanges (
    id TEXT PRIMARY KEY,
    request_id TEXT,
    ts REAL,
    method TEXT,
    url TEXT,
    route TEXT,
    request TEXT,
    v1 TEXT,
    v2 TEXT,
    v1_status INTEGER,
    v2_status INTEGER,
    v1_latency_ms REAL,
    v2_latency_ms REAL,
    v1_bucket INTEGER,
    v2_bucket INTEGER,
    v1_ts REAL,
    v2_ts REAL,
    outcome TEXT NOT NULL DEFAULT 'pending',
    diff TEXT,
    diff_paths TEXT,
    signature TEXT,
    flags TEXT,
    compared_at REAL,
    replay_delay_ms REAL,
    stale INTEGER NOT NULL DEFAULT 0,
    noise TEXT
);
CREATE INDEX IF NOT EXISTS exchanges_request_id ON exchanges(request_id);
CREATE INDEX IF NOT EXISTS exchanges_ts ON exchanges(ts);
CREATE INDEX IF NOT EXISTS exchanges_route ON exchanges(route, method);
CREATE INDEX IF NOT EXISTS exchanges_outcome ON exchanges(outcome, id);
CREATE INDEX IF NOT EXISTS exchanges_signature ON exchanges(signature);
CREATE INDEX IF NOT EXISTS exchanges_stale ON exchanges(stale) WHERE stale = 1;

CREATE TABLE IF NOT EXISTS route_stats (
    method TEXT NOT NULL, route TEXT NOT NULL, outcome TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (method, route, outcome)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS route_latency (
    method TEXT NOT NULL, route TEXT NOT NULL, side TEXT NOT NULL, bucket INTEGER NOT NULL,
    n INTEGER NOT NULL, PRIMARY KEY (method, route, side, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS route_status (
    method TEXT NOT NULL, route TEXT NOT NULL, v1_status INTEGER NOT NULL,
    v2_status INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (method, route, v1_status, v2_status)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS noise (
    method TEXT NOT NULL, route TEXT NOT NULL, path TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (method, route, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS noise_observed (
    method TEXT NOT NULL, route TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (method, route)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS suspected (
    method TEXT NOT NULL, route TEXT NOT NULL, path TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (method, route, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repeats (
    method TEXT NOT NULL, route TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (method, route)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS routes (route TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rule_stats (
    rule TEXT PRIMARY KEY, suppressed INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS classes (
    signature TEXT PRIMARY KEY, method TEXT, route TEXT, paths TEXT NOT NULL,
    count INTEGER NOT NULL, first_seen REAL, last_seen REAL, examples TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'new', ticket TEXT, note TEXT, reopened_at REAL,
    updated_at REAL);

CREATE TRIGGER IF NOT EXISTS exchanges_insert AFTER INSERT ON exchanges BEGIN
INSERT INTO route_stats (method, route, outcome, n)
                     SELECT coalesce(new.method, '?'), coalesce(new.route, '?'), new.outcome, 1 WHERE 1
                     ON CONFLICT (method, route, outcome) DO UPDATE SET n = n + 1;
INSERT INTO route_latency (method, route, side, bucket, n)
                 SELECT coalesce(new.method, '?'), coalesce(new.route, '?'), 'v1', new.v1_bucket, 1
                 WHERE new.outcome IN ('match', 'mismatch') AND new.v1_bucket IS NOT NULL
                 ON CONFLICT (method, route, side, bucket) DO UPDATE SET n = n + 1;
INSERT INTO route_latency (method, route, side, bucket, n)
                 SELECT coalesce(new.method, '?'), coalesce(new.route, '?'), 'v2', new.v2_bucket, 1
                 WHERE new.outcome IN ('match', 'mismatch') AND new.v2_bucket IS NOT NULL
                 ON CONFLICT (method, route, side, bucket) DO UPDATE SET n = n + 1;
INSERT INTO route_status (method, route, v1_status, v2_status, n)
                 SELECT coalesce(new.method, '?'), coalesce(new.route, '?'), coalesce(new.v1_status, 0), coalesce(new.v2_status, 0), 1
                 WHERE new.outcome IN ('match', 'mismatch')
                 ON CONFLICT (method, route, v1_status, v2_status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS exchanges_delete AFTER DELETE ON exchanges BEGIN
UPDATE route_stats SET n = n - 1
                 WHERE method = coalesce(old.method, '?') AND route = coalesce(old.route, '?') AND outcome = old.outcome;
UPDATE route_latency SET n = n - 1
             WHERE old.outcome IN ('match', 'mismatch') AND method = coalesce(old.method, '?') AND route = coalesce(old.route, '?')
             AND side = 'v1' AND bucket = old.v1_bucket;
UPDATE route_latency SET n = n - 1
             WHERE old.outcome IN ('match', 'mismatch') AND method = coalesce(old.method, '?') AND route = coalesce(old.route, '?')
             AND side = 'v2' AND bucket = old.v2_bucket;
UPDATE route_status SET n = n - 1
             WHERE old.outcome IN ('match', 'mismatch') AND method = coalesce(old.method, '?') AND route = coalesce(old.route, '?')
             AND v1_status = coalesce(old.v1_status, 0)
             AND v2_status = coalesce(old.v2_status, 0);
END;
CREATE TRIGGER IF NOT EXISTS exchanges_update AFTER UPDATE OF method, route, outcome ON exchanges
WHEN old.method IS NOT new.method OR old.route IS NOT new.route OR old.outcome IS NOT new.outcome
BEGIN
UPDATE route_stats SET n = n - 1
                 WHERE method = coalesce(old.method, '?') AND route = coalesce(old.route, '?') AND outcome = old.outcome;
UPDATE route_latency SET n = n - 1
             WHERE old.outcome IN ('match', 'mismatch') AND method = coalesce(old.method, '?') AND route = coalesce(old.route, '?')
             AND side = 'v1' AND bucket = old.v1_bucket;
UPDATE route_latency SET n = n - 1
             WHERE old.outcome IN ('match', 'mismatch') AND method = coalesce(old.method, '?') AND route = coalesce(old.route, '?')
             AND side = 'v2' AND bucket = old.v2_bucket;
UPDATE route_status SET n = n - 1
             WHERE old.outcome IN ('match', 'mismatch') AND method = coalesce(old.method, '?') AND route = coalesce(old.route, '?')
             AND v1_status = coalesce(old.v1_status, 0)
             AND v2_status = coalesce(old.v2_status, 0);
INSERT INTO route_stats (method, route, outcome, n)
                     SELECT coalesce(new.method, '?'), coalesce(new.route, '?'), new.outcome, 1 WHERE 1
                     ON CONFLICT (method, route, outcome) DO UPDATE SET n = n + 1;
INSERT INTO route_latency (method, route, side, bucket, n)
                 SELECT coalesce(new.method, '?'), coalesce(new.route, '?'), 'v1', new.v1_bucket, 1
                 WHERE new.outcome IN ('match', 'mismatch') AND new.v1_bucket IS NOT NULL
                 ON CONFLICT (method, route, side, bucket) DO UPDATE SET n = n + 1;
INSERT INTO route_latency (method, route, side, bucket, n)
                 SELECT coalesce(new.method, '?'), coalesce(new.route, '?'), 'v2', new.v2_bucket, 1
                 WHERE new.outcome IN ('match', 'mismatch') AND new.v2_bucket IS NOT NULL
                 ON CONFLICT (method, route, side, bucket) DO UPDATE SET n = n + 1;
INSERT INTO route_status (method, route, v1_status, v2_status, n)
                 SELECT coalesce(new.method, '?'), coalesce(new.route, '?'), coalesce(new.v1_status, 0), coalesce(new.v2_status, 0), 1
                 WHERE new.outcome IN ('match', 'mismatch')
                 ON CONFLICT (method, route, v1_status, v2_status) DO UPDATE SET n = n + 1;
END;
