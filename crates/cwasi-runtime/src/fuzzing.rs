//! Entry points of the fuzz targets in `fuzz/` and of their smoke test in
//! CI (`fuzz/tests/smoke.rs`): each takes arbitrary bytes and feeds them to
//! one parser the way input from outside reaches it. None may panic, hang
//! or allocate without bound on any input; the fuzzers look for inputs
//! that do.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::transport::local::request::RequestReader;
use crate::transport::local::shm::{recv_payload, SharedRegion};
use crate::transport::local::wire::{Header, HEADER_LEN};

/// The payload limit of the local fuzz target: large enough for every
/// payload kind (inline, in the region, pipelined), small enough to keep
/// each run fast.
const FUZZ_MAX_PAYLOAD: u64 = 4 << 20;

/// The shared region of the local fuzz target.
const FUZZ_REGION: usize = 2 << 20;

/// Sends `data` from `peer` on a thread while the server reads, as on a
/// real connection, then shuts its writing side. It stops when the server
/// closes its end (no SIGPIPE: the fuzzer's own `main` does not ignore it
/// as a Rust program's does).
fn feed<S: std::os::fd::AsFd + Send + 'static>(
    peer: S,
    data: &[u8],
) -> std::thread::JoinHandle<()> {
    let bytes = data.to_vec();
    std::thread::spawn(move || {
        let mut sent = 0;
        while sent < bytes.len() {
            match rustix::net::send(&peer, &bytes[sent..], rustix::net::SendFlags::NOSIGNAL) {
                Ok(n) if n > 0 => sent += n,
                _ => return,
            }
        }
        let _ = rustix::net::shutdown(&peer, rustix::net::Shutdown::Write);
    })
}

/// The local frame parser and the local server's request state machine:
/// `data` is what a peer sends on a connection after its first frame. The
/// requests are read as the server reads them, payloads included (inline,
/// from the shared region, or pipelined with progress counts).
pub fn local_requests(data: &[u8]) {
    if let Some(head) = data.get(..HEADER_LEN) {
        let head: &[u8; HEADER_LEN] = head.try_into().expect("a header's length");
        let _ = Header::decode(head, FUZZ_MAX_PAYLOAD);
    }
    let Ok((peer, server)) = UnixStream::pair() else {
        return;
    };
    let Ok(mut shm) = SharedRegion::create() else {
        return;
    };
    if shm.grow_to(FUZZ_REGION).is_err() {
        return;
    }
    let writer = feed(peer, data);
    // A rate slow enough that a payload's budget outlasts the feed.
    let mut reader = RequestReader::new(server, Duration::from_millis(50), 1);
    while let Ok(request) = reader.next_request(FUZZ_MAX_PAYLOAD) {
        let h = request.header;
        let _ = (reader.target(&request), reader.inline_payload(&request));
        let _ = crate::identity::CallerIdentity::parse(reader.caller(&request));
        if h.in_shm() {
            let mut dst = vec![0u8; h.payload_len as usize];
            if recv_payload(&mut reader, &mut shm, &h, &mut dst).is_err() {
                break;
            }
        }
    }
    drop(reader);
    let _ = writer.join();
}

/// The call slot of a local connection, as both sides read it: `data` is
/// what a hostile peer wrote into the control block (header words and
/// inline area, from the start). The request is taken as a server takes
/// it, and the response as a caller does, each read into buffers of the
/// lengths the block claims once they are checked.
pub fn call_slot(data: &[u8]) {
    use crate::transport::local::slot::layout::{CONTROL_LEN, INLINE_AT};
    use crate::transport::local::slot::{REQUEST_INLINE, RESPONSE_ERROR, RESPONSE_INLINE};
    let Ok(shm) = SharedRegion::create() else {
        return;
    };
    let control = shm.control();
    let data = &data[..data.len().min(CONTROL_LEN)];
    for (i, word) in data[..data.len().min(INLINE_AT)].chunks(4).enumerate() {
        let mut b = [0u8; 4];
        b[..word.len()].copy_from_slice(word);
        control
            .word(i * 4)
            .store(u32::from_le_bytes(b), std::sync::atomic::Ordering::Relaxed);
    }
    if data.len() > INLINE_AT {
        control.write_inline(0, &data[INLINE_AT..]);
    }
    let max = FUZZ_MAX_PAYLOAD as usize;
    if let Ok(r) = control.take_request(max) {
        if r.kind == REQUEST_INLINE {
            let mut names = vec![0u8; r.target_len + r.caller_len];
            control.read_inline(0, &mut names);
            let _ = crate::identity::CallerIdentity::parse(&names[r.target_len..]);
            let mut payload = vec![0u8; r.len];
            control.read_inline(r.target_len + r.caller_len, &mut payload);
        }
    }
    if let Ok(r) = control.take_response(max) {
        if r.kind == RESPONSE_INLINE || r.kind == RESPONSE_ERROR {
            let mut answer = vec![0u8; r.len];
            control.read_inline(0, &mut answer);
        }
    }
}

