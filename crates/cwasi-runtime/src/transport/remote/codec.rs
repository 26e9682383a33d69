//! What travels through the broker: the stream entry of a request (checked
//! against the keys its function and id derive, `keys`), the reply envelope
//! of its answer and the commands that store the answer
//! (`docs/protocol.md`).

use std::time::{SystemTime, UNIX_EPOCH};

use redis::Value;

use super::keys::{CallKeys, FnKeys};
use crate::deadline::REPLY_TTL;
use crate::error::{CallError, ErrorCode};
use crate::trace::TraceContext;
use crate::transport::node_identity::Signature;

/// The consumer group every server of a function joins.
pub const GROUP: &str = "cwasi";
/// Safety bound on a stream's length (entries are deleted once answered).
pub const STREAM_MAXLEN: u64 = 100_000;
/// Requests at least this large travel in a key of their own (the call's
/// payload key, `cwasi:{<ns>/<name>}:payload:<id>`; the entry says
/// `payload_in_key`), instead of inside the stream entry:
/// Redis copies a stream entry's fields into the stream and again into every
/// read, where a string value keeps the buffer it was received in. Below
/// this size the extra round trip to fetch the key costs more than the copy
/// (docs/benchmarks.md).
pub const PAYLOAD_KEY_MIN: usize = 256 * 1024;

/// The status of a reply whose response is in a key of its own, named by
/// the rest of the envelope (responses from [`PAYLOAD_KEY_MIN`] on).
pub(super) const STATUS_IN_KEY: i32 = 1;

/// `status (i32 LE) ‖ bytes`: 0 and the response, [`STATUS_IN_KEY`] and the
/// key holding it, or an ABI error code and the error message.
pub(super) fn envelope(status: i32, bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + bytes.len());
    v.extend_from_slice(&status.to_le_bytes());
    v.extend_from_slice(bytes);
    v
}

/// What a reply envelope carries.
#[derive(Debug, PartialEq)]
pub(super) enum Reply {
    /// The response itself.
    Body(Vec<u8>),
    /// The key that holds the response.
    InKey(String),
}

/// Reads a reply envelope; an error status comes back as the error.
pub(super) fn decode_reply(mut envelope: Vec<u8>) -> Result<Reply, CallError> {
    if envelope.len() < 4 {
        return Err(CallError::new(
            ErrorCode::Transport,
            "a reply shorter than its status",
        ));
    }
    let status = i32::from_le_bytes(envelope[..4].try_into().expect("4 bytes"));
    match status {
        0 => {
            envelope.drain(..4);
            Ok(Reply::Body(envelope))
        }
        STATUS_IN_KEY => String::from_utf8(envelope.split_off(4))
            .map(Reply::InKey)
            .map_err(|_| CallError::new(ErrorCode::Transport, "a reply naming a bad key")),
        _ => Err(CallError::new(
            ErrorCode::from_raw(status).unwrap_or(ErrorCode::Transport),
            String::from_utf8_lossy(&envelope[4..]).into_owned(),
        )),
    }
}

/// One request read from a stream.
pub(super) struct Entry {
    /// The stream's id of the entry.
    pub entry_id: String,
    /// The caller's id of the request.
    pub id: String,
    /// The call's keys, derived from the function and `id`.
    pub keys: CallKeys,
    /// The caller's deadline, in wall-clock ms since the Unix epoch.
    pub deadline_ms: u64,
    /// The callee's nesting depth; 1 when the caller did not say (an older
    /// caller).
    pub depth: u32,
    /// The caller's span; none when absent or malformed (tracing is not
    /// worth refusing a call for).
    pub trace: TraceContext,
    /// The request.
    pub payload: Payload,
    /// The caller's identity as claimed (`caller`), unchecked.
    pub caller: Option<Vec<u8>>,
    /// The calling node's certificate (`cert`, DER).
    pub cert: Option<Vec<u8>>,
    /// The signature of the request (`sig_scheme` and `sig`).
    pub signature: Option<Signature>,
}

/// Where a request's payload is.
pub(super) enum Payload {
    /// In the stream entry.
    Inline(Vec<u8>),
    /// In the call's payload key ([`CallKeys::payload`]), for large
    /// requests.
    InKey,
}

/// An entry that is not run: its stream id, and why.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refused {
    /// The stream's id of the entry.
    pub entry_id: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Wall-clock milliseconds since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The strings in an array or set reply.
