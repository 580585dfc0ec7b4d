//! The flow runtime: runs checked flows against Postgres, one step at a time, inside the
//! transaction of the message that started them.
//!
//! Owns: evaluating expressions, binding query values, `if`, `reply` (rendering to the outbox
//! list), `await` (recorded in the session), `set`/`clear`, `call` (a jump: the caller does not
//! resume) and `end`. Every query is one round trip (`store::run_flow_query`), except a `cached
//! for` query answered from [`crate::query_cache`]. Must not commit,
//! roll back or decide routing: `process` does.

use std::collections::HashMap;

use easymo_dsl::ast::{BinaryOp, Block, Expr, InputKind, Literal, QueryKind, Stmt};
use serde_json::{Map, Value};
use sqlx::{Postgres, Transaction};

use crate::config::Config;
use crate::payments;
use crate::reload::Caches;
use crate::render::{self, Rendered};
use crate::store::{self, conversation::Session, Shape};

/// How many `call`s one message may make: a loop of calls is a bug, not a conversation.
const MAX_JUMPS: usize = 32;

/// Why a flow failed. The message's transaction step is rolled back and the user gets the
/// friendly error reply.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The flow does not exist (a reload removed it while a session awaited it).
    #[error("unknown flow `{0}`")]
    UnknownFlow(String),
    /// A query failed.
    #[error("flow `{flow}`: query failed: {source}")]
    Query {
        /// The flow.
        flow: String,
        /// The database error.
        source: sqlx::Error,
    },
    /// A reply could not be rendered.
    #[error("flow `{flow}`: {source}")]
    Render {
        /// The flow.
        flow: String,
        /// Why.
        source: render::RenderError,
    },
    /// A `request_payment` that cannot be made.
    #[error("flow `{flow}`: cannot request a payment: {reason}")]
    Payment {
        /// The flow.
        flow: String,
        /// Why.
        reason: String,
    },
    /// `choose_language` with a value that is not a language easyMO serves.
    #[error("flow `{flow}`: `choose_language` got {value}, not one of en, rw, fr")]
    UnknownLanguage {
        /// The flow.
        flow: String,
        /// What it got.
        value: String,
    },
    /// Too many `call`s in one turn.
    #[error("flow `{0}`: more than {MAX_JUMPS} calls in one message; is there a loop?")]
    TooManyJumps(String),
}

/// One turn of a conversation: the state a message's flows read and change.
pub struct Turn<'a> {
    /// The live config.
    pub config: &'a Config,
    /// What is kept for as long as that config serves.
    pub caches: &'a Caches,
    /// `contact` as flows see it.
    pub contact: Value,
    /// The contact's language.
    pub language: String,
    /// The contact's row and how their language stands, when there is a contact to keep it on.
    pub standing: Option<(i64, crate::language::Standing)>,
    /// Where replies go.
    pub recipient: String,
    /// `message` as flows see it.
    pub message: Value,
    /// The session, changed by `set`, `clear` and `await`.
    pub session: Session,
    /// Replies, in order.
    pub replies: Vec<Rendered>,
    /// Flows run, in order (for logs and tests).
    pub trace: Vec<String>,
    /// The bindings of the last reply, kept so a paged list can render its next page.
    pub pager_vars: Option<Map<String, Value>>,
    /// The WhatsApp number the conversation runs on (`metadata.phone_number_id`).
    pub business_number: String,
    /// Whether the turn may act beyond the conversation (record requests to pay). Off for
    /// `easymo simulate`: a simulated payment is described, not recorded.
    pub effects: bool,
    /// Requests to pay recorded in this turn (sent once the transaction commits).
    pub payments_requested: usize,
    /// The last payment requested (or described) in this turn, as the next flow sees it.
    pub last_payment: Option<Value>,
    /// The savepoint taken before this turn's first database statement, so a failure undoes
    /// only this turn's writes: its name while not yet taken, and whether it was.
    pub savepoint: Savepoint,
}

/// A savepoint a turn takes lazily: a turn that never touches the database (a cached menu, a
/// location request) costs no round trip for it.
#[derive(Debug, Clone, Default)]
pub struct Savepoint {
    /// An identifier made by the runtime (`m0`, `m1`, …), never from input.
    pub name: Option<String>,
    /// Taken in the transaction.
    pub taken: bool,
}

impl Savepoint {
    /// A savepoint called `m{n}`.
    pub fn numbered(n: usize) -> Self {
        Savepoint {
            name: Some(format!("m{n}")),
            taken: false,
        }
    }
}

enum Next {
    /// Fall through to the next statement.
    Continue,
    /// Stop the turn (`end`, `await`).
    Stop,
    /// Continue in another flow.
    Jump(String, Vec<Value>),
}

