//! The mode policy of `docs/architecture.md`: where a callee lives and whom it
//! trusts decide the data path. The guest never names a mode.

use std::fmt;
use std::sync::Arc;

use crate::config::{Mode, ModeOverride};
use crate::error::{CallError, ErrorCode};
use crate::runtime::FunctionEntry;

/// The mode chosen for a call, and why; shown by `--explain` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The data path.
    pub mode: Mode,
    /// Why this path, in words.
    pub reason: String,
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.mode, self.reason)
    }
}

/// Where a chosen callee can be reached.
pub(crate) enum Endpoint {
    /// Loaded in this process.
    Embedded(Arc<FunctionEntry>),
}

/// What the selector knows about where functions are.
pub(crate) struct Candidates<'a> {
    /// A function of that name loaded in this process, if any.
    pub loaded: Option<&'a Arc<FunctionEntry>>,
    /// Names of everything loaded, for the not-found message.
    pub loaded_names: Vec<&'a str>,
}

/// Applies the policy:
/// 1. embedded, if the callee's module is loaded here and shares the caller's
///    namespace;
/// 2. local, if a live endpoint is on this node (not available yet);
/// 3. remote, if the callee is registered elsewhere (not available yet);
/// 4. otherwise "function X not found (looked in: ...)".
///
/// A forced mode is honoured only where it is possible.
pub(crate) fn select(
    caller_namespace: &str,
    target: &str,
    candidates: Candidates<'_>,
    mode: ModeOverride,
) -> Result<(Selection, Endpoint), CallError> {
    let looked_in = || {
        format!(
            "looked in: this process [{}]",
            candidates.loaded_names.join(", ")
        )
    };
    let Some(f) = candidates.loaded else {
        return Err(CallError::new(
            ErrorCode::UnknownFunction,
            format!("function '{target}' not found ({})", looked_in()),
        ));
    };
    let ns = &f.spec.namespace;
    let same_ns = ns == caller_namespace;
    match mode {
        ModeOverride::Auto | ModeOverride::Force(Mode::Embedded) if same_ns => {
            let why = if mode == ModeOverride::Auto {
                format!("'{target}' is loaded in this process and shares namespace '{ns}'")
            } else {
                format!("forced; '{target}' shares namespace '{ns}'")
            };
            Ok((
                Selection {
                    mode: Mode::Embedded,
                    reason: why,
                },
                Endpoint::Embedded(f.clone()),
            ))
        }
        ModeOverride::Force(Mode::Embedded) => Err(CallError::new(
            ErrorCode::Denied,
            format!(
                "mode 'embedded' is impossible: '{target}' is in namespace '{ns}' and the caller in \
                 '{caller_namespace}'; functions of different namespaces never share a VM"
            ),
        )),
        ModeOverride::Force(m) => Err(CallError::new(
            ErrorCode::Denied,
            format!(
                "mode '{m}' is impossible: no {m} endpoint serves '{target}' ({})",
                looked_in()
            ),
        )),
        ModeOverride::Auto => Err(CallError::new(
            ErrorCode::UnknownFunction,
            format!(
                "function '{target}' not found: it is loaded here in namespace '{ns}', but the \
                 caller is in '{caller_namespace}', so it cannot be embedded, and no local or \
                 remote endpoint serves it ({})",
                looked_in()
            ),
        )),
    }
}
