-- Sending: the outbox becomes the queue the sender works from, and dead is a state of a row
-- (with a reason class, Meta's code, the attempts and the last error), not a copy elsewhere.

-- `failed` stays allowed for rows a status webhook marked before this migration; from now on a
-- failed status moves a row to `dead` with reason `failed`. `discarded`: an operator gave up on
-- a dead row (`easymo dlq discard`).
alter table outbox drop constraint outbox_status_check;
alter table outbox add constraint outbox_status_check
    check (status in ('pending', 'sending', 'sent', 'delivered', 'read', 'failed', 'dead', 'discarded'))
    not valid;

alter table outbox
    -- A row that failed for a passing reason is not tried again before this.
    add column next_attempt_at timestamptz,
    -- The process holding the row (in memory or in a call) and until when: after that, any
    -- sweeper may take it over.
    add column leased_by text,
    add column lease_until timestamptz,
    add column sent_at timestamptz,
    add column dead_reason text,
    -- Meta's `error.code` of the last failure.
    add column error_code integer,
    -- Times the dead-letter processor or an operator re-queued the row.
    add column redrives integer not null default 0,
    -- When an operator re-queued it (`easymo dlq retry`): `deliver_within` counts from here.
    add column requeued_at timestamptz;

-- One row per call to the Graph API, written before the call and completed after it: a row
-- whose attempt never completed was in flight when its process died.
create table outbox_attempts (
    id bigserial primary key,
    outbox_id bigint not null,
    attempt integer not null,
    process text not null,
    started_at timestamptz not null default now(),
    finished_at timestamptz,
    http_status integer,
    error_code integer,
    latency_ms integer,
    error text
);

create index outbox_attempts_by_row on outbox_attempts (outbox_id);

-- Replies to one recipient leave in outbox order: the sender asks whether an earlier row of
-- the same recipient is still outstanding.
create index outbox_outstanding_by_recipient on outbox (recipient, id)
    where status in ('pending', 'sending');

-- The dead-letter queue, read by `easymo dlq` and the re-drive processor.
create index outbox_dead on outbox (id) where status = 'dead';

-- The sweeper's scan: rows not yet sent, including those whose sending process died mid-call.
drop index outbox_pending;
create index outbox_unsent on outbox (id) where status in ('pending', 'sending');
