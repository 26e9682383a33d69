//! Native stack for nested embedded calls.
//!
//! An embedded call runs its callee on the caller's thread, so a chain of
//! nested embedded calls stacks one level of frames per call: the callee's
//! WebAssembly frames (up to [`WASM_STACK_PER_CALL`], which wasmtime
//! enforces per entry into a store) and the host's frames around them (the
//! host functions, the call path, wasmtime's entry; [`HOST_STACK_PER_CALL`]
//! is a generous bound). Before each nested embedded call the embedded
//! transport checks that this thread has a whole level left
//! ([`has_room_for_a_call`]); if not, the call runs on a thread of its own
//! with a fresh stack of [`NESTED_STACK_SIZE`]. A chain as deep as
//! [`MAX_CALL_DEPTH_BOUND`] therefore never overflows the host's stack,
//! whatever thread it started on.

use std::cell::Cell;

/// The most WebAssembly stack one call may use (wasmtime's
/// `max_wasm_stack`); deeper guest recursion traps with a stack overflow.
pub const WASM_STACK_PER_CALL: usize = 512 << 10;

/// A bound on the host's own frames of one nested call.
pub const HOST_STACK_PER_CALL: usize = 256 << 10;

/// The stack of a thread that carries on a chain of nested calls: room for
/// about 40 levels at the worst, far more in practice.
pub const NESTED_STACK_SIZE: usize = 32 << 20;

/// The largest `max_call_depth` a runtime accepts. At the worst case of
/// every level using its whole WebAssembly stack, a chain this deep takes
/// 192 MiB of stack over seven threads, reserved as it is touched.
pub const MAX_CALL_DEPTH_BOUND: u32 = 256;

thread_local! {
    /// The lowest usable address of this thread's stack: 0 until looked
    /// up, 1 if the platform cannot tell.
    static STACK_FLOOR: Cell<usize> = const { Cell::new(0) };
}

/// Whether this thread has the stack for one more nested call. `false`
/// when it cannot tell, so that the call moves to a fresh stack.
pub(crate) fn has_room_for_a_call() -> bool {
    remaining().is_some_and(|left| left >= WASM_STACK_PER_CALL + HOST_STACK_PER_CALL)
}

/// Bytes of stack left below the current frame, if the platform says where
/// the stack ends.
pub(crate) fn remaining() -> Option<usize> {
    let floor = STACK_FLOOR
        .try_with(|f| {
            if f.get() == 0 {
                f.set(stack_floor().unwrap_or(1));
            }
            f.get()
        })
        .ok()?;
    if floor == 1 {
        return None;
    }
    let marker = 0u8;
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    Some(here.saturating_sub(floor))
}

/// The lowest usable address of the current thread's stack, above its
/// guard area.
fn stack_floor() -> Option<usize> {
    // SAFETY: `attr` is initialised by `pthread_getattr_np` before it is
    // read and destroyed once; the out-pointers are valid locals.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let mut guard: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_getguardsize(&attr, &mut guard);
        libc::pthread_attr_destroy(&mut attr);
        (rc == 0 && !addr.is_null()).then(|| addr as usize + guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_knows_its_stack() {
        let on = |size: usize| {
            std::thread::Builder::new()
                .stack_size(size)
                .spawn(|| (remaining(), has_room_for_a_call()))
                .unwrap()
                .join()
                .unwrap()
        };
        let (left, room) = on(256 << 10);
        assert!(left.is_some_and(|l| l < 256 << 10), "{left:?}");
        assert!(!room, "a 256 KiB stack has no room for a call");
        let (left, room) = on(NESTED_STACK_SIZE);
        assert!(
            left.is_some_and(|l| l > NESTED_STACK_SIZE - (1 << 20)),
            "{left:?}"
        );
        assert!(room);
    }
}
