//! `${NAME}` references: secrets live in the environment, never in routes.yaml.
//!
//! Owns: recognising a reference and resolving it from an injected map (tests never call
//! `set_var`). A reference is a whole value, so a secret can never change the YAML's structure
//! and spans stay exact. Must not read the process environment itself except in
//! [`Env::from_process`].

use std::collections::HashMap;

/// Environment variables available to the config.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// The running process's environment.
    pub fn from_process() -> Self {
        Env {
            vars: std::env::vars().collect(),
        }
    }

    /// An explicit map, for tests.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// The value of `name`, if set and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Whether `${NAME}` references must resolve.
#[derive(Debug, Clone)]
pub enum EnvPolicy {
    /// Check that secrets are references, but do not look them up (`easymo lint`, offline CI).
    Unchecked,
    /// Every reference must be set (`easymo serve`, `easymo lint --env`).
    Resolve(Env),
}

/// A secret as configured: the variable it comes from and, once resolved, its value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// The environment variable name.
    pub var: String,
    /// The value; `None` when loaded with [`EnvPolicy::Unchecked`].
    pub value: Option<String>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the value.
        write!(f, "Secret(${{{}}})", self.var)
    }
}

/// The variable name if `value` is exactly one `${NAME}` reference.
pub fn reference(value: &str) -> Option<&str> {
    let name = value.trim().strip_prefix("${")?.strip_suffix('}')?;
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_whole_uppercase_references() {
        assert_eq!(
            reference("${WHATSAPP_APP_SECRET}"),
            Some("WHATSAPP_APP_SECRET")
        );
        assert_eq!(reference(" ${A1} "), Some("A1"));
        assert_eq!(reference("prefix-${A}"), None);
        assert_eq!(reference("${lower}"), None);
        assert_eq!(reference("${}"), None);
        assert_eq!(reference("${1A}"), None);
        assert_eq!(reference("hunter2"), None);
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret {
            var: "X".into(),
            value: Some("hunter2".into()),
        };
        assert_eq!(format!("{s:?}"), "Secret(${X})");
    }
}