/// The direct data plane's request reader, as a direct server runs it:
/// `data` is what a peer of another node sends on a (plain) TCP
/// connection after the server's ready frame. Each request's header and
/// target are read under the phase deadline, and its payload is read and
/// dropped, as the server does with a request it refuses.
pub fn direct_requests(data: &[u8]) {
    use std::net::{TcpListener, TcpStream};
    use std::sync::OnceLock;
    static LISTENER: OnceLock<Option<TcpListener>> = OnceLock::new();
    let Some(listener) = LISTENER.get_or_init(|| TcpListener::bind("127.0.0.1:0").ok()) else {
        return;
    };
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let Ok(peer) = TcpStream::connect(addr) else {
        return;
    };
    let Ok((server, from)) = listener.accept() else {
        return;
    };
    let writer = feed(peer, data);
    let Ok(mut conn) = crate::transport::direct::Conn::plain(server, from) else {
        return;
    };
    use crate::transport::local::wire::{MAX_CALLER_LEN, MAX_TARGET_LEN};
    let mut names = [0u8; MAX_TARGET_LEN + MAX_CALLER_LEN];
    while let Ok(Some(h)) =
        conn.next_request(Duration::from_millis(50), FUZZ_MAX_PAYLOAD, &mut names)
    {
        let (target, claim) =
            names[..h.target_len as usize + h.caller_len as usize].split_at(h.target_len as usize);
        let _ = (target, crate::identity::CallerIdentity::parse(claim));
        // As the server starts each payload: its budget, and whether it is
        // still arriving (which takes a place among arriving payloads).
        let _arriving = conn.begin_payload(h.payload_len, 1);
        if conn.skip_payload(h.payload_len).is_err() {
            break;
        }
    }
    drop(conn);
    let _ = writer.join();
}

/// The composition parser: `data` as the text of a composition file.
pub fn composition(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::composition::Composition::parse(text, Path::new("/nonexistent"));
    }
}

/// The remote entry parser and the reply envelope decoder, fed what a
/// broker client could put in a function's stream or a reply list.
pub fn remote_entries(data: &[u8]) {
    crate::transport::remote::parse_untrusted(data);
    // The caller each entry names, as a server without a CA takes it.
    crate::transport::remote::callers_untrusted(data);
    // A registry record, and the data address in it.
    if let Some(addr) = crate::transport::remote::data_addr_of(data) {
        let _ = addr.parse::<crate::transport::direct::DataAddr>();
    }
}

/// The node directory's record parser: `data` as the contents of the
/// record `echo@fz.json`; or, if it has a line break, its first line as a
/// record's file name and the rest as that record's contents.
pub fn node_record(data: &[u8]) {
    let _ = crate::node_dir::decode_record(data, "echo", "fz");
    let Some(split) = data.iter().position(|&b| b == b'\n') else {
        return;
    };
    let (first, rest) = (&data[..split], &data[split + 1..]);
    if let Ok(file) = std::str::from_utf8(first) {
        if let Some((name, namespace)) = crate::node_dir::record_identity(Path::new(file)) {
            let _ = crate::node_dir::decode_record(rest, name, namespace);
        }
    }
}

/// The admission of calls and handshakes by peer: `data` is a sequence of
/// peers taking places and giving them back (what a crowd of connections
/// does), run against the places for payloads still arriving, the places
/// for TLS handshakes and a server's call slots. A place is given only
/// while there is room in all and in the peer's share, and refused only
/// when there is none; every place given back frees one.
pub fn admission(data: &[u8]) {
    use crate::transport::admission::{CallSlots, Shares};
    use std::collections::HashMap;
    let Some((&[cap, per_peer], ops)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (cap, per_peer) = (usize::from(cap % 16) + 1, usize::from(per_peer % 16) + 1);
    let shares: Shares<u8> = Shares::new(cap, per_peer);
    let (cap, per_peer) = (shares.cap(), shares.per_peer());
    let calls: CallSlots<u8> = CallSlots::new(cap);
    let mut held = Vec::new();
    let mut admitted = Vec::new();
    let mut by_peer: HashMap<u8, usize> = HashMap::new();
    for &op in ops {
        let peer = op & 0x0f;
        match op >> 4 {
            // Take a place for `peer`, at once or not at all.
            0..=7 => {
                let mine = by_peer.get(&peer).copied().unwrap_or(0);
                let room = held.len() < cap && mine < per_peer;
                match shares.try_take(peer) {
                    Some(share) => {
                        assert!(room, "a place given past the cap or the peer's share");
                        held.push((peer, share));
                        *by_peer.entry(peer).or_insert(0) += 1;
                    }
                    None => assert!(!room, "a place refused while there was room"),
                }
            }
            // Give one back.
            8..=11 => {
                if !held.is_empty() {
                    let (peer, share) = held.swap_remove(usize::from(op) % held.len());
                    drop(share);
                    *by_peer.get_mut(&peer).expect("a holder") -= 1;
                }
            }
            // Admit a call (its payload still arriving, or not) at once.
            12 | 13 => {
                if let Ok(call) = calls.admit(peer, op >> 4 == 12, Duration::ZERO) {
                    admitted.push(call);
                }
                assert!(admitted.len() <= cap, "more calls admitted than slots");
            }
            // A call ends.
            _ => {
                if !admitted.is_empty() {
                    admitted.swap_remove(usize::from(op) % admitted.len());
                }
            }
        }
    }
    drop(held);
    drop(admitted);
    // Everything given back: every place is free again (for peers of one
    // place each).
    let all: Vec<_> = (0..cap).map(|i| shares.try_take(i as u8)).collect();
    assert!(
        all.iter().all(Option::is_some),
        "a place was not given back"
    );
}
