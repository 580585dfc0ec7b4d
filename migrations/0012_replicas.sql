-- Every engine process on this database says it is alive, and which config it serves, every
-- few seconds: `/admin/config` on any replica shows them all, which one leads the background
-- work, and a replica whose routes.yaml differs from the others.
create table replicas (
    process text primary key,
    config_version text not null,
    started_at timestamptz not null default now(),
    seen_at timestamptz not null default now()
);
