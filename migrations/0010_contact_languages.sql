-- How a contact's language was decided, so that the engine knows which evidence may change it:
-- `default` (the endpoint's, nothing said yet), `inferred` (from the words that started a
-- conversation), `chosen` (the contact picked it from the language menu; only another choice
-- changes it).
alter table contacts
    add column language_source text not null default 'default'
        check (language_source in ('default', 'inferred', 'chosen')),
    -- The language of the last conversation-starting keyword, when it differed from the
    -- contact's: a second one in a row switches an inferred language, so one word does not.
    add column language_hint text;

-- Before this, only an operator could have set a language other than English: keep it as if
-- the contact had chosen it.
update contacts set language_source = 'chosen' where language <> 'en';
