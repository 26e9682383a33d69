//! `component_faults`: drives each failure of the component ABI, as a
//! callee and as a caller. The request is a command:
//!
//! - `fail:<message>`: the handler's own error;
//! - `trap`: traps (`unreachable`);
//! - `loop`: never returns (for the deadline);
//! - `hog`: grows its memory until the host refuses;
//! - `big:<n>`: answers with `n` bytes;
//! - `call:<target>:<text>`: calls `target` with `text`;
//! - `callbig:<target>:<n>`: calls `target` with `n` bytes;
//! - `fanout:<t1>,<t2>,...:<text>`: starts a call to each target, then
//!   waits for each, in order;
//! - `waittwice:<target>`: starts a call, waits for it twice;
//! - `badtarget`: calls a target with an empty name.
//!
//! A call's outcome is answered as text, one line per call:
//! `ok <len> <response as UTF-8, lossy>`, or `error <code> <message>`.

wit_bindgen::generate!({
    world: "cwasi:function/function",
    path: "../../../../wit",
    // The WASI interfaces of the world, which std already uses on
    // wasm32-wasip2; generated so that the world is complete.
    generate_all,
});

use cwasi::function::invoke::{self, PendingCall};
use cwasi::function::types::{CallError, ErrorCode};

struct Faults;

/// The code's name in `wit/function.wit`.
fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::UnknownFunction => "unknown-function",
        ErrorCode::CalleeTrapped => "callee-trapped",
        ErrorCode::Timeout => "timeout",
        ErrorCode::TooLarge => "too-large",
        ErrorCode::Transport => "transport",
        ErrorCode::Denied => "denied",
        ErrorCode::InvalidArgument => "invalid-argument",
        ErrorCode::CalleeError => "callee-error",
        ErrorCode::BadResponse => "bad-response",
        ErrorCode::AllocFailed => "alloc-failed",
        ErrorCode::UnknownHandle => "unknown-handle",
        ErrorCode::ResourceLimit => "resource-limit",
        ErrorCode::NotCallable => "not-callable",
    }
}

fn outcome(result: Result<Vec<u8>, CallError>) -> String {
    match result {
        Ok(r) => format!("ok {} {}\n", r.len(), String::from_utf8_lossy(&r)),
        Err(e) => format!("error {} {}\n", code_name(e.code), e.message),
    }
}

impl exports::cwasi::function::handler::Guest for Faults {
    fn handle(request: Vec<u8>) -> Result<Vec<u8>, String> {
        let text = String::from_utf8(request).map_err(|_| "the command is not UTF-8")?;
        let (command, rest) = text.split_once(':').unwrap_or((text.as_str(), ""));
        let answer = match command {
            "fail" => return Err(rest.to_string()),
            "trap" => std::process::abort(),
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "hog" => {
                let mut held: Vec<Vec<u8>> = Vec::new();
                loop {
                    held.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&held);
                }
            }
            "big" => {
                let n: usize = rest.parse().map_err(|_| "big:<n>")?;
                return Ok(vec![b'x'; n]);
            }
            "call" => {
                let (target, body) = rest.split_once(':').unwrap_or((rest, ""));
                outcome(invoke::call(target, body.as_bytes()))
            }
            "callbig" => {
                let (target, n) = rest.split_once(':').unwrap_or((rest, ""));
                let n: usize = n.parse().map_err(|_| "callbig:<target>:<n>")?;
                outcome(invoke::call(target, &vec![b'x'; n]))
            }
            "fanout" => {
                let (targets, body) = rest.split_once(':').unwrap_or((rest, ""));
                let started: Vec<Result<PendingCall, CallError>> = targets
                    .split(',')
                    .map(|t| invoke::start(t, body.as_bytes()))
                    .collect();
                started
                    .into_iter()
                    .map(|s| outcome(s.and_then(|call| call.wait())))
                    .collect()
            }
            "waittwice" => {
                let call = invoke::start(rest, b"twice").map_err(|e| e.message)?;
                let first = outcome(call.wait());
                let second = outcome(call.wait());
                first + &second
            }
            "badtarget" => outcome(invoke::call("", b"x")),
            _ => return Err(format!("unknown command {command:?}")),
        };
        Ok(answer.into_bytes())
    }
}

export!(Faults);
