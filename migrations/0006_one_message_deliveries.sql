-- Nearly every WhatsApp delivery holds exactly one message. Such a delivery is now kept on its
-- message's row (endpoint, headers kept, raw body) instead of in a deliveries row beside it:
-- one row written per message instead of two, on the hottest path the engine has.
--
-- deliveries keeps every other delivery: several messages or statuses, errors, a repeat of a
-- message already recorded, and anything recorded before it is processed.
alter table inbound_messages
    add column endpoint text,
    add column headers jsonb,
    add column body bytea,
    alter column delivery_id drop not null;

-- Every existing row has a delivery_id (it was NOT NULL until now), so the check is not run
-- over them: validating would hold the table's lock, and the webhooks' writes, for a full scan.
alter table inbound_messages
    add constraint inbound_messages_delivery_kept
    check (delivery_id is not null or body is not null) not valid;
