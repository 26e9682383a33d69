//! What a command tells its user about the composition it loads, on
//! stderr: each module it had to compile (with the time: a large component
//! takes seconds, and a silent start looks hung), and the functions whose
//! namespace was defaulted (the namespace decides what shares a process).

use std::fmt::Write;

use cwasi_runtime::{Composition, LoadStage, ModuleLoad, DEFAULT_NAMESPACE};

use crate::build::seconds;
use crate::console::note;

/// `parse.wasm, component`: the module's file name and kind.
fn what(load: &ModuleLoad) -> String {
    let file = load.path.file_name().map_or_else(
        || load.path.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    let kind = if load.component {
        "component"
    } else {
        "module"
    };
    format!("{file}, {kind}")
}

/// The line for a module compiled by a run, or `None` (a cache hit, or
/// compiling just started: only the outcome is told).
pub fn compiled_line(load: &ModuleLoad) -> Option<String> {
    let LoadStage::Compiled { elapsed, cached } = load.stage else {
        return None;
    };
    let kept = if cached {
        "cached for next runs"
    } else {
        "not cached (the compile cache is off)"
    };
    Some(format!(
        "cwasi: compiled '{}' ({}) in {}; {kept}",
        load.function,
        what(load),
        seconds(elapsed)
    ))
}

/// The observer a run gives its runtime: one line per module compiled.
pub fn compile_notes(load: &ModuleLoad) {
    if let Some(line) = compiled_line(load) {
        note!("{line}");
    }
}

/// The line of `cwasi compile` for a module: compiled (and how long it
/// took) or already cached.
pub fn compile_report(load: &ModuleLoad) -> Option<String> {
    match load.stage {
        LoadStage::Compiling => None,
        LoadStage::FromCache => Some(format!(
            "{} ({}): already cached",
            load.function,
            what(load)
        )),
        LoadStage::Compiled { elapsed, cached } => Some(format!(
            "{} ({}): compiled in {}{}",
            load.function,
            what(load),
            seconds(elapsed),
            if cached {
                ""
            } else {
                "; NOT cached (the compile cache is off or unusable)"
            }
        )),
    }
}

/// The warning for functions that named no namespace, or `None`.
pub fn defaulted_namespace(comp: &Composition) -> Option<String> {
    let names = &comp.defaulted_namespace;
    if names.is_empty() {
        return None;
    }
    let list = quoted(names);
    let (subject, verb, run) = if names.len() == 1 {
        ("function", "has", "runs")
    } else {
        ("functions", "have", "run")
    };
    let their = if names.len() == 1 { "its" } else { "their" };
    Some(format!(
        "cwasi: warning: {subject} {list} {verb} no namespace and {run} in '{DEFAULT_NAMESPACE}'; \
         set namespace = \"…\" to choose {their} trust domain"
    ))
}

/// Prints [`defaulted_namespace`]'s warning, if any.
pub fn warn_defaulted_namespace(comp: &Composition) {
    if let Some(line) = defaulted_namespace(comp) {
        note!("{line}");
    }
}

/// `'a', 'b'`.
fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `--explain`'s text with a note after each line whose edge has a side
/// whose namespace was defaulted.
pub fn annotate_explain(text: &str, defaulted: &[String]) -> String {
    if defaulted.is_empty() {
        return text.to_string();
    }
    let mut out = String::new();
    for line in text.lines() {
        // `  caller -> target: ...`
        let sides: Vec<String> = line
            .trim_start()
            .split_once(": ")
            .and_then(|(edge, _)| edge.split_once(" -> "))
            .map(|(caller, target)| {
                [caller, target]
                    .into_iter()
                    .filter(|side| defaulted.iter().any(|d| d == side))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if sides.is_empty() {
            let _ = writeln!(out, "{line}");
        } else {
            let _ = writeln!(
                out,
                "{line} [no namespace given for {}: '{DEFAULT_NAMESPACE}']",
                quoted(&sides)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    #[test]
    fn a_compile_is_told_and_a_cache_hit_is_not() {
        let mut load = ModuleLoad {
            function: "parse".into(),
            path: PathBuf::from("/x/parse.wasm"),
            component: true,
            stage: LoadStage::Compiled {
                elapsed: Duration::from_millis(9800),
                cached: true,
            },
        };
        assert_eq!(
            compiled_line(&load).unwrap(),
            "cwasi: compiled 'parse' (parse.wasm, component) in 9.80 s; cached for next runs"
        );
        load.stage = LoadStage::FromCache;
        assert_eq!(compiled_line(&load), None);
        assert_eq!(
            compile_report(&load).unwrap(),
            "parse (parse.wasm, component): already cached"
        );
    }

    #[test]
    fn defaulted_namespaces_are_named_and_annotated() {
        let comp = Composition::parse(
            "entry = \"a\"\n[functions.a]\nmodule = \"a.wasm\"\n\
             [functions.b]\nmodule = \"b.wasm\"\n\
             [functions.c]\nmodule = \"c.wasm\"\nnamespace = \"n\"\n",
            std::path::Path::new("."),
        )
        .unwrap();
        assert_eq!(
            defaulted_namespace(&comp).unwrap(),
            "cwasi: warning: functions 'a', 'b' have no namespace and run in 'default'; \
             set namespace = \"…\" to choose their trust domain"
        );
        let text = "explain:\n  a -> c: local (x)\n  c -> b: embedded (y)\n  c -> d: refused: z\n";
        assert_eq!(
            annotate_explain(text, &comp.defaulted_namespace),
            "explain:\n  a -> c: local (x) [no namespace given for 'a': 'default']\n  \
             c -> b: embedded (y) [no namespace given for 'b': 'default']\n  c -> d: refused: z\n"
        );
    }
}
