//! What the host needs to know about functions and limits, independent of
//! where the configuration came from (composition file, CLI, OCI spec).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::identity::policy::CallPolicy;

/// The spin budget of local calls unless configured
/// ([`Limits::spin_budget`]): about what a sleep and a wake-up cost across
/// two vCPUs (the local transport's `spin` module says why).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// The queueing delay over which a caller spills from a local server unless
/// configured ([`Limits::spill_queue`]): 1 ms, about ten times what a call
/// to another node costs on top of a local one, so that a spill pays for
/// itself.
pub const DEFAULT_SPILL_QUEUE: Duration = Duration::from_millis(1);

/// Bounds that keep one function from hurting the host or its neighbours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum linear memory of one instance, in bytes.
    pub max_memory_bytes: usize,
    /// Maximum size of a request or a response, in bytes.
    pub max_payload_bytes: usize,
    /// How long one call between functions may run.
    pub call_timeout: Duration,
    /// How long an entry's `_start` may run.
    pub entry_timeout: Duration,
    /// How deep calls may nest (A calls B calls C ...).
    pub max_call_depth: u32,
    /// How many warm instances are kept per function.
    pub max_idle_instances: usize,
    /// How much linear memory a pooled instance of a served function may
    /// have grown, beyond its size when it was made, and still be kept once
    /// the function is idle; a larger one is dropped then, and its memory
    /// goes back to the system (`docs/operations.md`, "Memory of a served
    /// function").
    pub max_idle_growth_bytes: usize,
    /// How long a served function goes without a call that grew an instance
    /// beyond `max_idle_growth_bytes` before it counts as idle and is
    /// trimmed.
    pub idle_trim_after: Duration,
    /// Largest module file read, in bytes: a function's own module and a
    /// module published in the node directory.
    pub max_module_bytes: u64,
    /// How long each side of a local call spins on shared memory for the
    /// other's answer before it sleeps (`docs/protocol.md`, "The call
    /// slot"); zero never spins.
    pub spin_budget: Duration,
    /// Whether a caller spills calls from a local server whose call slots
    /// its own calls fill to the next path (another node), and back when
    /// one frees (docs/architecture.md, "Spill-over"). Embedded calls
    /// never spill.
    pub spill_over: bool,
    /// With `spill_over`: how long a local server's answers may say their
    /// requests waited for one of its call slots before the caller counts
    /// it as saturated and spills to the next path, checking on it again
    /// every 100 ms (docs/architecture.md, "Spill-over and load"). This
    /// sees the load other callers put on the server.
    pub spill_queue: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_memory_bytes: 1 << 30,
            max_payload_bytes: 256 << 20,
            call_timeout: Duration::from_secs(30),
            entry_timeout: Duration::from_secs(300),
            max_call_depth: 32,
            max_idle_instances: 16,
            max_idle_growth_bytes: 4 << 20,
            idle_trim_after: Duration::from_secs(1),
            max_module_bytes: 256 << 20,
            spin_budget: DEFAULT_SPIN,
            spill_over: true,
            spill_queue: DEFAULT_SPILL_QUEUE,
        }
    }
}

/// The data path between two functions (see `docs/architecture.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Same process, memory to memory.
    Embedded,
    /// Another process on this node, through the host kernel.
    Local,
    /// Another node, over a direct connection to it (TCP, with mutual TLS
    /// unless plain TCP was asked for).
    RemoteDirect,
    /// Another node, through the broker: the path of last resort, when the
    /// callee's node offers no data address this node can reach.
    RemoteBroker,
}

