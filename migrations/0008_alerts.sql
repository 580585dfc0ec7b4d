-- Alert evaluation. Every engine process adds its figures per interval (alert_rollups); one
-- process at a time, the holder of the `alerts` lease, reads them, evaluates the rules and keeps
-- each rule's state (alert_states) so that `for` progress and firing alerts survive a restart
-- or a change of leader.

create table alert_rollups (
    -- Start of the evaluation interval the figures were counted in.
    bucket timestamptz not null,
    -- The process that counted them (host, pid and a random part).
    process text not null,
    endpoint text not null,
    requests bigint not null default 0,
    -- Answers with a 5xx status.
    errors bigint not null default 0,
    -- Messages whose flow failed (answered 200, as Meta requires, but an error all the same).
    failed_flows bigint not null default 0,
    -- Requests over a rate limit: counted apart, never errors.
    limited bigint not null default 0,
    -- Latency histogram: upper edges in seconds (+Inf last) and the count in each bucket.
    latency_edges float8[] not null,
    latency_counts bigint[] not null,
    primary key (bucket, process, endpoint)
);

create index alert_rollups_bucket on alert_rollups (bucket);

create table alert_states (
    -- The rule's alert name (`ErrorRateCritical`).
    alert text primary key,
    state text not null check (state in ('pending', 'firing')),
    -- When the condition started to hold (Prometheus' activeAt).
    active_since timestamptz not null,
    fired_at timestamptz,
    -- When channels were last told it fires (for repeat_interval).
    notified_at timestamptz,
    value double precision,
    updated_at timestamptz not null default now()
);

-- Leases make one process at a time do a job (`alerts`: evaluate and notify). A holder renews
-- its lease well before it expires; a holder that dies is replaced once it has.
create table leases (
    name text primary key,
    holder text not null,
    expires_at timestamptz not null
);