pub(super) fn strings(v: Value) -> Vec<String> {
    match v {
        Value::Array(items) | Value::Set(items) => items
            .into_iter()
            .filter_map(|i| match i {
                Value::BulkString(b) => String::from_utf8(b).ok(),
                Value::SimpleString(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// An entry's fields, `[field, value, ...]`, checked against the keys of
/// the function `f` whose stream it is on. The entry id is left empty.
///
/// The keys of the call are derived from `f` and the entry's `id`; an
/// entry that names a key (`reply`, `payload_key`: fields of version 2)
/// other than the derived one is refused, so that no key it names is ever
/// touched.
fn field_map(f: &FnKeys, fields: Vec<Value>) -> Result<Entry, String> {
    fn text(field: &str, v: Vec<u8>) -> Result<String, String> {
        String::from_utf8(v).map_err(|_| format!("`{field}` is not UTF-8"))
    }
    fn number<T: std::str::FromStr>(field: &str, v: &[u8]) -> Result<T, String> {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("`{field}` is not a number"))
    }
    fn set(payload: &mut Option<Payload>, p: Payload) -> Result<(), String> {
        match payload.replace(p) {
            Some(_) => Err("two payloads".into()),
            None => Ok(()),
        }
    }
    let (mut id, mut deadline, mut payload) = (None, None, None);
    // Absent: an older caller, whose callee runs at depth 1.
    let mut depth = 1;
    let mut trace = TraceContext::NONE;
    let (mut caller, mut cert, mut scheme, mut sig) = (None, None, None, None);
    // Keys the entry names (version 2), checked once the id is known.
    type Derive = fn(&CallKeys) -> String;
    let mut named: Vec<(&str, String, Derive)> = Vec::new();
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let (Value::BulkString(k), Value::BulkString(v)) = (k, v) else {
            continue;
        };
        match k.as_slice() {
            b"id" => id = Some(text("id", v)?),
            b"deadline" => deadline = Some(number("deadline", &v)?),
            b"depth" => depth = number("depth", &v)?,
            b"traceparent" => {
                trace = TraceContext::from_traceparent(&v).unwrap_or(TraceContext::NONE)
            }
            b"payload" => set(&mut payload, Payload::Inline(v))?,
            b"payload_in_key" if v == b"1" => set(&mut payload, Payload::InKey)?,
            b"payload_in_key" => return Err("`payload_in_key` is not 1".into()),
            b"payload_key" => {
                named.push(("payload_key", text("payload_key", v)?, CallKeys::payload));
                set(&mut payload, Payload::InKey)?;
            }
            b"reply" => named.push(("reply", text("reply", v)?, CallKeys::reply)),
            b"caller" => caller = Some(v),
            b"cert" => cert = Some(v),
            b"sig_scheme" => scheme = Some(number::<u16>("sig_scheme", &v)?),
            b"sig" => sig = Some(v),
            _ => {}
        }
    }
    let signature = match (scheme, sig) {
        (Some(scheme), Some(bytes)) => Some(Signature { scheme, bytes }),
        (None, None) => None,
        _ => return Err("`sig_scheme` and `sig` come together".into()),
    };
    let id = id.ok_or("no `id`")?;
    let keys = f.call(&id).map_err(|e| e.to_string())?;
    for (field, key, derive) in named {
        let derived = derive(&keys);
        if key != derived {
            return Err(format!(
                "`{field}` names {:?}, not the call's key {derived}",
                key.chars().take(80).collect::<String>()
            ));
        }
    }
    Ok(Entry {
        entry_id: String::new(),
        id,
        keys,
        deadline_ms: deadline.ok_or("no `deadline`")?,
        depth,
        trace,
        payload: payload.ok_or("no `payload`")?,
        caller,
        cert,
        signature,
    })
}

/// Parses `[ [entry-id, [field, value, ...]], ... ]` read from the stream
/// of the function `f`, keeping refused entries as ids and reasons (so
/// they can be acknowledged and dropped).
pub(super) fn entries(f: &FnKeys, list: Value) -> Vec<Result<Entry, Refused>> {
    let Value::Array(items) = list else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|e| {
            let Value::Array(mut pair) = e else {
                return None;
            };
            if pair.len() != 2 {
                return None;
            }
            let fields = pair.pop()?;
            let entry_id = match pair.pop()? {
                Value::BulkString(b) => String::from_utf8(b).ok()?,
                Value::SimpleString(s) => s,
                _ => return None,
            };
            let parsed = match fields {
                Value::Array(fields) => field_map(f, fields),
                _ => Err("no fields".into()),
            };
            Some(match parsed {
                Ok(entry) => Ok(Entry { entry_id, ..entry }),
                Err(reason) => Err(Refused { entry_id, reason }),
            })
        })
        .collect()
}

/// The commands that answer a request, as one `MULTI`: store the reply
/// and its expiry (a large response in a key of its own, which the reply
/// names), acknowledge and delete the entry, and delete the request's
/// claim (if reclaimed) and payload key (if any). Only the `EXEC` has a
/// value in the pipeline's result.
pub(super) fn answer(
    f: &FnKeys,
    e: &Entry,
    result: Result<Vec<u8>, CallError>,
    reclaimed: bool,
) -> redis::Pipeline {
    let ttl = REPLY_TTL.as_millis() as u64;
    let mut p = answer_pipe();
    p.cmd("MULTI").ignore();
    let reply = match result {
        Ok(body) if body.len() >= PAYLOAD_KEY_MIN => {
            let key = e.keys.response();
            p.cmd("SET").arg(&key).arg(body).arg("PX").arg(ttl).ignore();
            envelope(STATUS_IN_KEY, key.as_bytes())
        }
        Ok(body) => envelope(0, &body),
        Err(err) => envelope(err.code.as_raw(), err.message.as_bytes()),
    };
    let reply_key = e.keys.reply();
    p.cmd("LPUSH")
        .arg(&reply_key)
        .arg(reply)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&reply_key)
        .arg(ttl)
        .ignore()
        .cmd("XACK")
        .arg(f.stream())
        .arg(GROUP)
        .arg(&e.entry_id)
        .ignore()
        .cmd("XDEL")
        .arg(f.stream())
        .arg(&e.entry_id)
        .ignore();
    if reclaimed {
        p.cmd("DEL").arg(e.keys.claim()).ignore();
    }
    if let Payload::InKey = e.payload {
        p.cmd("DEL").arg(e.keys.payload()).ignore();
    }
    p.cmd("EXEC");
    p
}

/// The commands that acknowledge and delete an entry that is not run.
pub(super) fn ack(stream: &str, eid: &str) -> redis::Pipeline {
    let mut p = redis::pipe();
    p.cmd("XACK")
        .arg(stream)
        .arg(GROUP)
        .arg(eid)
        .cmd("XDEL")
        .arg(stream)
        .arg(eid);
    p
}

/// An empty pipeline for an answer: server errors come back as values, so
/// that the answer's and the next read's can be told apart.
pub(super) fn answer_pipe() -> redis::Pipeline {
    let mut p = redis::pipe();
    p.ignore_errors();
    p
}

/// Runs the parsers of what arrives from the broker on arbitrary bytes,
/// for the fuzz target (`crate::fuzzing::remote_entries`): `data` whole as
/// a reply envelope, and as stream entries of `echo@fz` (entries split at
/// 0xFE; in each, tokens split at 0xFF, the first the entry id, the rest
/// field-value pairs).
pub(crate) fn parse_untrusted(data: &[u8]) {
    let _ = decode_reply(data.to_vec());
    let _ = untrusted_entries(data);
}

/// [`parse_untrusted`]'s entries of `echo@fz`, parsed, with their function.
pub(super) fn untrusted_entries(data: &[u8]) -> Option<(FnKeys, Vec<Result<Entry, Refused>>)> {
    let function = FnKeys::new("fz", "echo").ok()?;
    let list = data
        .split(|&b| b == 0xFE)
        .map(|entry| {
            let mut tokens = entry
                .split(|&b| b == 0xFF)
                .map(|t| Value::BulkString(t.to_vec()));
            let id = tokens.next().unwrap_or(Value::Nil);
            Value::Array(vec![id, Value::Array(tokens.collect())])
        })
        .collect();
    let parsed = entries(&function, Value::Array(list));
    Some((function, parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip() {
        assert_eq!(
            decode_reply(envelope(0, b"abc")).unwrap(),
            Reply::Body(b"abc".to_vec())
        );
        assert_eq!(
            decode_reply(envelope(STATUS_IN_KEY, b"cwasi:response:x")).unwrap(),
            Reply::InKey("cwasi:response:x".into())
        );
        let err = CallError::new(ErrorCode::CalleeTrapped, "boom");
        let e = decode_reply(envelope(err.code.as_raw(), err.message.as_bytes())).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::CalleeTrapped, "boom")
        );
        assert!(decode_reply(vec![1]).is_err());
        assert!(decode_reply(envelope(STATUS_IN_KEY, &[0xff])).is_err());
    }

    /// A stream read's list of one entry with `fields`.
    fn one_entry(fields: &[(&str, &[u8])]) -> Value {
        let fields = fields
            .iter()
            .flat_map(|(k, v)| {
                [
                    Value::BulkString(k.as_bytes().to_vec()),
                    Value::BulkString(v.to_vec()),
                ]
            })
            .collect();
        Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"1-0".to_vec()),
            Value::Array(fields),
        ])])
    }

    /// The one entry of `fields` on the stream of `echo` in `ns`.
    fn parse(fields: &[(&str, &[u8])]) -> Result<Entry, Refused> {
        let f = FnKeys::new("ns", "echo").unwrap();
        entries(&f, one_entry(fields)).pop().unwrap()
    }

    #[test]
    fn entries_carry_their_depth() {
        let base: [(&str, &[u8]); 3] = [("id", b"r1"), ("deadline", b"1234"), ("payload", b"hi")];
        let with = |extra: Option<&'static [u8]>| {
            let mut f = base.to_vec();
            f.extend(extra.map(|d| ("depth", d)));
            parse(&f)
        };
        let e = with(Some(b"3".as_slice())).ok().unwrap();
        assert_eq!((e.entry_id.as_str(), e.id.as_str()), ("1-0", "r1"));
        assert_eq!((e.deadline_ms, e.depth), (1234, 3));
        assert_eq!(e.keys.reply(), "cwasi:{ns/echo}:reply:r1");
        assert!(matches!(e.payload, Payload::Inline(ref p) if p == b"hi"));
        // An older caller says nothing: depth 1.
        assert_eq!(with(None).ok().unwrap().depth, 1);
        // A depth that is not a number makes the entry malformed.
        assert_eq!(
            with(Some(b"deep".as_slice())).err().unwrap().entry_id,
            "1-0"
        );
        assert!(parse(&base[..2]).is_err());
    }

    #[test]
    fn entries_carry_their_trace_context_and_a_bad_one_is_none() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let with = |value: &'static [u8]| {
            let fields: [(&str, &[u8]); 4] = [
                ("id", b"r1"),
                ("deadline", b"1234"),
                ("payload", b"hi"),
                ("traceparent", value),
            ];
            parse(&fields).expect("the entry runs")
        };
        let e = with(tp.as_bytes());
        assert_eq!(e.trace.traceparent().as_deref(), Some(tp));
        for bad in [
            &b""[..],
            b"00-zz",
            b"\xff\xfe",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(with(bad).trace, TraceContext::NONE);
        }
        let fields: [(&str, &[u8]); 3] = [("id", b"r1"), ("deadline", b"1234"), ("payload", b"hi")];
        assert_eq!(parse(&fields).ok().unwrap().trace, TraceContext::NONE);
    }

    #[test]
    fn entries_naming_keys_other_than_their_calls_are_refused() {
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut f: Vec<(&str, &[u8])> = vec![("id", b"r1"), ("deadline", b"1234")];
            f.extend(extra.iter().map(|(k, v)| (*k, v.as_bytes())));
            parse(&f)
        };
        // The derived keys, named or not, are accepted.
        for extra in [
            [("payload_in_key", "1")],
            [("payload_key", "cwasi:{ns/echo}:payload:r1")],
        ] {
            assert!(matches!(with(&extra).ok().unwrap().payload, Payload::InKey));
        }
        assert!(with(&[("reply", "cwasi:{ns/echo}:reply:r1"), ("payload", "x")]).is_ok());
        // Anything else is refused, with the reason.
        let cases: [(&[(&str, &str)], &str); 8] = [
            (
                &[("reply", "victim"), ("payload", "x")],
                "`reply` names \"victim\"",
            ),
            (
                &[("reply", "cwasi:reply:r1"), ("payload", "x")],
                "`reply` names",
            ),
            (
                &[("reply", "cwasi:fn:ns:other"), ("payload", "x")],
                "`reply` names",
            ),
            (&[("payload_key", "victim")], "`payload_key` names"),
            (
                &[("payload_key", "cwasi:payload:ns:other:r1")],
                "`payload_key` names",
            ),
            (&[("payload", "x"), ("payload_in_key", "1")], "two payloads"),
            (&[("payload_in_key", "yes")], "is not 1"),
            (&[], "no `payload`"),
        ];
        for (extra, why) in cases {
            let refused = with(extra).err().unwrap();
            assert!(
                refused.reason.contains(why),
                "{extra:?}: {}",
                refused.reason
            );
        }
        for id in [&b""[..], b"a:b", b"x*", b"../k", &[0xff]] {
            let refused = parse(&[("id", id), ("deadline", b"1"), ("payload", b"x")]);
            assert!(refused.is_err(), "{id:?}");
        }
    }
}
