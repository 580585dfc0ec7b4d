//! `easymo dlq`: the dead-letter queue as an operator sees it, short, aligned and scriptable.
//!
//! Owns: the commands' output (text tables or JSON), and that of its inbound counterpart,
//! `dlq inbound` (deliveries kept as poison, [`crate::inbound::redelivery`]). Must not decide
//! what is dead or send: a retry only re-queues, and the running engine sends at each number's
//! cap, in outbox order per recipient.

use std::fmt::Write as _;

use sqlx::PgPool;

use crate::logging::mask;
use crate::store::outbox::{self as store, DeadFilter};

/// Rows `list` shows at most.
pub const LIST_LIMIT: i64 = 1_000;

/// Text for people, JSON for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// Aligned columns.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

/// `dlq list`.
pub async fn list(
    pool: &PgPool,
    filter: &DeadFilter,
    output: Output,
) -> Result<String, sqlx::Error> {
    let rows = store::dead(pool, filter, LIST_LIMIT).await?;
    if output == Output::Json {
        return Ok(json(&rows));
    }
    let mut table = vec![[
        "ID".to_owned(),
        "DEAD AT".to_owned(),
        "REASON".to_owned(),
        "CODE".to_owned(),
        "TRIES".to_owned(),
        "RECIPIENT".to_owned(),
        "TEMPLATE".to_owned(),
        "LAST ERROR".to_owned(),
    ]];
    for row in &rows {
        table.push([
            row.id.to_string(),
            row.dead_at.clone(),
            row.reason.clone().unwrap_or_default(),
            row.code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".to_owned()),
            row.attempts.to_string(),
            mask(&row.recipient),
            row.template.clone(),
            one_line(row.last_error.as_deref().unwrap_or("-"), 60),
        ]);
    }
    let mut out = aligned(&table);
    let _ = writeln!(
        out,
        "{} dead row{}{}",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        if rows.len() as i64 == LIST_LIMIT {
            " (the first ones; narrow the filter for the rest)"
        } else {
            ""
        }
    );
    Ok(out)
}

/// `dlq inbound`: deliveries kept as poison, newest first.
pub async fn inbound(pool: &PgPool, output: Output) -> Result<String, sqlx::Error> {
    let rows = crate::store::deliveries::poison(pool, LIST_LIMIT).await?;
    if output == Output::Json {
        return Ok(json(&rows));
    }
    let mut table = vec![[
        "ID".to_owned(),
        "RECEIVED AT".to_owned(),
        "ENDPOINT".to_owned(),
        "TRIES".to_owned(),
        "BYTES".to_owned(),
        "REASON".to_owned(),
    ]];
    for row in &rows {
        table.push([
            row.id.to_string(),
            row.received_at.clone(),
            row.endpoint.clone(),
            row.attempts.to_string(),
            row.bytes.to_string(),
            one_line(&crate::logging::scrub(&row.reason), 100),
        ]);
    }
    let mut out = aligned(&table);
    let _ = writeln!(
        out,
        "{} poison deliver{} (kept whole in `deliveries`, never processed)",
        rows.len(),
        if rows.len() == 1 { "y" } else { "ies" },
    );
    Ok(out)
}

