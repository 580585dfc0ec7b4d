//! The registry of diagnostic codes.
//!
//! Owns: every code a user can see, grouped by range. A code that has shipped is never reused for
//! a different mistake: CI scripts and people search for them. `E1xx` are routes.yaml problems,
//! `E2xx` flow syntax, `E3xx` cross-checks between flows, templates and routes, `W1xx` warnings.

/// A stable diagnostic code.
pub type Code = &'static str;

/// Defines each code as a constant and [`ALL`], every code with its doc comment: one source
/// for the constants, `easymo explain-code` and docs/diagnostics.md.
macro_rules! registry {
    ($( $(#[doc = $doc:literal])+ $name:ident = $code:literal; )+) => {
        $( $(#[doc = $doc])+ pub const $name: Code = $code; )+

        /// Every code and what it means, in the order above (grouped by range).
        pub const ALL: &[(Code, &str)] = &[$(($code, concat!($($doc),+))),+];
    };
}

registry! {
    /// A file could not be read.
    IO = "E100";
    /// routes.yaml is not valid YAML.
    YAML_SYNTAX = "E101";
    /// A key that the config model does not know.
    UNKNOWN_FIELD = "E102";
    /// A required key is absent.
    MISSING_FIELD = "E103";
    /// A value of the wrong type or shape.
    INVALID_VALUE = "E104";
    /// Two endpoints share a name.
    DUPLICATE_ENDPOINT_NAME = "E110";
    /// Two endpoints share a path.
    DUPLICATE_ENDPOINT_PATH = "E111";
    /// A secret written literally instead of `${NAME}`.
    LITERAL_SECRET = "E112";
    /// An HMAC endpoint without a secret.
    MISSING_SECRET = "E113";
    /// A CIDR or IP address that does not parse.
    INVALID_CIDR = "E114";
    /// A rate limit of zero requests or a zero window.
    INVALID_RATE_LIMIT = "E115";
    /// A duration that does not parse.
    INVALID_DURATION = "E116";
    /// `${NAME}` refers to an unset environment variable.
    UNSET_ENV = "E117";
    /// An endpoint path that is not an absolute URL path.
    INVALID_PATH = "E118";
    /// A setting that does not fit the endpoint's kind.
    KIND_MISMATCH = "E119";
    /// A live WhatsApp or SMS endpoint that checks nothing (no signature, no address).
    UNAUTHENTICATED = "E120";
    /// An allowlist or trusted-proxy list that covers every address.
    ALLOWS_EVERYONE = "E121";
    /// An SMS regex that does not compile.
    SMS_REGEX = "E130";
    /// An SMS pattern that does not capture a field its kind or flow needs.
    SMS_MISSING_CAPTURE = "E131";
    /// An SMS pattern that captures a field name the engine does not know.
    SMS_UNKNOWN_CAPTURE = "E132";
    /// An alert condition that does not parse.
    ALERT_SYNTAX = "E140";
    /// An alert condition on a metric the engine does not export.
    UNKNOWN_METRIC = "E141";
    /// An alert threshold in a unit that does not fit its metric.
    WRONG_UNIT = "E142";
    /// An alert that names an undeclared channel.
    UNKNOWN_CHANNEL = "E143";
    /// An alert rule's runbook file does not exist.
    MISSING_RUNBOOK = "E144";
    /// An alert taken `on` an endpoint that does not exist, or on a metric that is not per endpoint.
    ALERT_SCOPE = "E145";
    /// Template text over a WhatsApp length limit.
    TEXT_TOO_LONG = "E150";
    /// Too many list rows, sections or buttons.
    TOO_MANY_ITEMS = "E151";
    /// Two reply buttons with the same title or id.
    DUPLICATE_BUTTON = "E152";
    /// A template whose `{{ }}` syntax is broken.
    TEMPLATE_SYNTAX = "E153";
    /// A localized text without an English variant.
    MISSING_ENGLISH = "E154";
    /// A language code the engine does not serve.
    UNKNOWN_LANGUAGE = "E155";
    /// A template text written per language lacks one the service declares it speaks.
    MISSING_LANGUAGE = "E156";
    /// Flow syntax error.
    FLOW_SYNTAX = "E200";
    /// Two flows with one name.
    DUPLICATE_FLOW = "E300";
    /// A reference to a flow that does not exist.
    UNKNOWN_FLOW = "E301";
    /// A reply with a template that does not exist.
    UNKNOWN_TEMPLATE = "E302";
    /// A template variable that the reply never binds.
    UNBOUND_TEMPLATE_VAR = "E303";
    /// A variable that is not defined at that point of the flow.
    UNKNOWN_VARIABLE = "E304";
    /// A call with the wrong number of arguments.
    ARITY = "E305";
    /// An `await` whose target flow does not take exactly one parameter.
    AWAIT_TARGET = "E306";
    /// SQL placeholders and arguments disagree.
    SQL_PLACEHOLDERS = "E307";
    /// One keyword routed twice.
    DUPLICATE_KEYWORD = "E308";
    /// A keyword route that an earlier route always wins over.
    SHADOWED_ROUTE = "E309";
    /// A route or fallback that starts a flow that needs parameters.
    ROUTE_TARGET_PARAMS = "E310";
    /// A flow with two parameters of one name.
    DUPLICATE_PARAM = "E311";
    /// A keyword that normalizes to nothing.
    EMPTY_KEYWORD = "E312";
    /// `cached for` on a query that changes data, or for no time, or for more than a day.
    CACHED_WRITE = "E313";
    /// A list, buttons or location request the flow never awaits an answer to.
    REPLY_NOT_AWAITED = "E314";
    /// An `await` for something other than what the reply before it asks for.
    AWAIT_MISMATCH = "E315";
    /// A comparison with a choice's id that no row or button of the awaited reply sends.
    CHOICE_ID_UNKNOWN = "E316";
    /// Postgres rejects a flow's SQL: a syntax error, a table or column that does not exist,
    /// or a value bound with a type the SQL cannot take.
    SQL_REJECTED = "E320";
    /// A flow query has no description in `.queries/` (it is new or changed): run
    /// `easymo lint --database-url URL --write-offline`.
    SQL_NOT_DESCRIBED = "E321";
    /// Query descriptions were made against another schema (a migration changed since).
    SQL_SCHEMA_CHANGED = "E322";
    /// A template reads a field the value bound to it does not have (a query's columns, or
    /// the known fields of `contact`, `choice`, `location`, …).
    UNKNOWN_FIELD_READ = "E323";
    /// A list's rows are fed a single row (`query_one`), or a single-row template a list.
    ROWS_MISMATCH = "E324";
    /// A template prints a value that can be absent (a nullable column, a contact's profile
    /// name) without a `default`.
    ABSENT_WITHOUT_DEFAULT = "E325";
    /// A flow that no route and no other flow reaches.
    UNREACHABLE_FLOW = "W100";
    /// A statement after `end`, `await` or `call`.
    UNREACHABLE_STMT = "W101";
    /// A binding that the template never uses.
    UNUSED_BINDING = "W102";
    /// A flow file that routes.yaml does not list is not linted.
    UNLISTED_FLOW_FILE = "W103";
    /// A live callback or SMS endpoint that anyone can call.
    OPEN_ENDPOINT = "W104";
    /// A template the runtime sends on its own is not declared.
    MISSING_RUNTIME_TEMPLATE = "W105";
    /// A number's throughput above what Meta grants (1,000 messages a second).
    THROUGHPUT_ABOVE_META = "W106";
    /// A signature required of a sender that signs nothing (MTN's MoMo callbacks), with no
    /// `signer` saying who does.
    SIGNATURE_NOBODY_SENDS = "W107";
    /// A trusted proxy network far wider than a set of load balancers, beside an IP allowlist it
    /// lets any of its hosts get around.
    WIDE_TRUSTED_PROXIES = "W108";
    /// A typo-tolerant keyword within a typo of another route's keyword.
    TYPO_REACH = "W109";
    /// A template no flow replies with and the runtime never sends.
    UNUSED_TEMPLATE = "W110";
    /// A flow that receives the person's answer (`await … -> flow`) and never reads it: every
    /// tap, text or location leads to the same place.
    UNREAD_ANSWER = "W111";
}

#[cfg(test)]
mod tests {
    use super::ALL;

    #[test]
    fn codes_are_unique_well_formed_and_explained() {
        let mut seen = std::collections::BTreeSet::new();
        for (code, meaning) in ALL {
            assert!(seen.insert(*code), "{code} is used twice");
            assert!(
                code.len() == 4
                    && (code.starts_with('E') || code.starts_with('W'))
                    && code[1..].chars().all(|c| c.is_ascii_digit()),
                "{code}"
            );
            assert!(meaning.trim().ends_with('.'), "{code}: {meaning:?}");
        }
        assert!(ALL.len() > 60);
    }
}
