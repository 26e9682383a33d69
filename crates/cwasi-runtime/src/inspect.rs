//! What a module offers and needs, as the ABI sees it. `cwasi inspect` prints
//! this, and the runtime uses it to decide how a function can be called.

use std::fmt;

use cwasi_abi::{
    CWASI_MODULE, EXPORT_ALLOC, EXPORT_ERROR, EXPORT_HANDLE, EXPORT_INITIALIZE, EXPORT_MEMORY,
    EXPORT_START, SEED_EXPORT_ALLOCATE, SEED_MODULE,
};
use wasmtime::component::Component;
use wasmtime::{Engine, ExternType, FuncType, Module};

/// The interface a callable component exports (`wit/function.wit`), any
/// 0.1.x version.
pub const WIT_HANDLER_PREFIX: &str = "cwasi:function/handler@0.1.";
/// The interface a component imports to call others, any 0.1.x version.
pub const WIT_INVOKE_PREFIX: &str = "cwasi:function/invoke@0.1.";
/// The export that makes a component an entry (a WASI command), any 0.2.x
/// version.
pub const WIT_RUN_PREFIX: &str = "wasi:cli/run@0.2.";

/// The ABI surface of one module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Imports from `cwasi` (`call`, `call_start`, ...).
    pub cwasi_imports: Vec<String>,
    /// Imports from `cwasi_export` (the prototype's `func_connect`).
    pub seed_imports: Vec<String>,
    /// Whether it imports WASI preview 1.
    pub wasi: bool,
    /// Imports that no CWASI host provides (`module.name`).
    pub unknown_imports: Vec<String>,
    /// Exported function names with their signatures.
    pub function_exports: Vec<(String, String)>,
    /// Whether it exports `memory`.
    pub memory: bool,
    /// `_start` with type `() -> ()`.
    pub start: bool,
    /// `_initialize` (a WASI reactor).
    pub initialize: bool,
    /// `cwasi_alloc` with type `(i32) -> i32`.
    pub alloc: bool,
    /// `cwasi_handle` with type `(i32, i32) -> i64`.
    pub handle: bool,
    /// `cwasi_error` with type `() -> i64`.
    pub error: bool,
    /// The prototype's `allocate` with type `(i32) -> i32`.
    pub seed_allocate: bool,
    /// What a component offers, if this is one (then the core fields above
    /// are empty, but for `unknown_imports`).
    pub component: Option<ComponentInfo>,
}

/// The CWASI surface of a component (`wit/function.wit`): which of its
/// exports the host calls, by their full names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ComponentInfo {
    /// Its `cwasi:function/handler@0.1.x` export, if it is callable.
    pub handler: Option<String>,
    /// Its `wasi:cli/run@0.2.x` export, if it is an entry.
    pub run: Option<String>,
    /// Whether it imports `cwasi:function/invoke` (it calls others).
    pub invokes: bool,
    /// Its imports, by name.
    pub imports: Vec<String>,
}

impl ModuleInfo {
    /// Reads the imports and exports of a compiled module.
    pub fn of(module: &Module) -> ModuleInfo {
        let mut info = ModuleInfo::default();
        for imp in module.imports() {
            info.import(imp.module(), imp.name());
        }
        for exp in module.exports() {
            match exp.ty() {
                ExternType::Memory(_) if exp.name() == EXPORT_MEMORY => info.memory = true,
                ExternType::Func(f) => info.export_function(exp.name(), signature(&f)),
                _ => {}
            }
        }
        info
    }

