//! Planner statistics for the engine's own fast-growing tables, kept current while they are
//! young.
//!
//! Owns: whether the tables are still young, and analyzing a hot table once it has doubled
//! since it was last analyzed. Why: each connection prepares the engine's statements once and,
//! after five runs, keeps a generic plan made with the statistics of that moment. A new
//! database's tables grow from nothing much faster than autovacuum (one visit a minute)
//! analyzes them, and a plan made while a table held fifty rows probes it by a full scan, for
//! every message, until the next analyze: in a load test on a fresh database, throughput fell
//! from 5,000 to 1,700 messages a second within ten seconds. So while any hot table is young,
//! transactions plan every statement for its values (a little more work, never a full scan),
//! and tables are analyzed on doubling, so the generic plans made once they are grown use
//! grown-up statistics. Must not touch flows' tables: they are the services' business and are
//! not written on every message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;

/// The tables written for every message that the engine's statements also probe by key
/// (deliveries are only appended to, and read back by a partial index on startup): while any
/// of them is small, statements are planned per value.
const HOT_TABLES: &[&str] = &["contacts", "sessions", "inbound_messages", "outbox"];
/// Analyzed when they double, besides the hot tables, without deciding youth: the sender's
/// results statement probes them by key, and its cached generic plan must follow their growth
/// even where status webhooks start, or attempts are first recorded, long after the others grew.
const ALSO_ANALYZED: &[&str] = &["outbox_attempts", "message_statuses"];
/// How often the statistics are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Changes since the last analyze that always warrant one (below this, a table is tiny).
const MIN_CHANGES: f64 = 500.0;
/// Past this many rows a table is left to autovacuum, whose 10% rule is then soon enough.
const GROWN_UP: f64 = 5_000_000.0;
/// The statistics target of these analyzes (a sample of 300 times as many rows).
const SMALL_SAMPLE: &str = "set local default_statistics_target = 10";
/// Below this many rows a table is young: a plan made now may not suit it for long.
const YOUNG_ROWS: i64 = 2_000;

/// Young until the first look at the statistics says otherwise.
static YOUNG: AtomicBool = AtomicBool::new(true);

/// Whether some hot table is still young, as of the last look (every second while serving).
pub fn tables_are_young() -> bool {
    YOUNG.load(Ordering::Relaxed)
}

/// Runs [`analyze_grown`] every second, forever.
pub async fn keep_current(pool: PgPool) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match smallest_table(&pool).await {
            Ok(rows) => {
                let young = rows < YOUNG_ROWS;
                if YOUNG.swap(young, Ordering::Relaxed) != young {
                    // Operators reading a latency change around this moment should know the
                    // plans changed with it.
                    if young {
                        tracing::info!(
                            event = "store.tables_young",
                            smallest_table_rows = rows,
                            "Hot tables look young (also after a statistics reset): statements are planned per value."
                        );
                    } else {
                        tracing::info!(
                            event = "store.tables_grown",
                            smallest_table_rows = rows,
                            "Hot tables have grown: the sender records results with a generic plan, and webhook transactions no longer force per-value plans."
                        );
                    }
                }
            }
            Err(error) => {
                tracing::debug!(event = "store.stats_failed", error = %error, "Could not read table statistics.");
            }
        }
        match analyze_grown(&pool).await {
            Ok(analyzed) if !analyzed.is_empty() => {
                tracing::debug!(event = "store.analyzed", tables = %analyzed.join(","), "Analyzed tables that had doubled.");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(event = "store.analyze_failed", error = %error, "Could not refresh table statistics.");
            }
        }
    }
}

/// The live rows of the smallest hot table (as the statistics collector counts them).
pub async fn smallest_table(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select coalesce(min(n_live_tup), 0) from pg_stat_user_tables
         where relname = any($1) and schemaname = current_schema()",
    )
    .bind(HOT_TABLES)
    .fetch_one(pool)
    .await
}

/// Analyzes every hot table, and each of [`ALSO_ANALYZED`], that has changed by as many rows as
/// it held at its last analyze (or has now, if fewer: a truncate empties it without an
/// analyze), and by at least [`MIN_CHANGES`]; returns their names.
pub async fn analyze_grown(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let tables = [HOT_TABLES, ALSO_ANALYZED].concat();
    let grown: Vec<String> = sqlx::query_scalar(
        "select s.relname::text from pg_stat_user_tables s join pg_class c on c.oid = s.relid
         where s.relname = any($1) and s.schemaname = current_schema()
           and s.n_mod_since_analyze >= greatest($2, least(c.reltuples, s.n_live_tup))
           and c.reltuples < $3
         order by s.relname",
    )
    .bind(&tables)
    .bind(MIN_CHANGES)
    .bind(GROWN_UP)
    .fetch_all(pool)
    .await?;
    for table in &grown {
        // Only names from `tables` reach this statement (the query above filters on them).
        if tables.contains(&table.as_str()) {
            // The plans at stake probe unique keys: they depend on a table's size, which any
            // sample measures, not on how its values are spread. A tenth of the default sample
            // (3,000 rows instead of 30,000) made these analyzes, on a fresh database under
            // load, a tenth of the database's time.
            let mut tx = pool.begin().await?;
            sqlx::query(SMALL_SAMPLE).execute(&mut *tx).await?;
            sqlx::query(&format!("analyze {table}"))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
    }
    Ok(grown)
}