impl Mode {
    /// The lower-case name used in configuration and output.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Embedded => "embedded",
            Mode::Local => "local",
            Mode::RemoteDirect => "remote-direct",
            Mode::RemoteBroker => "remote-broker",
        }
    }

    /// Whether the callee is on another node (either remote path).
    pub fn is_remote(self) -> bool {
        matches!(self, Mode::RemoteDirect | Mode::RemoteBroker)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A forced mode, for experiments; `Auto` lets the selector choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModeOverride {
    /// The selector's policy.
    #[default]
    Auto,
    /// Always this mode, or a clear error if it is impossible.
    Force(Mode),
    /// Always another node, by whichever remote path the selector picks.
    AnyRemote,
}

impl ModeOverride {
    /// Whether the selector may choose `m` under this override.
    pub fn allows(self, m: Mode) -> bool {
        match self {
            ModeOverride::Auto => true,
            ModeOverride::Force(f) => f == m,
            ModeOverride::AnyRemote => m.is_remote(),
        }
    }
}

impl FromStr for ModeOverride {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(ModeOverride::Auto),
            "embedded" => Ok(ModeOverride::Force(Mode::Embedded)),
            "local" => Ok(ModeOverride::Force(Mode::Local)),
            "remote" => Ok(ModeOverride::AnyRemote),
            "remote-direct" => Ok(ModeOverride::Force(Mode::RemoteDirect)),
            "remote-broker" => Ok(ModeOverride::Force(Mode::RemoteBroker)),
            other => Err(format!(
                "unknown mode '{other}' (expected auto, embedded, local, remote, \
                 remote-direct or remote-broker)"
            )),
        }
    }
}

impl fmt::Display for ModeOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModeOverride::Auto => f.write_str("auto"),
            ModeOverride::Force(m) => m.fmt(f),
            ModeOverride::AnyRemote => f.write_str("remote"),
        }
    }
}

/// A host directory made visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preopen {
    /// Path on the host.
    pub host: PathBuf,
    /// Path the guest sees.
    pub guest: String,
    /// Whether the guest may write.
    #[serde(default)]
    pub writable: bool,
}

/// Settings for functions written for the original CWASI prototype.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedConfig {
    /// Export name of a seed-style callee's handler `(ptr, len)`.
    pub handler: Option<String>,
    /// Target of a seed-style caller's `cwasi_export.func_connect`.
    pub connect_to: Option<String>,
}

/// One function as the host sees it: its code, trust domain and WASI setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSpec {
    /// The name other functions call it by.
    pub name: String,
    /// The trust domain; only functions of one namespace share a VM.
    pub namespace: String,
    /// The `.wasm` file; only a name for messages when `module_bytes` is set.
    pub module: PathBuf,
    /// The module itself, when it does not come from a file (the shim gets
    /// it from an OCI layer).
    pub module_bytes: Option<Arc<[u8]>>,
    /// WASI arguments after the program name.
    pub args: Vec<String>,
    /// WASI environment.
    pub env: Vec<(String, String)>,
    /// WASI preopened directories.
    pub preopens: Vec<Preopen>,
    /// Prototype compatibility.
    pub seed: SeedConfig,
    /// Which callers may call it (default: everyone).
    pub policy: CallPolicy,
}

impl FunctionSpec {
    /// A function with no args, env or preopens.
    pub fn new(name: impl Into<String>, namespace: impl Into<String>, module: PathBuf) -> Self {
        FunctionSpec {
            name: name.into(),
            namespace: namespace.into(),
            module,
            module_bytes: None,
            args: Vec::new(),
            env: Vec::new(),
            preopens: Vec::new(),
            seed: SeedConfig::default(),
            policy: CallPolicy::allow_all(),
        }
    }
}

/// The namespace a function gets when none is given.
pub const DEFAULT_NAMESPACE: &str = "default";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_override_parses() {
        assert_eq!("auto".parse(), Ok(ModeOverride::Auto));
        assert_eq!("Embedded".parse(), Ok(ModeOverride::Force(Mode::Embedded)));
        assert!("fast".parse::<ModeOverride>().is_err());
        assert_eq!("remote".parse(), Ok(ModeOverride::AnyRemote));
        assert_eq!(
            "remote-direct".parse(),
            Ok(ModeOverride::Force(Mode::RemoteDirect))
        );
        assert!(ModeOverride::AnyRemote.allows(Mode::RemoteBroker));
        assert!(!ModeOverride::AnyRemote.allows(Mode::Local));
    }
}