    /// Reads the imports and exports of a core module from its bytes,
    /// without compiling it (`cwasi inspect`: compiling a large module
    /// takes several times its size in memory). The module must have been
    /// validated; the result is what [`ModuleInfo::of`] reads from the
    /// compiled module.
    pub fn parse(bytes: &[u8]) -> Result<ModuleInfo, wasmparser::BinaryReaderError> {
        use wasmparser::{CompositeInnerType, ExternalKind, Parser, Payload, TypeRef};
        let mut info = ModuleInfo::default();
        // The function types, by type index, and each function's type
        // index, imported functions first.
        let mut types: Vec<Option<wasmparser::FuncType>> = Vec::new();
        let mut funcs: Vec<u32> = Vec::new();
        let mut exports = Vec::new();
        for payload in Parser::new(0).parse_all(bytes) {
            match payload? {
                Payload::TypeSection(reader) => {
                    for group in reader {
                        for sub in group?.into_types() {
                            types.push(match sub.composite_type.inner {
                                CompositeInnerType::Func(f) => Some(f),
                                _ => None,
                            });
                        }
                    }
                }
                Payload::ImportSection(reader) => {
                    for import in reader.into_imports() {
                        let import = import?;
                        if let TypeRef::Func(t) = import.ty {
                            funcs.push(t);
                        }
                        info.import(import.module, import.name);
                    }
                }
                Payload::FunctionSection(reader) => {
                    for t in reader {
                        funcs.push(t?);
                    }
                }
                Payload::ExportSection(reader) => {
                    for export in reader {
                        let export = export?;
                        exports.push((export.name, export.kind, export.index));
                    }
                }
                _ => {}
            }
        }
        for (name, kind, index) in exports {
            match kind {
                ExternalKind::Memory if name == EXPORT_MEMORY => info.memory = true,
                ExternalKind::Func => {
                    let ty = funcs
                        .get(index as usize)
                        .and_then(|t| types.get(*t as usize))
                        .and_then(Option::as_ref);
                    let Some(ty) = ty else { continue };
                    let sig = signature_of(ty.params(), ty.results());
                    info.export_function(name, sig);
                }
                _ => {}
            }
        }
        Ok(info)
    }

    /// Notes an import, by the module it comes from.
    fn import(&mut self, module: &str, name: &str) {
        match module {
            CWASI_MODULE => self.cwasi_imports.push(name.to_string()),
            SEED_MODULE => self.seed_imports.push(name.to_string()),
            "wasi_snapshot_preview1" => self.wasi = true,
            other => self.unknown_imports.push(format!("{other}.{name}")),
        }
    }

    /// Notes an exported function and what its name and signature make it.
    fn export_function(&mut self, name: &str, sig: String) {
        match (name, sig.as_str()) {
            (EXPORT_START, "() -> ()") => self.start = true,
            (EXPORT_INITIALIZE, "() -> ()") => self.initialize = true,
            (EXPORT_ALLOC, "(i32) -> i32") => self.alloc = true,
            (EXPORT_HANDLE, "(i32, i32) -> i64") => self.handle = true,
            (EXPORT_ERROR, "() -> i64") => self.error = true,
            (SEED_EXPORT_ALLOCATE, "(i32) -> i32") => self.seed_allocate = true,
            _ => {}
        }
        self.function_exports.push((name.to_string(), sig));
    }

    /// Reads the imports and exports of a compiled component.
    pub fn of_component(component: &Component, engine: &Engine) -> ModuleInfo {
        let ty = component.component_type();
        let mut info = ComponentInfo::default();
        let mut unknown_imports = Vec::new();
        for (name, _) in ty.imports(engine) {
            if name.starts_with(WIT_INVOKE_PREFIX) {
                info.invokes = true;
            } else if !name.starts_with("wasi:") && !name.starts_with("cwasi:function/types@0.1.") {
                unknown_imports.push(name.to_string());
            }
            info.imports.push(name.to_string());
        }
        for (name, _) in ty.exports(engine) {
            if name.starts_with(WIT_HANDLER_PREFIX) {
                info.handler = Some(name.to_string());
            } else if name.starts_with(WIT_RUN_PREFIX) {
                info.run = Some(name.to_string());
            }
        }
        ModuleInfo {
            unknown_imports,
            component: Some(info),
            ..ModuleInfo::default()
        }
    }

    /// Whether it can be run as an entry (a WASI command).
    pub fn is_entry(&self) -> bool {
        self.start || self.component.as_ref().is_some_and(|c| c.run.is_some())
    }

    /// Whether other functions can call it: through ABI v1, or a
    /// component's `handler` export.
    pub fn is_callable(&self) -> bool {
        self.memory && self.alloc && self.handle
            || self.component.as_ref().is_some_and(|c| c.handler.is_some())
    }

    /// Whether it is a component (WASI 0.2, `wit/function.wit`) rather than
    /// a core module.
    pub fn is_component(&self) -> bool {
        self.component.is_some()
    }

