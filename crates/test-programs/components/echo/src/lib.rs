//! `component_echo`: answers with its request, the component twin of the
//! core `echo`; the callee of the component benchmark.

wit_bindgen::generate!({
    world: "cwasi:function/function",
    path: "../../../../wit",
    // The WASI interfaces of the world, which std already uses on
    // wasm32-wasip2; generated so that the world is complete.
    generate_all,
});

struct Echo;

impl exports::cwasi::function::handler::Guest for Echo {
    fn handle(request: Vec<u8>) -> Result<Vec<u8>, String> {
        Ok(request)
    }
}

export!(Echo);
