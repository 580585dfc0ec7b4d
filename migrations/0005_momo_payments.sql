-- MTN MoMo payments the engine asked for, and every callback as received.

create table momo_payments (
    -- The X-Reference-Id: created and stored before the request-to-pay is sent, so a retry
    -- re-sends the same id and MoMo cannot debit twice.
    reference_id uuid primary key,
    -- collection (request to pay) | disbursement (transfer)
    product text not null default 'collection' check (product in ('collection', 'disbursement')),
    -- Ours; MoMo does not require it to be unique, so it is not the key.
    external_id text not null,
    amount bigint not null,
    currency text not null,
    -- The payer's (collection) or payee's (disbursement) MSISDN.
    party text not null,
    contact_id bigint,
    -- Where the payer's notification is sent from.
    phone_number_id text,
    -- Only ever PENDING -> SUCCESSFUL or PENDING -> FAILED.
    status text not null default 'PENDING' check (status in ('PENDING', 'SUCCESSFUL', 'FAILED')),
    financial_transaction_id text,
    -- A string in MTN's own texts, an object {code, message} in its SDK models.
    reason jsonb,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    settled_at timestamptz,
    -- When MoMo's status endpoint was last asked about it (payments with no callback are polled).
    polled_at timestamptz,
    -- When MoMo accepted the request-to-pay (202, or 409: accepted by an earlier attempt). Until
    -- then the request is re-sent, always with the same reference id.
    requested_at timestamptz,
    request_attempts integer not null default 0,
    last_request_at timestamptz,
    request_error text
);

create index momo_payments_unsent on momo_payments (created_at)
    where requested_at is null and status = 'PENDING';

create index momo_payments_by_external_id on momo_payments (external_id);
create index momo_payments_pending on momo_payments (created_at) where status = 'PENDING';

-- Callbacks are unsigned in reality: recorded as received, believed only after MoMo's own
-- status endpoint agrees.
create table momo_callbacks (
    id bigserial primary key,
    endpoint text not null,
    method text not null,
    received_at timestamptz not null default now(),
    headers jsonb not null,
    body bytea not null,
    -- settled | already_settled | pending | unknown_payment | contradicted | unconfirmed | invalid
    outcome text not null default 'received',
    reference_id uuid,
    detail text
);
