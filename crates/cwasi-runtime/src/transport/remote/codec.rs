//! What travels through the broker: the key names, the stream entry of a
//! request, the reply envelope of its answer and the commands that store
//! the answer (`docs/protocol.md`).

use std::time::{SystemTime, UNIX_EPOCH};

use redis::Value;

use crate::deadline::REPLY_TTL;
use crate::error::{CallError, ErrorCode};

/// The consumer group every server of a function joins.
pub const GROUP: &str = "cwasi";
/// Safety bound on a stream's length (entries are deleted once answered).
pub const STREAM_MAXLEN: u64 = 100_000;
/// Requests at least this large travel in a key of their own
/// (`cwasi:payload:{id}`), named by the stream entry, instead of inside it:
/// Redis copies a stream entry's fields into the stream and again into every
/// read, where a string value keeps the buffer it was received in. Below
/// this size the extra round trip to fetch the key costs more than the copy
/// (docs/benchmarks.md).
pub const PAYLOAD_KEY_MIN: usize = 256 * 1024;

/// The request stream of a function.
pub(super) fn stream_key(ns: &str, name: &str) -> String {
    format!("cwasi:fn:{ns}:{name}")
}

/// The payload of a large request.
pub(super) fn payload_key(id: &str) -> String {
    format!("cwasi:payload:{id}")
}

/// The reply list of a request.
pub(super) fn reply_key(id: &str) -> String {
    format!("cwasi:reply:{id}")
}

/// The response to a request, when it is large.
pub(super) fn response_key(id: &str) -> String {
    format!("cwasi:response:{id}")
}

/// Which consumer runs a reclaimed request.
pub(super) fn claim_key(id: &str) -> String {
    format!("cwasi:claim:{id}")
}

/// The functions a node serves.
pub(super) fn node_key(node: &str) -> String {
    format!("cwasi:node:{node}")
}

/// The nodes serving a function.
pub(super) fn fn_nodes_key(ns: &str, name: &str) -> String {
    format!("cwasi:fn-nodes:{ns}:{name}")
}

/// The namespaces a function name is served in.
pub(super) fn fn_ns_key(name: &str) -> String {
    format!("cwasi:fn-ns:{name}")
}

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
    /// The key to answer in.
    pub reply: String,
    /// The caller's deadline, in wall-clock ms since the Unix epoch.
    pub deadline_ms: u64,
    /// The callee's nesting depth; 1 when the caller did not say (an older
    /// caller).
    pub depth: u32,
    /// The request.
    pub payload: Payload,
}

/// Where a request's payload is.
pub(super) enum Payload {
    /// In the stream entry.
    Inline(Vec<u8>),
    /// In a key of its own, for large requests.
    Key(String),
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

/// An entry's fields, `[field, value, ...]`; `None` if one it needs is
/// missing or malformed. The entry id is left empty.
fn field_map(fields: Vec<Value>) -> Option<Entry> {
    fn number<T: std::str::FromStr>(v: &[u8]) -> Option<T> {
        std::str::from_utf8(v).ok()?.parse().ok()
    }
    let mut id = None;
    let mut reply = None;
    let mut deadline = None;
    // Absent: an older caller, whose callee runs at depth 1; present but
    // malformed: a malformed entry.
    let mut depth = Some(1);
    let mut payload = None;
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let Value::BulkString(k) = k else { continue };
        let Value::BulkString(v) = v else { continue };
        match k.as_slice() {
            b"id" => id = String::from_utf8(v).ok(),
            b"reply" => reply = String::from_utf8(v).ok(),
            b"deadline" => deadline = number(&v),
            b"depth" => depth = number(&v),
            b"payload" => payload = Some(Payload::Inline(v)),
            b"payload_key" => payload = String::from_utf8(v).ok().map(Payload::Key),
            _ => {}
        }
    }
    Some(Entry {
        entry_id: String::new(),
        id: id?,
        reply: reply?,
        deadline_ms: deadline?,
        depth: depth?,
        payload: payload?,
    })
}

/// Parses `[ [entry-id, [field, value, ...]], ... ]`, keeping malformed
/// entries as ids only (so they can be acknowledged and dropped).
pub(super) fn entries(list: Value) -> Vec<Result<Entry, String>> {
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
            let eid = match pair.pop()? {
                Value::BulkString(b) => String::from_utf8(b).ok()?,
                Value::SimpleString(s) => s,
                _ => return None,
            };
            Some(match fields {
                Value::Array(f) => match field_map(f) {
                    Some(mut entry) => {
                        entry.entry_id = eid;
                        Ok(entry)
                    }
                    None => Err(eid),
                },
                _ => Err(eid),
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
    stream: &str,
    e: &Entry,
    result: Result<Vec<u8>, CallError>,
    reclaimed: bool,
) -> redis::Pipeline {
    let ttl = REPLY_TTL.as_millis() as u64;
    let mut p = answer_pipe();
    p.cmd("MULTI").ignore();
    let reply = match result {
        Ok(body) if body.len() >= PAYLOAD_KEY_MIN => {
            let key = response_key(&e.id);
            p.cmd("SET").arg(&key).arg(body).arg("PX").arg(ttl).ignore();
            envelope(STATUS_IN_KEY, key.as_bytes())
        }
        Ok(body) => envelope(0, &body),
        Err(err) => envelope(err.code.as_raw(), err.message.as_bytes()),
    };
    p.cmd("LPUSH")
        .arg(&e.reply)
        .arg(reply)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&e.reply)
        .arg(ttl)
        .ignore()
        .cmd("XACK")
        .arg(stream)
        .arg(GROUP)
        .arg(&e.entry_id)
        .ignore()
        .cmd("XDEL")
        .arg(stream)
        .arg(&e.entry_id)
        .ignore();
    if reclaimed {
        p.cmd("DEL").arg(claim_key(&e.id)).ignore();
    }
    if let Payload::Key(key) = &e.payload {
        p.cmd("DEL").arg(key).ignore();
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

    #[test]
    fn entries_carry_their_depth() {
        let base: [(&str, &[u8]); 4] = [
            ("id", b"r1"),
            ("reply", b"cwasi:reply:r1"),
            ("deadline", b"1234"),
            ("payload", b"hi"),
        ];
        let with = |extra: Option<&'static [u8]>| {
            let mut f = base.to_vec();
            f.extend(extra.map(|d| ("depth", d)));
            entries(one_entry(&f)).pop().unwrap()
        };
        let e = with(Some(b"3".as_slice())).ok().unwrap();
        assert_eq!((e.entry_id.as_str(), e.id.as_str()), ("1-0", "r1"));
        assert_eq!((e.deadline_ms, e.depth), (1234, 3));
        assert!(matches!(e.payload, Payload::Inline(ref p) if p == b"hi"));
        // An older caller says nothing: depth 1.
        assert_eq!(with(None).ok().unwrap().depth, 1);
        // A depth that is not a number makes the entry malformed.
        assert_eq!(with(Some(b"deep".as_slice())).err().unwrap(), "1-0");
        assert_eq!(
            entries(one_entry(&base[..3])).pop().unwrap().err().unwrap(),
            "1-0"
        );
    }
}
