//! Running one request that a local server's connection took: the checks
//! of its target and depth, a call slot (waited for, or declined at once
//! for a request that asked not to wait), and the callee.

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
use crate::transport::admission::Slots;

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
    }: RequestInfo,
    exchange: &mut ConnExchange<'_>,
    f: &Function,
    slots: &Slots,
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
    let Some(queued) = slots.acquire(wait) else {
        if no_queue {
            // Nothing ran: the caller takes another path (answered with
            // the declined kind, `RESPONSE_DECLINED`).
            return Err(CallError::new(
                ErrorCode::ResourceLimit,
                format!("'{}' is busy: every call slot is taken", f.spec.name),
            )
            .before_taken());
        }
        return Err(CallError::new(
            ErrorCode::ResourceLimit,
            format!(
                "'{}' is busy: no call slot freed within the timeout",
                f.spec.name
            ),
        ));
    };
    // The caller's spill-over reads it with the answer.
    let queued_us = u32::try_from(queued.as_micros()).unwrap_or(u32::MAX);
    exchange
        .control
        .word(RESP_QUEUED_US)
        .store(queued_us, Ordering::Relaxed);
    let result = serve_call(f, call.reissued(), Mode::Local, exchange);
    slots.release();
    result
}