    /// Whether it calls others the prototype's way.
    pub fn is_seed_caller(&self) -> bool {
        self.seed_imports.iter().any(|n| n == "func_connect")
    }

    /// Whether it can be called the prototype's way, given a handler name.
    pub fn is_seed_callee(&self, handler: &str) -> bool {
        self.memory
            && self.seed_allocate
            && self
                .function_exports
                .iter()
                .any(|(n, sig)| n == handler && sig == "(i32, i32) -> ()")
    }

    /// The exported functions of type `(i32, i32) -> ()` other than the ABI
    /// ones: the candidates for a seed handler.
    pub fn seed_handler_candidates(&self) -> Vec<&str> {
        self.function_exports
            .iter()
            .filter(|(n, sig)| sig == "(i32, i32) -> ()" && !n.starts_with("cwasi_"))
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

fn signature(f: &FuncType) -> String {
    let params: Vec<String> = f.params().map(|t| t.to_string()).collect();
    let results: Vec<String> = f.results().map(|t| t.to_string()).collect();
    signature_text(&params, results)
}

/// [`signature`] of a function type as the module's bytes give it.
fn signature_of(params: &[wasmparser::ValType], results: &[wasmparser::ValType]) -> String {
    let params: Vec<String> = params.iter().map(|t| t.to_string()).collect();
    let results: Vec<String> = results.iter().map(|t| t.to_string()).collect();
    signature_text(&params, results)
}

/// `(a, b) -> c`, `(a) -> ()`, `() -> (a, b)`.
fn signature_text(params: &[String], results: Vec<String>) -> String {
    let params = params.join(", ");
    let results = match results.len() {
        0 => "()".to_string(),
        1 => results[0].clone(),
        _ => format!("({})", results.join(", ")),
    };
    format!("({params}) -> {results}")
}

impl fmt::Display for ModuleInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        if let Some(c) = &self.component {
            let or_no = |o: &Option<String>| o.clone().unwrap_or_else(|| "no".to_string());
            writeln!(f, "component:             yes (WASI 0.2)")?;
            writeln!(f, "entry (wasi:cli/run):  {}", or_no(&c.run))?;
            writeln!(f, "callable (handler):    {}", or_no(&c.handler))?;
            writeln!(f, "calls others (invoke): {}", yes(c.invokes))?;
            return write!(f, "imports:               {}", c.imports.join(", "));
        }
        writeln!(f, "entry (_start):        {}", yes(self.is_entry()))?;
        writeln!(f, "callable (ABI v1):     {}", yes(self.is_callable()))?;
        let seed_callee = self.seed_allocate && !self.seed_handler_candidates().is_empty();
        writeln!(
            f,
            "seed-style:            caller {}, callee {}{}",
            yes(self.is_seed_caller()),
            yes(seed_callee),
            if seed_callee {
                format!(
                    " (handler candidates: {})",
                    self.seed_handler_candidates().join(", ")
                )
            } else {
                String::new()
            }
        )?;
        writeln!(f, "reactor (_initialize): {}", yes(self.initialize))?;
        writeln!(f, "WASI preview 1:        {}", yes(self.wasi))?;
        let none = |v: &Vec<String>| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        writeln!(f, "cwasi imports:         {}", none(&self.cwasi_imports))?;
        writeln!(f, "cwasi_export imports:  {}", none(&self.seed_imports))?;
        writeln!(f, "unknown imports:       {}", none(&self.unknown_imports))?;
        let abi: Vec<String> = self
            .function_exports
            .iter()
            .filter(|(n, _)| {
                n.starts_with("cwasi_")
                    || matches!(n.as_str(), "_start" | "_initialize" | "allocate")
            })
            .map(|(n, s)| format!("{n} {s}"))
            .collect();
        write!(f, "ABI exports:           {}", none(&abi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_read_from_its_bytes_offers_what_the_compiled_module_offers() {
        let engine = Engine::default();
        for (name, path) in test_programs_artifacts::ALL {
            let bytes = std::fs::read(path).unwrap();
            let module = Module::new(&engine, &bytes).unwrap();
            let parsed = ModuleInfo::parse(&bytes).unwrap();
            assert_eq!(parsed, ModuleInfo::of(&module), "{name}");
        }
    }
}