impl Turn<'_> {
    /// Runs `flow` with `args`, following `call`s, until it ends, awaits or falls off the end.
    pub async fn run(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        flow: &str,
        args: Vec<Value>,
    ) -> Result<(), FlowError> {
        // A new turn starts: the previous `await` has been answered (or abandoned).
        self.session.awaiting_flow = None;
        self.session.awaiting_kind = None;
        let mut current = (flow.to_owned(), args);
        for _ in 0..MAX_JUMPS {
            let (name, args) = current;
            let config = self.config;
            let definition = config
                .flows
                .get(&name)
                .ok_or_else(|| FlowError::UnknownFlow(name.clone()))?;
            self.trace.push(name.clone());
            let mut scope: HashMap<String, Value> = definition
                .params
                .iter()
                .map(|p| p.node.clone())
                .zip(args)
                .collect();
            match Box::pin(self.block(tx, &name, &definition.body, &mut scope)).await? {
                Next::Jump(to, args) => current = (to, args),
                Next::Continue | Next::Stop => return Ok(()),
            }
        }
        Err(FlowError::TooManyJumps(flow.to_owned()))
    }

    async fn block(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        flow: &str,
        block: &Block,
        scope: &mut HashMap<String, Value>,
    ) -> Result<Next, FlowError> {
        for stmt in block {
            match &stmt.node {
                Stmt::Let { name, query } => {
                    let value = self.query(tx, flow, query, scope).await?;
                    scope.insert(name.node.clone(), value);
                }
                Stmt::Exec(query) => {
                    self.query(tx, flow, query, scope).await?;
                }
                Stmt::If {
                    cond,
                    then,
                    otherwise,
                } => {
                    let branch = if truthy(&self.eval(&cond.node, scope)) {
                        Some(then)
                    } else {
                        otherwise.as_ref()
                    };
                    if let Some(branch) = branch {
                        let next = Box::pin(self.block(tx, flow, branch, scope)).await?;
                        if !matches!(next, Next::Continue) {
                            return Ok(next);
                        }
                    }
                }
                Stmt::Reply { template, bindings } => {
                    let mut bound = Map::new();
                    for binding in bindings {
                        bound.insert(
                            binding.name.node.clone(),
                            self.eval(&binding.value.node, scope),
                        );
                    }
                    let rendered = self.render(flow, &template.node, &bound, 0)?;
                    self.pager_vars = Some(bound);
                    self.replies.push(rendered);
                }
                Stmt::Await { kind, next } => {
                    self.session.awaiting_flow = Some(next.node.clone());
                    self.session.awaiting_kind = Some(kind.node.as_str().to_owned());
                    return Ok(Next::Stop);
                }
                Stmt::Set { name, value } => {
                    let value = self.eval(&value.node, scope);
                    self.session.context.insert(name.node.clone(), value);
                }
                Stmt::Clear { name } => {
                    self.session.context.remove(&name.node);
                }
                Stmt::ChooseLanguage(value) => {
                    let value = self.eval(&value.node, scope);
                    let Some(language) = value
                        .as_str()
                        .filter(|l| crate::config::templates::LANGUAGES.contains(l))
                    else {
                        return Err(FlowError::UnknownLanguage {
                            flow: flow.to_owned(),
                            value: value.to_string(),
                        });
                    };
                    self.take_savepoint(tx, flow).await?;
                    self.settle_language(tx, crate::language::chosen(language))
                        .await
                        .map_err(|source| FlowError::Query {
                            flow: flow.to_owned(),
                            source,
                        })?;
                }
                Stmt::Call { flow: target, args } => {
                    let args = args.iter().map(|a| self.eval(&a.node, scope)).collect();
                    return Ok(Next::Jump(target.node.clone(), args));
                }
                Stmt::RequestPayment {
                    amount,
                    phone,
                    external_id,
                    next,
                } => {
                    let amount = self.eval(&amount.node, scope);
                    let phone = self.eval(&phone.node, scope);
                    let external_id = external_id.as_ref().map(|e| self.eval(&e.node, scope));
                    let payment = self
                        .request_payment(tx, flow, &amount, &phone, external_id.as_ref())
                        .await?;
                    return Ok(Next::Jump(next.node.clone(), vec![payment]));
                }
                Stmt::End => return Ok(Next::Stop),
            }
        }
        Ok(Next::Continue)
    }

    async fn query(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        flow: &str,
        query: &easymo_dsl::ast::Query,
        scope: &HashMap<String, Value>,
    ) -> Result<Value, FlowError> {
        let args: Vec<Value> = query
            .args
            .iter()
            .map(|a| self.eval(&a.node, scope))
            .collect();
        let shape = match query.kind {
            QueryKind::Rows => Shape::Rows,
            QueryKind::One => Shape::One,
            QueryKind::Exec => Shape::Nothing,
        };
        let cache = &self.caches.queries;
        // `query` and `query_one` of the same SQL give different shapes: the shape is part of
        // the key.
        let key = match shape {
            Shape::Rows => format!("rows:{}", query.sql.node),
            Shape::One => format!("one:{}", query.sql.node),
            Shape::Nothing => String::new(),
        };
        if query.cache.is_some() {
            if let Some(value) = cache.get(&key, &args) {
                return Ok(value);
            }
        }
        self.take_savepoint(tx, flow).await?;
        let value = store::run_flow_query(tx, &query.sql.node, &args, shape)
            .await
            .map_err(|source| FlowError::Query {
                flow: flow.to_owned(),
                source,
            })?;
        if let Some(ttl) = &query.cache {
            cache.put(&key, &args, &value, ttl.node);
        }
        Ok(value)
    }

    /// Keeps `next` as the contact's language standing and answers in it from now on.
    pub async fn settle_language(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        next: crate::language::Standing,
    ) -> Result<(), sqlx::Error> {
        let Some((contact_id, now)) = self.standing.as_mut() else {
            return Ok(());
        };
        crate::store::conversation::set_language(
            tx,
            *contact_id,
            &next.language,
            next.source.as_str(),
            next.hint.as_deref(),
        )
        .await?;
        self.language.clone_from(&next.language);
        self.contact["language"] = Value::from(next.language.as_str());
        *now = next;
        Ok(())
    }

    /// Takes the turn's savepoint before its first database statement.
    async fn take_savepoint(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        flow: &str,
    ) -> Result<(), FlowError> {
        let Some(name) = self
            .savepoint
            .name
            .as_deref()
            .filter(|_| !self.savepoint.taken)
        else {
            return Ok(());
        };
        store::savepoint(tx, name)
            .await
            .map_err(|source| FlowError::Query {
                flow: flow.to_owned(),
                source,
            })?;
        self.savepoint.taken = true;
        Ok(())
    }

    /// Records a request to pay (sent by `payments` once the transaction commits) and returns
    /// the payment as the next flow sees it.
    async fn request_payment(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        flow: &str,
        amount: &Value,
        phone: &Value,
        external_id: Option<&Value>,
    ) -> Result<Value, FlowError> {
        let tx = if self.effects {
            self.take_savepoint(tx, flow).await?;
            Some(tx)
        } else {
            None
        };
        let recorded = tx.is_some();
        let ask = payments::Ask {
            amount,
            phone,
            external_id,
            contact_id: self.contact.get("id").and_then(Value::as_i64),
            phone_number_id: &self.business_number,
        };
        let payment = payments::request(tx, self.config.momo.as_ref(), ask)
            .await
            .map_err(|error| match error {
                payments::RequestError::Refused(reason) => FlowError::Payment {
                    flow: flow.to_owned(),
                    reason,
                },
                payments::RequestError::Database(source) => FlowError::Query {
                    flow: flow.to_owned(),
                    source,
                },
            })?;
        if recorded {
            self.payments_requested += 1;
        }
        self.last_payment = Some(payment.clone());
        Ok(payment)
    }

    /// Renders a template for this contact with the reply's bindings `bound` over the implicit
    /// variables (`contact`, `session`, `message`).
    pub fn render(
        &self,
        flow: &str,
        template: &str,
        bound: &Map<String, Value>,
        offset: usize,
    ) -> Result<Rendered, FlowError> {
        let definition = self
            .config
            .templates
            .get(template)
            .ok_or_else(|| FlowError::Render {
                flow: flow.to_owned(),
                source: render::RenderError::Unknown(template.to_owned()),
            })?;
        let rendered = match &definition.reads {
            // Only what the template reads is gathered: the key of a kept reply, and all
            // the template engine converts.
            Some(reads) => {
                let mut vars = Map::new();
                for name in reads.names.iter() {
                    if let Some(value) =
                        bound.get(name).cloned().or_else(|| self.implicit_var(name))
                    {
                        vars.insert(name.clone(), value);
                    }
                }
                self.caches.replies.render(
                    definition,
                    reads,
                    &self.language,
                    &vars,
                    &self.recipient,
                    offset,
                )
            }
            // A text that does not compile: rendering says which, with everything at hand.
            None => {
                let mut vars = self.implicit();
                vars.extend(bound.iter().map(|(k, v)| (k.clone(), v.clone())));
                render::render(
                    template,
                    &definition.shape,
                    &self.language,
                    &vars,
                    &self.recipient,
                    offset,
                )
            }
        };
        rendered.map_err(|source| FlowError::Render {
            flow: flow.to_owned(),
            source,
        })
    }

    /// One of `contact`, `session` and `message`.
    fn implicit_var(&self, name: &str) -> Option<Value> {
        match name {
            "contact" => Some(self.contact.clone()),
            "session" => Some(Value::Object(self.session.context.clone())),
            "message" => Some(self.message.clone()),
            _ => None,
        }
    }

    /// `contact`, `session` and `message`, which every template may read.
    pub fn implicit(&self) -> Map<String, Value> {
        ["contact", "session", "message"]
            .into_iter()
            .filter_map(|name| Some((name.to_owned(), self.implicit_var(name)?)))
            .collect()
    }

    fn eval(&self, expr: &Expr, scope: &HashMap<String, Value>) -> Value {
        match expr {
            Expr::Literal(Literal::String(s)) => Value::String(s.clone()),
            Expr::Literal(Literal::Number(n)) => number(*n),
            Expr::Literal(Literal::Bool(b)) => Value::Bool(*b),
            Expr::Literal(Literal::Null) => Value::Null,
            Expr::Path(path) => {
                let Some((head, fields)) = path.split_first() else {
                    return Value::Null;
                };
                let root = match head.node.as_str() {
                    name if scope.contains_key(name) => {
                        scope.get(name).cloned().unwrap_or(Value::Null)
                    }
                    "contact" => self.contact.clone(),
                    "session" => Value::Object(self.session.context.clone()),
                    "message" => self.message.clone(),
                    _ => Value::Null,
                };
                fields.iter().fold(root, |value, field| {
                    value.get(&field.node).cloned().unwrap_or(Value::Null)
                })
            }
            Expr::Not(inner) => Value::Bool(!truthy(&self.eval(&inner.node, scope))),
            Expr::IsEmpty { expr, negated } => {
                Value::Bool(is_empty(&self.eval(&expr.node, scope)) != *negated)
            }
            Expr::Binary { op, lhs, rhs } => {
                let l = self.eval(&lhs.node, scope);
                match op {
                    BinaryOp::And => {
                        Value::Bool(truthy(&l) && truthy(&self.eval(&rhs.node, scope)))
                    }
                    BinaryOp::Or => Value::Bool(truthy(&l) || truthy(&self.eval(&rhs.node, scope))),
                    op => {
                        let r = self.eval(&rhs.node, scope);
                        Value::Bool(compare(*op, &l, &r))
                    }
                }
            }
        }
    }
}

