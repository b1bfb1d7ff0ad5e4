//! Shared helpers for integration tests: reading the labelled AMD corpus.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// One row of a `labels.csv` (AMD.md format).
#[derive(Debug, Clone)]
pub struct Label {
    pub path: PathBuf,
    pub file: String,
    pub label: String,
    pub speech_end_ms: Option<u64>,
    pub greeting_end_ms: Option<u64>,
    pub beep_end_ms: Option<u64>,
    pub scenario: String,
}

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/amd")
}

/// Reads `dir/labels.csv` with the crate's own parser.
pub fn labels(dir: &Path) -> Vec<Label> {
    dialgate::detect::corpus::read_labels(dir)
        .unwrap()
        .into_iter()
        .map(|l| Label {
            path: dir.join(&l.file),
            file: l.file,
            label: l.label.as_str().to_string(),
            speech_end_ms: l.speech_end_ms,
            greeting_end_ms: l.greeting_end_ms,
            beep_end_ms: l.beep_end_ms,
            scenario: l.scenario,
        })
        .collect()
}
