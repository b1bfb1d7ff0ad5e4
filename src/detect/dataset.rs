//! Feature tables for training the AMD classifier: every clip of a labelled
//! corpus run through the live front end, with a feature snapshot every
//! `every_ms`. `dialgate amd features` writes this table; `models/train_amd.py`
//! trains on it; `tests/amd_features.rs` checks it still matches the code.

use std::io::Write;
use std::path::Path;

use super::corpus::{self, LabelRow};
use super::features::{FEATURE_NAMES, FeatureVector};
use super::frontend::Frontend;
use crate::audio::wav::WavReader;

/// Errors building a feature table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// The corpus could not be read.
    #[error(transparent)]
    Corpus(#[from] corpus::CorpusError),
    /// A clip could not be read.
    #[error("{file}: {source}")]
    Wav {
        file: String,
        #[source]
        source: crate::audio::wav::WavError,
    },
    /// The model runtime failed.
    #[error(transparent)]
    Onnx(#[from] crate::onnx::OnnxError),
    /// The output could not be written.
    #[error("writing the feature table: {0}")]
    Io(#[from] std::io::Error),
}

/// Feature snapshots of one clip: `(t_ms, features)` every `every_ms`
/// (a multiple of 20), up to `max_ms` of audio.
pub fn clip_features(
    path: &Path,
    every_ms: u64,
    max_ms: u64,
) -> Result<Vec<FeatureVector>, DatasetError> {
    let file = path.display().to_string();
    let wav = |source| DatasetError::Wav {
        file: file.clone(),
        source,
    };
    let mut reader = WavReader::open(path).map_err(wav)?;
    let mut frontend = Frontend::new()?;
    let mut out = Vec::new();
    while let Some(frame) = reader.next_frame().map_err(wav)? {
        if frame.media_ms >= max_ms {
            break;
        }
        frontend.push_frame(&frame, |_| {})?;
        if frame.end_ms().is_multiple_of(every_ms.max(20)) {
            out.push(frontend.snapshot());
        }
    }
    Ok(out)
}

/// Writes the feature table of every clip in `dir` as CSV to `out`.
pub fn write_table(
    dir: &Path,
    every_ms: u64,
    max_ms: u64,
    out: &mut impl Write,
    mut progress: impl FnMut(usize, usize),
) -> Result<usize, DatasetError> {
    let rows: Vec<LabelRow> = corpus::read_labels(dir)?;
    write!(
        out,
        "file,label,scenario,speech_end_ms,greeting_end_ms,beep_end_ms"
    )?;
    for name in FEATURE_NAMES {
        write!(out, ",{name}")?;
    }
    writeln!(out)?;
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut lines = 0;
    for (i, row) in rows.iter().enumerate() {
        for fv in clip_features(&dir.join(&row.file), every_ms, max_ms)? {
            write!(
                out,
                "{},{},{},{},{},{}",
                row.file,
                row.label.as_str(),
                row.scenario,
                opt(row.speech_end_ms),
                opt(row.greeting_end_ms),
                opt(row.beep_end_ms)
            )?;
            for v in fv {
                // `{}` prints the shortest text that reads back to the same f32
                write!(out, ",{v}")?;
            }
            writeln!(out)?;
            lines += 1;
        }
        progress(i + 1, rows.len());
    }
    Ok(lines)
}
