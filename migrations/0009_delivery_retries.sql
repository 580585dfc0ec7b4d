-- Deliveries recorded but not processed are retried by the running engine (one process at a
-- time, under the `redelivery` lease), with backoff, until processed or declared poison.
alter table deliveries
    add column attempts integer not null default 0,
    -- When the next attempt is due; null: as soon as the grace after recording has passed.
    add column next_attempt_at timestamptz,
    -- Why the delivery (or one of its messages) can never be processed: a NUL byte, a message
    -- without an id, a timestamp out of range, a data error from Postgres, attempts used up.
    -- Kept whole (body bytes intact) for `easymo dlq --inbound`.
    add column poison text;

create index deliveries_poison on deliveries (id) where poison is not null;
