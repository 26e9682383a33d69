//! `{{name}}`: a CWASI function in Rust, a component of the world
//! `cwasi:function/function` (wit/function.wit) built with wit-bindgen. It
//! answers with its request upper-cased.
//!
//! To call another function by name:
//! `cwasi::function::invoke::call("other", &bytes)`.

wit_bindgen::generate!({
    world: "cwasi:function/function",
    path: "wit",
    // The WASI interfaces of the world, which std already uses on
    // wasm32-wasip2; generated so that the world is complete.
    generate_all,
});

struct Function;

impl exports::cwasi::function::handler::Guest for Function {
    /// Handles one request. An `Err` is the function's own failure: its
    /// caller gets `callee-error` with the message.
    fn handle(request: Vec<u8>) -> Result<Vec<u8>, String> {
        if request.is_empty() {
            return Err("the request is empty: send some text, e.g. --data 'hello'".to_string());
        }
        let text = String::from_utf8_lossy(&request).to_uppercase();
        Ok(format!("{text} (upper-cased by {{name}}, in a Rust component)").into_bytes())
    }
}

export!(Function);