/// `dlq show ID`.
pub async fn show(pool: &PgPool, id: i64, output: Output) -> Result<Option<String>, sqlx::Error> {
    let Some((row, attempts)) = store::detail(pool, id).await? else {
        return Ok(None);
    };
    if output == Output::Json {
        return Ok(Some(json(
            &serde_json::json!({"row": row, "attempts": attempts}),
        )));
    }
    let mut out = String::new();
    let field = |out: &mut String, name: &str, value: &str| {
        let _ = writeln!(out, "{name:<12}{value}");
    };
    field(&mut out, "id", &row.id.to_string());
    field(&mut out, "status", &row.status);
    field(&mut out, "reason", row.reason.as_deref().unwrap_or("-"));
    field(
        &mut out,
        "code",
        &row.code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".to_owned()),
    );
    field(&mut out, "recipient", &row.recipient);
    field(&mut out, "from number", &row.phone_number_id);
    field(&mut out, "template", &row.template);
    field(&mut out, "wamid", row.wamid.as_deref().unwrap_or("-"));
    field(&mut out, "queued", &row.created_at);
    field(&mut out, "redrives", &row.redrives.to_string());
    field(
        &mut out,
        "last error",
        row.last_error.as_deref().unwrap_or("-"),
    );
    let _ = writeln!(out, "body");
    let body = serde_json::to_string_pretty(&row.body.0).unwrap_or_default();
    for line in body.lines() {
        let _ = writeln!(out, "  {line}");
    }
    let mut table = vec![[
        "#".to_owned(),
        "STARTED".to_owned(),
        "HTTP".to_owned(),
        "CODE".to_owned(),
        "MS".to_owned(),
        "PROCESS".to_owned(),
        "ERROR".to_owned(),
    ]];
    for attempt in &attempts {
        let dash = || "-".to_owned();
        table.push([
            attempt.attempt.to_string(),
            attempt.started_at.clone(),
            attempt.http_status.map_or_else(dash, |s| s.to_string()),
            attempt.error_code.map_or_else(dash, |c| c.to_string()),
            attempt.latency_ms.map_or_else(dash, |m| m.to_string()),
            attempt.process.clone(),
            one_line(attempt.error.as_deref().unwrap_or("-"), 60),
        ]);
    }
    let _ = writeln!(out, "attempts");
    for line in aligned(&table).lines() {
        let _ = writeln!(out, "  {line}");
    }
    Ok(Some(out))
}

/// `dlq retry` and `dlq discard`: what was (or, dry, would be) done.
pub fn acted(verb: &str, ids: &[i64], dry_run: bool, output: Output) -> String {
    if output == Output::Json {
        return json(&serde_json::json!({"action": verb, "dry_run": dry_run, "ids": ids}));
    }
    let listed: Vec<String> = ids.iter().map(i64::to_string).collect();
    let would = if dry_run { "would be " } else { "" };
    let mut out = format!(
        "{} row{} {would}{verb}",
        ids.len(),
        if ids.len() == 1 { "" } else { "s" },
    );
    if !listed.is_empty() {
        let _ = write!(out, ": {}", listed.join(" "));
    }
    out.push('\n');
    out
}

/// `dlq stats`.
pub async fn stats(pool: &PgPool, output: Output) -> Result<String, sqlx::Error> {
    let (stats, discarded) = store::dead_stats(pool).await?;
    let total: i64 = stats.iter().map(|s| s.rows).sum();
    if output == Output::Json {
        return Ok(json(
            &serde_json::json!({"dead": total, "discarded": discarded, "by_reason": stats}),
        ));
    }
    let mut table = vec![[
        "REASON".to_owned(),
        "ROWS".to_owned(),
        "OLDEST".to_owned(),
        "NEWEST".to_owned(),
    ]];
    for stat in &stats {
        table.push([
            stat.reason.clone(),
            stat.rows.to_string(),
            stat.oldest.clone(),
            stat.newest.clone(),
        ]);
    }
    let mut out = aligned(&table);
    let _ = writeln!(out, "{total} dead, {discarded} discarded");
    Ok(out)
}

fn json(value: &impl serde::Serialize) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
fn aligned<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0_usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The first line of `text`, cut to `limit` characters.
fn one_line(text: &str, limit: usize) -> String {
    crate::render::cut(text.lines().next().unwrap_or_default(), limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell() {
        let table = [
            ["ID".to_owned(), "REASON".to_owned(), "ERROR".to_owned()],
            ["7".to_owned(), "window_closed".to_owned(), "x".to_owned()],
            ["1234".to_owned(), "expired".to_owned(), "".to_owned()],
        ];
        assert_eq!(
            aligned(&table),
            "ID    REASON         ERROR\n7     window_closed  x\n1234  expired\n"
        );
    }

    #[test]
    fn actions_say_what_was_done_or_would_be() {
        assert_eq!(
            acted("re-queued", &[3, 5], false, Output::Text),
            "2 rows re-queued: 3 5\n"
        );
        assert_eq!(
            acted("discarded", &[], true, Output::Text),
            "0 rows would be discarded\n"
        );
    }
}
