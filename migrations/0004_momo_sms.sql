-- Forwarded MoMo SMS, every one as received, and the transactions they report.

-- Recorded before it is read, so nothing is lost: a text no pattern reads stays here for review.
create table sms_messages (
    id bigserial primary key,
    endpoint text not null,
    received_at timestamptz not null default now(),
    -- The request body exactly as the forwarder sent it.
    body bytea not null,
    sender text,
    text text,
    -- credited | recorded | duplicate | non_payment | untrusted_sender | no_transaction_id
    -- | no_amount | unparsed | invalid | rate_limited | received (not yet read)
    outcome text not null default 'received',
    -- What each part of the text said (two when a forwarder glued texts together).
    readings jsonb
);

create index sms_messages_for_review on sms_messages (id)
    where outcome in ('unparsed', 'invalid', 'untrusted_sender', 'no_transaction_id', 'no_amount', 'rate_limited');

-- One row per MoMo transaction id: a repeated SMS (or the same transaction reported twice)
-- changes nothing.
create table momo_sms_transactions (
    transaction_id text primary key,
    sms_id bigint not null references sms_messages (id),
    pattern text not null,
    -- credit | debit | failed | reversal | refund
    kind text not null,
    -- Money in (credit, refund) from a trusted sender.
    credited boolean not null,
    amount bigint,
    currency text,
    counterparty text,
    phone text,
    balance bigint,
    fee bigint,
    occurred_at timestamptz,
    created_at timestamptz not null default now()
);
