//! Repository hygiene: every source file opens with a `//!` line saying what it is; every
//! payload path a provider reads is one ingest parses.

fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_starts_with_a_doc_line() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "bench"] {
        if root.join(dir).exists() {
            rust_files(&root.join(dir), &mut files);
        }
    }
    let missing: Vec<_> = files
        .iter()
        .filter(|path| !std::fs::read_to_string(path).unwrap().starts_with("//!"))
        .collect();
    assert!(missing.is_empty(), "files without a //! line: {missing:?}");
}

#[test]
fn every_pointer_a_provider_reads_is_parsed() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ingest");
    let pointer = regex::Regex::new(r#""(/[A-Za-z0-9_/]+)""#).unwrap();
    let mut missing = Vec::new();
    for provider in [
        "gitlab",
        "github",
        "gitea",
        "bitbucket",
        "standard",
        "generic",
    ] {
        let text = std::fs::read_to_string(root.join(format!("{provider}.rs"))).unwrap();
        for found in pointer.captures_iter(&text) {
            let path = &found[1];
            if !hookrelay::ingest::PROVIDER_POINTERS.contains(&path) {
                missing.push(format!("{provider}: {path}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "paths read by providers but not parsed (add them to PROVIDER_POINTERS): {missing:?}"
    );
}
