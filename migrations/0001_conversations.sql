-- The engine's own tables: who we talk to, where each conversation is, every delivery and
-- message as received, and every reply as sent.

create table contacts (
    id bigserial primary key,
    -- Phone-number id (digits, no '+'). Absent for username users from 2026.
    wa_id text unique,
    -- Business-scoped user id (e.g. 'US.1349…'), when Meta sends one.
    user_id text unique,
    name text,
    language text not null default 'en' check (language in ('en', 'rw', 'fr')),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint contacts_identified check (wa_id is not null or user_id is not null)
);

create table sessions (
    contact_id bigint primary key references contacts (id) on delete cascade,
    -- The flow that receives the contact's next message, and what it waits for.
    awaiting_flow text,
    awaiting_kind text check (awaiting_kind in ('text', 'choice', 'location')),
    -- Values kept with `set`.
    context jsonb not null default '{}',
    expires_at timestamptz not null,
    updated_at timestamptz not null default now()
);

-- Every signed delivery, recorded before the webhook answers, so nothing is lost between the
-- answer and the processing.
create table deliveries (
    id bigserial primary key,
    endpoint text not null,
    received_at timestamptz not null default now(),
    headers jsonb not null,
    body bytea not null,
    processed_at timestamptz,
    error text
);

create index deliveries_unprocessed on deliveries (id) where processed_at is null;

-- One row per provider message id: Meta delivers at least once, and the primary key makes a
-- repeated delivery a no-op.
create table inbound_messages (
    provider_message_id text primary key,
    delivery_id bigint not null references deliveries (id),
    contact_id bigint references contacts (id),
    kind text not null,
    payload jsonb not null,
    sent_at timestamptz,
    received_at timestamptz not null default now(),
    flow text,
    -- answered | stale | unsupported | ignored | failed
    outcome text not null
);

create index inbound_messages_by_contact on inbound_messages (contact_id, received_at);

-- Replies, as the exact Graph API request bodies, written in the same transaction as the
-- message that caused them.
create table outbox (
    id bigserial primary key,
    contact_id bigint references contacts (id),
    recipient text not null,
    phone_number_id text not null,
    template text not null,
    body jsonb not null,
    status text not null default 'pending'
        check (status in ('pending', 'sending', 'sent', 'delivered', 'read', 'failed', 'dead')),
    -- The wamid the Graph API returned; statuses refer to it.
    provider_message_id text unique,
    inbound_message_id text references inbound_messages (provider_message_id),
    attempts integer not null default 0,
    last_error text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create index outbox_pending on outbox (id) where status = 'pending';
create index outbox_by_inbound on outbox (inbound_message_id);

-- Status webhooks as received (sent, delivered, read, failed), including ones for messages
-- this engine did not send: several apps may share a business account.
create table message_statuses (
    id bigserial primary key,
    provider_message_id text not null,
    status text not null,
    recipient text,
    at timestamptz,
    payload jsonb not null,
    received_at timestamptz not null default now()
);

create index message_statuses_by_message on message_statuses (provider_message_id);
