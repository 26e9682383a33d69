//! Who sent a request entry: the caller's identity (`caller`) and, on a
//! node with a cluster CA, the signature that proves it (`cert`,
//! `sig_scheme`, `sig`; `docs/protocol.md`, "Signed requests").
//!
//! The caller signs the function's stream key, the request id, the
//! deadline, the depth, the caller's identity and the SHA-256 of the
//! payload with its node's key, and sends its node certificate with the
//! signature. A stream server with a CA checks that the certificate
//! chains to it and names the claimed node, then the signature: an entry
//! moved to another stream, given another deadline or payload, or claimed
//! for another caller no longer verifies. A server without a CA takes the
//! claim as it is (anyone who may write to the broker may claim
//! anything), and an entry without one comes from [`ANONYMOUS`].

use sha2::{Digest, Sha256};

use super::codec::{untrusted_entries, Entry, Payload};
use super::keys::FnKeys;
use crate::identity::CallerIdentity;
use crate::transport::node_identity::NodeIdentity;

/// The caller of an entry that names none, on a server without a CA.
pub(crate) const ANONYMOUS: &str = "anonymous/@broker";

/// What is signed for a request to `function` with these fields.
pub(super) fn message(
    function: &FnKeys,
    id: &str,
    deadline_ms: u64,
    depth: u32,
    caller: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(128 + caller.len());
    m.extend_from_slice(b"cwasi-request-v1\n");
    for part in [
        function.stream().as_bytes(),
        id.as_bytes(),
        deadline_ms.to_string().as_bytes(),
        depth.to_string().as_bytes(),
        caller,
    ] {
        m.extend_from_slice(part);
        m.push(b'\n');
    }
    m.extend_from_slice(&Sha256::digest(payload));
    m
}

/// The fields a caller adds to its entry: `caller`, and when it has a
/// node identity, `cert`, `sig_scheme` and `sig`.
pub(super) fn fields(
    identity: Option<&NodeIdentity>,
    caller: &CallerIdentity,
    signed: impl FnOnce() -> Vec<u8>,
) -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    let mut out = vec![("caller", caller.as_bytes().to_vec())];
    if let Some(identity) = identity {
        let sig = identity.sign(&signed())?;
        out.push(("cert", identity.certificate().to_vec()));
        out.push(("sig_scheme", sig.scheme.to_string().into_bytes()));
        out.push(("sig", sig.bytes));
    }
    Ok(out)
}

/// The caller of entry `e` of `function`, whose payload is `payload`, as
/// far as `identity` (this node's, with the CA) can prove it; the reason
/// for refusing it otherwise.
pub(super) fn authenticate(
    identity: Option<&NodeIdentity>,
    function: &FnKeys,
    e: &Entry,
    payload: &[u8],
) -> Result<CallerIdentity, String> {
    let claimed = match &e.caller {
        Some(bytes) => Some(CallerIdentity::parse(bytes).map_err(|err| err.to_string())?),
        None => None,
    };
    let Some(identity) = identity else {
        return match claimed {
            Some(c) => Ok(c),
            None => CallerIdentity::parse(ANONYMOUS.as_bytes()).map_err(|err| err.to_string()),
        };
    };
    let caller = claimed.ok_or("the request names no caller (no `caller` field)")?;
    let (Some(cert), Some(sig)) = (&e.cert, &e.signature) else {
        return Err(format!(
            "the request from {caller} is not signed (no `cert`, `sig_scheme` and `sig`)"
        ));
    };
    let signed = message(
        function,
        &e.id,
        e.deadline_ms,
        e.depth,
        caller.as_bytes(),
        payload,
    );
    identity
        .verify(caller.node(), cert, sig, &signed)
        .map_err(|why| format!("the request claiming {caller} is refused: {why}"))?;
    Ok(caller)
}

/// Authenticates the entries of [`super::codec::parse_untrusted`]'s input
/// as a server without a CA does, for the fuzz target.
pub(crate) fn callers_untrusted(data: &[u8]) {
    let Some((function, entries)) = untrusted_entries(data) else {
        return;
    };
    for e in entries.iter().flatten() {
        if let Payload::Inline(payload) = &e.payload {
            let _ = authenticate(None, &function, e, payload);
            let _ = message(&function, &e.id, e.deadline_ms, e.depth, b"x", payload);
        }
    }
}
