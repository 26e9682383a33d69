//! Placeholder substitution in template files: `{{name}}` (the function's
//! name), `{{crate_name}}` (a form of it Cargo and rustc accept as a crate
//! name) and `{{wit_bindgen}}` (the wit-bindgen dependency CWASI was built
//! with). Any other `{{…}}` is left as it is, since `{{` means a literal
//! brace in Rust and Python format strings.

/// The values of a project's placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholders {
    /// `{{name}}`: the function's name, as given.
    pub name: String,
    /// `{{crate_name}}`: see [`crate_name`].
    pub crate_name: String,
    /// `{{wit_bindgen}}`: a TOML value, e.g. `{ version = "0.57", … }`.
    pub wit_bindgen: String,
}

impl Placeholders {
    /// The placeholders of a project named `name`.
    pub fn new(name: &str, wit_bindgen: &str) -> Placeholders {
        Placeholders {
            name: name.to_string(),
            crate_name: crate_name(name),
            wit_bindgen: wit_bindgen.to_string(),
        }
    }
}

/// `text` with every known placeholder replaced.
pub fn render(text: &str, vars: &Placeholders) -> String {
    let known: [(&str, &str); 3] = [
        ("{{name}}", &vars.name),
        ("{{crate_name}}", &vars.crate_name),
        ("{{wit_bindgen}}", &vars.wit_bindgen),
    ];
    // One pass, so that a value is never itself searched for placeholders.
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        match known.iter().find(|(key, _)| rest.starts_with(key)) {
            Some((key, value)) => {
                out.push_str(value);
                rest = &rest[key.len()..];
            }
            None => {
                out.push_str("{{");
                rest = &rest[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A function name (letters, digits, `-`, `_`, `.`) as a Rust crate and
/// library name: `-` and `.` become `_`, and a name that starts with a digit
/// or is a Rust keyword gets a prefix `fn_`, so `my-fn.v2` is `my_fn_v2`
/// and `42` is `fn_42`.
pub fn crate_name(name: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "as",
        "async",
        "await",
        "break",
        "const",
        "continue",
        "crate",
        "dyn",
        "else",
        "enum",
        "extern",
        "false",
        "fn",
        "for",
        "gen",
        "if",
        "impl",
        "in",
        "let",
        "loop",
        "match",
        "mod",
        "move",
        "mut",
        "pub",
        "ref",
        "return",
        "self",
        "static",
        "struct",
        "super",
        "trait",
        "true",
        "try",
        "type",
        "unsafe",
        "use",
        "where",
        "while",
        "abstract",
        "become",
        "box",
        "do",
        "final",
        "macro",
        "override",
        "priv",
        "typeof",
        "unsized",
        "virtual",
        "yield",
        "test",
        "std",
        "core",
        "alloc",
        "proc_macro",
    ];
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let starts_badly = safe.starts_with(|c: char| c.is_ascii_digit());
    if starts_badly || KEYWORDS.contains(&safe.as_str()) || safe.chars().all(|c| c == '_') {
        format!("fn_{safe}")
    } else {
        safe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names_are_crate_safe() {
        assert_eq!(crate_name("hello"), "hello");
        assert_eq!(crate_name("my-fn.v2"), "my_fn_v2");
        assert_eq!(crate_name("42"), "fn_42");
        assert_eq!(crate_name("7up"), "fn_7up");
        assert_eq!(crate_name("fn"), "fn_fn");
        assert_eq!(crate_name("self"), "fn_self");
        assert_eq!(crate_name("_"), "fn__");
        assert_eq!(crate_name("-"), "fn__");
        assert_eq!(crate_name("Upper_Case"), "Upper_Case");
    }

    #[test]
    fn known_placeholders_are_replaced_and_others_kept() {
        let vars = Placeholders::new("my-fn", "{ version = \"1\" }");
        assert_eq!(
            render(
                "name={{name}} crate={{crate_name}} dep={{wit_bindgen}} {{other}} {x} {{ {{",
                &vars
            ),
            "name=my-fn crate=my_fn dep={ version = \"1\" } {{other}} {x} {{ {{"
        );
        // A name is substituted as it is, with no other expansion.
        let vars = Placeholders::new("a{{crate_name}}", "");
        assert_eq!(render("{{name}}", &vars), "a{{crate_name}}");
        assert_eq!(render("no placeholders", &vars), "no placeholders");
    }
}
