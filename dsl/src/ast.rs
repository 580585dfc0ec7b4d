//! The typed syntax tree of flow files and alert conditions.
//!
//! Owns: the shapes the parser produces. Every name, expression and statement keeps its span so
//! that checks and runtime errors can point at the source. Must not hold behaviour beyond small
//! accessors; checks live in `check`, evaluation in the engine's flow runtime.

use crate::span::{Span, Spanned};

/// A name as written, with its span.
pub type Ident = Spanned<String>;

/// One parsed `.flow` file.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowFile {
    /// Flows in source order.
    pub flows: Vec<Flow>,
}

/// `flow name(params) { body }`
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    /// The flow's name.
    pub name: Ident,
    /// Parameter names, bound from `call` arguments or the awaited input.
    pub params: Vec<Ident>,
    /// The statements.
    pub body: Block,
    /// The whole flow.
    pub span: Span,
}

/// A list of statements.
pub type Block = Vec<Spanned<Stmt>>;

/// One step of a flow.
#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// `let name = query "..." with args`
    Let {
        /// The variable bound to the result.
        name: Ident,
        /// The query.
        query: Query,
    },
    /// `exec "..." with args`
    Exec(Query),
    /// `if cond { then } else { otherwise }`
    If {
        /// The condition.
        cond: Spanned<Expr>,
        /// Run when the condition holds.
        then: Block,
        /// Run otherwise; `else if` nests another `If` here.
        otherwise: Option<Block>,
    },
    /// `reply template with name = value, ...`
    Reply {
        /// Template name in routes.yaml.
        template: Ident,
        /// Variables handed to the template.
        bindings: Vec<Binding>,
    },
    /// `await kind -> flow`
    Await {
        /// What input is expected.
        kind: Spanned<InputKind>,
        /// The flow that receives it as its single parameter.
        next: Ident,
    },
    /// `set name = value`
    Set {
        /// Session key.
        name: Ident,
        /// New value.
        value: Spanned<Expr>,
    },
    /// `clear name`
    Clear {
        /// Session key.
        name: Ident,
    },
    /// `choose_language value`: the contact's own choice of language.
    ChooseLanguage(Spanned<Expr>),
    /// `call flow(args)`: continue in another flow; statements after it do not run.
    Call {
        /// Target flow.
        flow: Ident,
        /// Arguments, bound to the target's parameters in order.
        args: Vec<Spanned<Expr>>,
    },
    /// `request_payment amount, phone [for external_id] -> next`: a MoMo request-to-pay,
    /// then `next` with the payment; statements after it do not run.
    RequestPayment {
        /// Whole units of the configured currency.
        amount: Spanned<Expr>,
        /// The payer's MSISDN.
        phone: Spanned<Expr>,
        /// Our reference for the payment (generated when absent).
        external_id: Option<Spanned<Expr>>,
        /// The flow that continues, with the payment as its single parameter.
        next: Ident,
    },
    /// `end`
    End,
}

/// A SQL statement with positional arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Rows or a single row.
    pub kind: QueryKind,
    /// The SQL text, unescaped; its span covers the string literal including quotes.
    pub sql: Spanned<String>,
    /// Bound to `$1`, `$2`, ... in order.
    pub args: Vec<Spanned<Expr>>,
    /// `cached for D`: how long a result may be reused; its span covers the clause.
    pub cache: Option<Spanned<std::time::Duration>>,
}

/// How many rows a query yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// `query`: a list of rows (possibly empty).
    Rows,
    /// `query_one`: the first row, or null.
    One,
    /// `exec`: nothing.
    Exec,
}

/// `name = value` in a reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Template variable.
    pub name: Ident,
    /// Its value.
    pub value: Spanned<Expr>,
}

/// What an `await` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Any text message.
    Text,
    /// A list row or reply button, identified by its id.
    Choice,
    /// A shared location.
    Location,
}

impl InputKind {
    /// The keyword as written.
    pub fn as_str(self) -> &'static str {
        match self {
            InputKind::Text => "text",
            InputKind::Choice => "choice",
            InputKind::Location => "location",
        }
    }
}

/// An expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A constant.
    Literal(Literal),
    /// `name.field.field`
    Path(Vec<Ident>),
    /// `not e`
    Not(Box<Spanned<Expr>>),
    /// `e is empty` (`negated`: `is not empty`)
    IsEmpty {
        /// The tested value.
        expr: Box<Spanned<Expr>>,
        /// True for `is not empty`.
        negated: bool,
    },
    /// `a op b`
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left operand.
        lhs: Box<Spanned<Expr>>,
        /// Right operand.
        rhs: Box<Spanned<Expr>>,
    },
}

impl Expr {
    /// Calls `f` on every path in the expression, outermost first.
    pub fn visit_paths<'a>(&'a self, f: &mut dyn FnMut(&'a [Ident])) {
        match self {
            Expr::Literal(_) => {}
            Expr::Path(path) => f(path),
            Expr::Not(inner) | Expr::IsEmpty { expr: inner, .. } => inner.visit_paths(f),
            Expr::Binary { lhs, rhs, .. } => {
                lhs.visit_paths(f);
                rhs.visit_paths(f);
            }
        }
    }
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A string.
    String(String),
    /// A number.
    Number(f64),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// Binary operators, loosest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `or`
    Or,
    /// `and`
    And,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A parsed alert condition: `metric [on endpoint] op value[unit] [for duration]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The metric name.
    pub metric: Ident,
    /// The endpoint it is taken on (`on NAME`); `None` for all endpoints together.
    pub scope: Option<Ident>,
    /// The comparison.
    pub op: Spanned<CompareOp>,
    /// The threshold as written.
    pub threshold: Spanned<f64>,
    /// The threshold's unit, if any.
    pub unit: Option<Spanned<Unit>>,
    /// How long the condition must hold before firing.
    pub sustained: Option<Spanned<std::time::Duration>>,
}

/// Comparison in an alert condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl CompareOp {
    /// The comparison as written (and as PromQL writes it).
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
        }
    }

    /// Applies the comparison.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            CompareOp::Gt => value > threshold,
            CompareOp::Ge => value >= threshold,
            CompareOp::Lt => value < threshold,
            CompareOp::Le => value <= threshold,
            CompareOp::Eq => value == threshold,
            CompareOp::Ne => value != threshold,
        }
    }
}

/// Unit of an alert threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `%`
    Percent,
    /// `ms`
    Millis,
    /// `s`
    Seconds,
    /// `m`
    Minutes,
    /// `h`
    Hours,
}

impl Unit {
    /// The unit as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Percent => "%",
            Unit::Millis => "ms",
            Unit::Seconds => "s",
            Unit::Minutes => "m",
            Unit::Hours => "h",
        }
    }

    /// True for time units.
    pub fn is_time(self) -> bool {
        !matches!(self, Unit::Percent)
    }
}
