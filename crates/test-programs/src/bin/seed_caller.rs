//! `seed_caller` (entry): a caller written like the original CWASI prototype,
//! without the SDK, to check that prototype functions run unchanged. It sends
//! args[1] through `cwasi_export.func_connect`, which writes the response
//! back over the buffer (truncated to its length) and returns the byte count
//! or a negative error code, then prints
//! `seed_caller sent=<len> got=<ret> response=<text>`.

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "cwasi_export")]
extern "C" {
    fn func_connect(ptr: i32, len: i32) -> i32;
}

/// Off wasm32 there is no host: fail like a dead transport (-5).
#[cfg(not(target_arch = "wasm32"))]
unsafe fn func_connect(_ptr: i32, _len: i32) -> i32 {
    -5
}

fn main() {
    let payload = std::env::args().nth(1).unwrap_or_default();
    let len = payload.len();
    let mut buffer = vec![0u8; len];
    buffer.copy_from_slice(payload.as_bytes());
    let ret = unsafe { func_connect(buffer.as_mut_ptr() as usize as i32, len as i32) };
    let shown = if ret > 0 {
        String::from_utf8_lossy(&buffer[..(ret as usize).min(len)]).into_owned()
    } else {
        String::new()
    };
    println!("seed_caller sent={len} got={ret} response={shown}");
}
