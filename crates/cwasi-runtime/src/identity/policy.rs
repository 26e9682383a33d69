//! A served function's call policy: which callers may call it. A pure
//! function over plain values, with table tests, like the selector.
//!
//! Semantics are Dapr's: with no policy every caller is allowed (as
//! before policies existed); with one, a caller that no rule matches is
//! refused with `DENIED`, and the message names the caller, the function
//! and the rules.
//!
//! A rule is `<namespace>/<function>[@<node>]`. Each part is a name, `*`
//! (anything), or a name's start followed by `*` (`team-*`); `*` alone is
//! `*/*@*`. A missing node is any node. A function part `*` also matches
//! the host's own calls, which have no function name.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::CallerIdentity;
use crate::error::{CallError, ErrorCode};

/// One part of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// `*`.
    Any,
    /// A name.
    Exact(Box<str>),
    /// A name's start, then `*`.
    Prefix(Box<str>),
}

impl Part {
    fn parse(text: &str, what: &str) -> Result<Part, String> {
        if text == "*" {
            return Ok(Part::Any);
        }
        let (name, prefix) = match text.strip_suffix('*') {
            Some(start) => (start, true),
            None => (text, false),
        };
        cwasi_abi::validate_name(name).map_err(|e| format!("its {what} {text:?}: {}", e.rule()))?;
        Ok(if prefix {
            Part::Prefix(name.into())
        } else {
            Part::Exact(name.into())
        })
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Part::Any => true,
            Part::Exact(name) => **name == *value,
            Part::Prefix(start) => value.starts_with(&**start),
        }
    }
}

/// One rule of a policy: the callers it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerPattern {
    namespace: Part,
    function: Part,
    node: Part,
    /// As written, for messages.
    text: Box<str>,
}

impl CallerPattern {
    /// Whether `caller` is one of the callers this rule allows.
    pub fn matches(&self, caller: &CallerIdentity) -> bool {
        self.namespace.matches(caller.namespace())
            && match caller.function() {
                Some(f) => self.function.matches(f),
                None => self.function == Part::Any,
            }
            && self.node.matches(caller.node())
    }
}

impl FromStr for CallerPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<CallerPattern, String> {
        let bad = |why: String| {
            format!(
                "invalid caller rule {text:?} (use <namespace>/<function>[@<node>], \
                 each a name, '*' or a name's start and '*'): {why}"
            )
        };
        let written = text.trim();
        let full = if written == "*" { "*/*" } else { written };
        let (who, node) = match full.split_once('@') {
            Some((who, node)) => (who, node),
            None => (full, "*"),
        };
        let (namespace, function) = who
            .split_once('/')
            .ok_or_else(|| bad("no '/' between namespace and function".into()))?;
        Ok(CallerPattern {
            namespace: Part::parse(namespace, "namespace").map_err(bad)?,
            function: Part::parse(function, "function").map_err(bad)?,
            node: Part::parse(node, "node").map_err(bad)?,
            text: written.into(),
        })
    }
}

impl fmt::Display for CallerPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Which callers may call a function: everyone (no policy, the default)
/// or the callers its rules allow. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallPolicy {
    /// `None`: no policy, everyone may call.
    allow: Option<Arc<[CallerPattern]>>,
}

impl CallPolicy {
    /// No policy: every caller is allowed.
    pub fn allow_all() -> CallPolicy {
        CallPolicy { allow: None }
    }

    /// A policy that allows only the callers `rules` match (none, for an
    /// empty list).
    pub fn allowing(rules: impl IntoIterator<Item = CallerPattern>) -> CallPolicy {
        CallPolicy {
            allow: Some(rules.into_iter().collect()),
        }
    }

