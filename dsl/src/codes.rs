//! The registry of diagnostic codes.
//!
//! Owns: every code a user can see, grouped by range. A code that has shipped is never reused for
//! a different mistake: CI scripts and people search for them. `E1xx` are routes.yaml problems,
//! `E2xx` flow syntax, `E3xx` cross-checks between flows, templates and routes, `W1xx` warnings.

/// A stable diagnostic code.
pub type Code = &'static str;

/// A file could not be read.
pub const IO: Code = "E100";
/// routes.yaml is not valid YAML.
pub const YAML_SYNTAX: Code = "E101";
/// A key that the config model does not know.
pub const UNKNOWN_FIELD: Code = "E102";
/// A required key is absent.
pub const MISSING_FIELD: Code = "E103";
/// A value of the wrong type or shape.
pub const INVALID_VALUE: Code = "E104";
/// Two endpoints share a name.
pub const DUPLICATE_ENDPOINT_NAME: Code = "E110";
/// Two endpoints share a path.
pub const DUPLICATE_ENDPOINT_PATH: Code = "E111";
/// A secret written literally instead of `${NAME}`.
pub const LITERAL_SECRET: Code = "E112";
/// An HMAC endpoint without a secret.
pub const MISSING_SECRET: Code = "E113";
/// A CIDR or IP address that does not parse.
pub const INVALID_CIDR: Code = "E114";
/// A rate limit of zero requests or a zero window.
pub const INVALID_RATE_LIMIT: Code = "E115";
/// A duration that does not parse.
pub const INVALID_DURATION: Code = "E116";
/// `${NAME}` refers to an unset environment variable.
pub const UNSET_ENV: Code = "E117";
/// An endpoint path that is not an absolute URL path.
pub const INVALID_PATH: Code = "E118";
/// A setting that does not fit the endpoint's kind.
pub const KIND_MISMATCH: Code = "E119";
/// A live WhatsApp or SMS endpoint that checks nothing (no signature, no address).
pub const UNAUTHENTICATED: Code = "E120";
/// An allowlist or trusted-proxy list that covers every address.
pub const ALLOWS_EVERYONE: Code = "E121";
/// An SMS regex that does not compile.
pub const SMS_REGEX: Code = "E130";
/// An SMS pattern that does not capture a field its kind or flow needs.
pub const SMS_MISSING_CAPTURE: Code = "E131";
/// An SMS pattern that captures a field name the engine does not know.
pub const SMS_UNKNOWN_CAPTURE: Code = "E132";
/// An alert condition that does not parse.
pub const ALERT_SYNTAX: Code = "E140";
/// An alert condition on a metric the engine does not export.
pub const UNKNOWN_METRIC: Code = "E141";
/// An alert threshold in a unit that does not fit its metric.
pub const WRONG_UNIT: Code = "E142";
/// An alert that names an undeclared channel.
pub const UNKNOWN_CHANNEL: Code = "E143";
/// An alert rule's runbook file does not exist.
pub const MISSING_RUNBOOK: Code = "E144";
/// An alert taken `on` an endpoint that does not exist, or on a metric that is not per endpoint.
pub const ALERT_SCOPE: Code = "E145";
/// Template text over a WhatsApp length limit.
pub const TEXT_TOO_LONG: Code = "E150";
/// Too many list rows, sections or buttons.
pub const TOO_MANY_ITEMS: Code = "E151";
/// Two reply buttons with the same title or id.
pub const DUPLICATE_BUTTON: Code = "E152";
/// A template whose `{{ }}` syntax is broken.
pub const TEMPLATE_SYNTAX: Code = "E153";
/// A localized text without an English variant.
pub const MISSING_ENGLISH: Code = "E154";
/// A language code the engine does not serve.
pub const UNKNOWN_LANGUAGE: Code = "E155";
/// A template text written per language lacks one the service declares it speaks.
pub const MISSING_LANGUAGE: Code = "E156";
/// Flow syntax error.
pub const FLOW_SYNTAX: Code = "E200";
/// Two flows with one name.
pub const DUPLICATE_FLOW: Code = "E300";
/// A reference to a flow that does not exist.
pub const UNKNOWN_FLOW: Code = "E301";
/// A reply with a template that does not exist.
pub const UNKNOWN_TEMPLATE: Code = "E302";
/// A template variable that the reply never binds.
pub const UNBOUND_TEMPLATE_VAR: Code = "E303";
/// A variable that is not defined at that point of the flow.
pub const UNKNOWN_VARIABLE: Code = "E304";
/// A call with the wrong number of arguments.
pub const ARITY: Code = "E305";
/// An `await` whose target flow does not take exactly one parameter.
pub const AWAIT_TARGET: Code = "E306";
/// SQL placeholders and arguments disagree.
pub const SQL_PLACEHOLDERS: Code = "E307";
/// One keyword routed twice.
pub const DUPLICATE_KEYWORD: Code = "E308";
/// A keyword route that an earlier route always wins over.
pub const SHADOWED_ROUTE: Code = "E309";
/// A route or fallback that starts a flow that needs parameters.
pub const ROUTE_TARGET_PARAMS: Code = "E310";
/// A flow with two parameters of one name.
pub const DUPLICATE_PARAM: Code = "E311";
/// A keyword that normalizes to nothing.
pub const EMPTY_KEYWORD: Code = "E312";
/// `cached for` on a query that changes data, or for no time, or for more than a day.
pub const CACHED_WRITE: Code = "E313";
/// A list, buttons or location request the flow never awaits an answer to.
pub const REPLY_NOT_AWAITED: Code = "E314";
/// An `await` for something other than what the reply before it asks for.
pub const AWAIT_MISMATCH: Code = "E315";
/// A comparison with a choice's id that no row or button of the awaited reply sends.
pub const CHOICE_ID_UNKNOWN: Code = "E316";
/// A flow that no route and no other flow reaches.
pub const UNREACHABLE_FLOW: Code = "W100";
/// A statement after `end`, `await` or `call`.
pub const UNREACHABLE_STMT: Code = "W101";
/// A binding that the template never uses.
pub const UNUSED_BINDING: Code = "W102";
/// A flow file that routes.yaml does not list is not linted.
pub const UNLISTED_FLOW_FILE: Code = "W103";
/// A live callback or SMS endpoint that anyone can call.
pub const OPEN_ENDPOINT: Code = "W104";
/// A template the runtime sends on its own is not declared.
pub const MISSING_RUNTIME_TEMPLATE: Code = "W105";
/// A number's throughput above what Meta grants (1,000 messages a second).
pub const THROUGHPUT_ABOVE_META: Code = "W106";
/// A signature required of a sender that signs nothing (MTN's MoMo callbacks), with no
/// `signer` saying who does.
pub const SIGNATURE_NOBODY_SENDS: Code = "W107";
/// A trusted proxy network far wider than a set of load balancers, beside an IP allowlist it
/// lets any of its hosts get around.
pub const WIDE_TRUSTED_PROXIES: Code = "W108";
/// A typo-tolerant keyword within a typo of another route's keyword.
pub const TYPO_REACH: Code = "W109";