/// The value an awaiting flow receives for a message of `kind`.
pub fn input_kind(kind: &str) -> Option<InputKind> {
    match kind {
        "text" => Some(InputKind::Text),
        "choice" => Some(InputKind::Choice),
        "location" => Some(InputKind::Location),
        _ => None,
    }
}

fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn is_empty(value: &Value) -> bool {
    !truthy(value) && !matches!(value, Value::Bool(false) | Value::Number(_))
}

/// Comparison with the loose equality conversations need: `choice.id == 3` holds for the row
/// id `"3"`.
fn compare(op: BinaryOp, l: &Value, r: &Value) -> bool {
    let as_number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    let ordering = match (as_number(l), as_number(r)) {
        (Some(a), Some(b)) => a.partial_cmp(&b),
        _ => match (l, r) {
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            _ => (l == r).then_some(std::cmp::Ordering::Equal),
        },
    };
    match op {
        BinaryOp::Eq => ordering == Some(std::cmp::Ordering::Equal),
        BinaryOp::Ne => ordering != Some(std::cmp::Ordering::Equal),
        BinaryOp::Lt => ordering == Some(std::cmp::Ordering::Less),
        BinaryOp::Le => matches!(
            ordering,
            Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
        ),
        BinaryOp::Gt => ordering == Some(std::cmp::Ordering::Greater),
        BinaryOp::Ge => matches!(
            ordering,
            Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
        ),
        BinaryOp::And | BinaryOp::Or => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn comparisons_are_loose_between_numbers_and_numeric_text() {
        assert!(compare(BinaryOp::Eq, &json!("3"), &json!(3)));
        assert!(compare(BinaryOp::Eq, &json!("jobs"), &json!("jobs")));
        assert!(compare(BinaryOp::Ne, &json!("jobs"), &json!("shop")));
        assert!(compare(BinaryOp::Lt, &json!(2), &json!("10")));
        assert!(!compare(BinaryOp::Eq, &Value::Null, &json!(0)));
        assert!(compare(BinaryOp::Eq, &Value::Null, &Value::Null));
    }

    #[test]
    fn emptiness() {
        for empty in [Value::Null, json!(""), json!([]), json!({})] {
            assert!(is_empty(&empty), "{empty}");
        }
        for full in [
            json!(0),
            json!(false),
            json!("x"),
            json!([1]),
            json!({"a": 1}),
        ] {
            assert!(!is_empty(&full), "{full}");
        }
    }
}
