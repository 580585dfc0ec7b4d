-- Less written per message, on the hottest path the engine has.
--
-- A one-message delivery's raw body is the message: it is kept once, in deliveries.body, and
-- inbound_messages.payload stays null for it. Deliveries with several messages still keep each
-- message's JSON here.
alter table inbound_messages alter column payload drop not null;

-- These two references are written together, by one statement, from rows the engine built in
-- the same transaction (see store::conversation::finish_batch); checking them again row by row
-- cost about a tenth of the database's time per message. References to contacts stay.
alter table inbound_messages drop constraint inbound_messages_delivery_id_fkey;
alter table outbox drop constraint outbox_inbound_message_id_fkey;

-- Contacts are upserted by the statement before, under the sender's lock, and never deleted
-- while the engine runs; messages and replies keep the id as a plain column.
alter table inbound_messages drop constraint inbound_messages_contact_id_fkey;
alter table outbox drop constraint outbox_contact_id_fkey;

-- A reply has no wamid until the Graph API answers: index only those that have one, instead
-- of a null entry for every new reply.
alter table outbox drop constraint outbox_provider_message_id_key;
create unique index outbox_by_provider_message_id on outbox (provider_message_id)
    where provider_message_id is not null;

-- The same for sessions. Besides the cost, the check's plan is cached per connection: made
-- while contacts was small, it scanned the whole table for every session written.
-- Nothing deletes contacts; whoever adds that deletes the session with it.
alter table sessions drop constraint sessions_contact_id_fkey;

-- Indexes no query reads yet, each one more entry per message: add them back with the query
-- that needs them.
drop index outbox_by_inbound;
drop index inbound_messages_by_contact;

-- Most contacts have a phone number and no business-scoped id: index only the ids there are.
alter table contacts drop constraint contacts_user_id_key;
create unique index contacts_by_user_id on contacts (user_id) where user_id is not null;
