//! `upper`: an example CWASI function written as a component in Rust with
//! plain wit-bindgen (docs/guest-rust-component.md). It upper-cases the
//! ASCII letters of its request and, if `CWASI_NEXT` names a function,
//! passes the result on and answers with that function's reply.

wit_bindgen::generate!({
    world: "cwasi:function/function",
    path: "../../wit",
    // The WASI interfaces of the world, which std already uses on
    // wasm32-wasip2; generated so that the world is complete.
    generate_all,
});

use cwasi::function::invoke;

struct Upper;

impl exports::cwasi::function::handler::Guest for Upper {
    fn handle(request: Vec<u8>) -> Result<Vec<u8>, String> {
        let upper = request.to_ascii_uppercase();
        match std::env::var("CWASI_NEXT") {
            Ok(next) if !next.is_empty() => invoke::call(&next, &upper)
                .map_err(|e| format!("calling {next}: {:?}: {}", e.code, e.message)),
            _ => Ok(upper),
        }
    }
}

export!(Upper);
