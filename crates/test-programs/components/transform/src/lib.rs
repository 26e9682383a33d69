//! `component_transform`: the component twin of the core `transform`. It
//! XORs every byte with 0xA5, then forwards the result to the function named
//! by `CWASI_NEXT` (if set and non-empty) and answers with its reply;
//! otherwise it answers with the transformed bytes. A failed forward is the
//! handler's own error, with the call's code and message.

wit_bindgen::generate!({
    world: "cwasi:function/function",
    path: "../../../../wit",
    // The WASI interfaces of the world, which std already uses on
    // wasm32-wasip2; generated so that the world is complete.
    generate_all,
});

use cwasi::function::invoke;

/// XOR mask, the same as the core programs' `TRANSFORM_MASK`.
const MASK: u8 = 0xA5;

struct Transform;

impl exports::cwasi::function::handler::Guest for Transform {
    fn handle(request: Vec<u8>) -> Result<Vec<u8>, String> {
        let out: Vec<u8> = request.iter().map(|b| b ^ MASK).collect();
        match std::env::var("CWASI_NEXT") {
            Ok(next) if !next.is_empty() => invoke::call(&next, &out)
                .map_err(|e| format!("calling {next}: {:?}: {}", e.code, e.message)),
            _ => Ok(out),
        }
    }
}

export!(Transform);
