//! Running one request that a local server's connection took: the checks
//! of its target and depth, a call slot (waited for, or declined at once
//! for a request that asked not to wait) and, for a payload still arriving,
//! a place among those, and the callee.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::exchange::ConnExchange;
use super::slot::layout::RESP_QUEUED_US;
use crate::call::{CallMeta, Incoming};
use crate::config::Mode;
use crate::deadline::Deadline;
use crate::error::{CallError, ErrorCode};
use crate::guest::function::Function;
use crate::guest::invoke::serve_call;
use crate::identity::CallerIdentity;
use crate::trace::TraceContext;
use crate::transport::admission::{Busy, CallSlots};

/// What a request says about its call, from the slot or its frame.
pub(super) struct RequestInfo {
    /// The callee's depth.
    pub depth: u16,
    /// Microseconds left of the caller's deadline (0: none).
    pub budget_us: u64,
    /// The caller's span.
    pub trace: TraceContext,
    /// Declined at once, rather than queued, when every call slot is busy.
    pub no_queue: bool,
    /// Who calls, as the peer's credentials allow (an invalid claim: the
    /// refusal).
    pub caller: Result<Arc<CallerIdentity>, CallError>,
    /// The peer process (its pid), whose share of the places for arriving
    /// payloads the request takes.
    pub peer: i32,
}

/// Runs one request: checks its target, depth and a call slot, then
/// invokes the function.
pub(super) fn handle_request(
    target: &[u8],
    RequestInfo {
        depth,
        budget_us,
        trace,
        no_queue,
        caller,
        peer,
    }: RequestInfo,
    exchange: &mut ConnExchange<'_>,
    f: &Function,
    calls: &CallSlots<i32>,
) -> Result<(), CallError> {
    if target != f.spec.name.as_bytes() {
        return Err(CallError::new(
            ErrorCode::UnknownFunction,
            format!(
                "this server hosts '{}', not '{}'",
                f.spec.name,
                String::from_utf8_lossy(target)
            ),
        ));
    }
    let caller_deadline =
        (budget_us > 0).then(|| Deadline::after(Duration::from_micros(budget_us)));
    let caller = caller?;
    let request = Incoming {
        depth: u32::from(depth),
        deadline: caller_deadline,
        trace,
        caller: &caller,
    };
    let call = CallMeta::incoming(request, &f.spec, f.limits())?;
    let wait = if no_queue {
        Duration::ZERO
    } else {
        call.deadline.remaining()
    };
    let mut admitted = match calls.admit(peer, exchange.arriving(), wait) {
        Ok(a) => a,
        Err(Busy::Slots) if no_queue => {
            // Nothing ran: the caller takes another path (answered with
            // the declined kind, `RESPONSE_DECLINED`).
            return Err(CallError::new(
                ErrorCode::ResourceLimit,
                format!("'{}' is busy: every call slot is taken", f.spec.name),
            )
            .before_taken());
        }
        Err(busy) => return Err(busy.refusal(&f.spec.name, "caller process")),
    };
    exchange.arrival = admitted.arrival.take();
    // The caller's spill-over reads it with the answer.
    let queued_us = u32::try_from(admitted.queued.as_micros()).unwrap_or(u32::MAX);
    exchange
        .control
        .word(RESP_QUEUED_US)
        .store(queued_us, Ordering::Relaxed);
    let result = serve_call(f, call.reissued(), Mode::Local, exchange);
    drop(admitted);
    result
}
