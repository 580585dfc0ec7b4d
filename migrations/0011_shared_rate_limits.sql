-- Rate-limit budgets shared by every replica (`server.rate_limits: postgres`): one row per
-- counted key with its GCRA "theoretical arrival time", the moment the key's budget is whole
-- again. Unlogged: no WAL per request, and a crash forgets the budgets, which costs nothing
-- that matters (a limit protects, it does not record).
create unlogged table rate_limit_budgets (
    key text primary key,
    tat timestamptz not null
);