    /// Parses each of `rules`; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<CallPolicy, String> {
        let rules = rules
            .iter()
            .map(|r| r.as_ref().parse())
            .collect::<Result<Vec<CallerPattern>, String>>()?;
        Ok(CallPolicy::allowing(rules))
    }

    /// Whether this function has a policy at all.
    pub fn is_set(&self) -> bool {
        self.allow.is_some()
    }

    /// The rules, when there is a policy.
    pub fn rules(&self) -> Option<&[CallerPattern]> {
        self.allow.as_deref()
    }

    /// The one admission check of the callers of `function`: `Ok` if the
    /// policy allows `caller`, else `DENIED`, naming the caller, the
    /// function and the rules.
    #[inline]
    pub fn admit(&self, caller: &CallerIdentity, function: &str) -> Result<(), CallError> {
        let Some(rules) = &self.allow else {
            return Ok(());
        };
        if rules.iter().any(|r| r.matches(caller)) {
            return Ok(());
        }
        Err(CallError::new(
            ErrorCode::Denied,
            self.refusal(caller, function),
        ))
    }

    #[cold]
    fn refusal(&self, caller: &CallerIdentity, function: &str) -> String {
        format!(
            "caller {caller} may not call '{function}': {}",
            self.describe()
        )
    }

    /// The policy in words, for messages and `--explain`.
    pub fn describe(&self) -> String {
        match self.allow.as_deref() {
            None => "no policy: every caller is allowed".into(),
            Some([]) => "its policy allows no caller".into(),
            Some(rules) => format!(
                "its policy allows only {}",
                rules
                    .iter()
                    .map(|r| r.text.as_ref())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> CallerIdentity {
        CallerIdentity::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn rules_match_the_callers_they_name() {
        // (rule, caller, allowed)
        let cases = [
            ("ns-a/*", "ns-a/f@n1", true),
            ("ns-a/*", "ns-a/@n1", true),
            ("ns-a/*", "ns-b/f@n1", false),
            ("ns-a/f", "ns-a/f@n9", true),
            ("ns-a/f", "ns-a/g@n1", false),
            ("ns-a/f", "ns-a/@n1", false),
            ("ns-a/f@n1", "ns-a/f@n1", true),
            ("ns-a/f@n1", "ns-a/f@n2", false),
            ("team-*/*", "team-x/f@n", true),
            ("team-*/*", "teams/f@n", false),
            ("*/resize*@edge-*", "x/resize-v2@edge-3", true),
            ("*/resize*@edge-*", "x/resize-v2@core-3", false),
            ("*", "any/thing@where", true),
            ("*", "any/@where", true),
            (" ns-a/* ", "ns-a/f@n1", true),
        ];
        for (rule, caller, allowed) in cases {
            let r: CallerPattern = rule.parse().unwrap();
            assert_eq!(r.matches(&id(caller)), allowed, "{rule} vs {caller}");
        }
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        for (rule, why) in [
            ("ns-a", "no '/'"),
            ("ns-a/", "its function"),
            ("/f", "its namespace"),
            ("ns/f@", "its node"),
            ("ns/f*x", "its function"),
            ("ns/f@n@m", "its node"),
            ("n s/f", "its namespace"),
        ] {
            let e = rule.parse::<CallerPattern>().unwrap_err();
            assert!(e.contains(why), "{rule}: {e}");
        }
    }

    #[test]
    fn no_policy_allows_everyone_and_a_policy_only_its_rules() {
        let caller = id("ns-b/z@n1");
        assert!(CallPolicy::allow_all().admit(&caller, "d").is_ok());
        let policy = CallPolicy::parse(&["ns-a/*", "ns-c/x@n2"]).unwrap();
        assert!(policy.admit(&id("ns-a/y@n1"), "d").is_ok());
        assert!(policy.admit(&id("ns-c/x@n2"), "d").is_ok());
        let e = policy.admit(&caller, "d").unwrap_err();
        assert_eq!(e.code, ErrorCode::Denied);
        assert_eq!(
            e.message,
            "caller ns-b/z@n1 may not call 'd': its policy allows only ns-a/*, ns-c/x@n2"
        );
        let none = CallPolicy::parse::<&str>(&[]).unwrap();
        assert!(none.is_set());
        assert!(none.admit(&id("ns-a/y@n1"), "d").is_err());
        assert!(CallPolicy::parse(&["ns-a/*", "bad"]).is_err());
    }
}
