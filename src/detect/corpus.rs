//! Labelled audio for AMD benchmarks: the `labels.csv` format of AMD.md.
//!
//! ```text
//! file,label,speech_end_ms,greeting_end_ms,beep_end_ms,scenario
//! human/hello_01.wav,human,820,,,hello_silence
//! vm/greet_07.wav,machine,,6410,6890,personal_vm_beep
//! ```
//!
//! Users bring their own recordings in this format, so every row is
//! validated and a bad one is reported with its line number and reason.

use std::path::{Path, PathBuf};

/// What is really on a clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Truth {
    /// A person answered.
    Human,
    /// A voicemail, IVR or other recording.
    Machine,
    /// A fax machine.
    Fax,
    /// Special information tones.
    Sit,
    /// Nothing (dead air); correct when called `unknown`.
    Silence,
}

impl Truth {
    /// The label as written in `labels.csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Human => "human",
            Self::Machine => "machine",
            Self::Fax => "fax",
            Self::Sit => "sit",
            Self::Silence => "silence",
        }
    }

    /// Case and surrounding blanks do not matter: a table kept in a
    /// spreadsheet comes back as "Human" or "MACHINE ".
    fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        [
            Self::Human,
            Self::Machine,
            Self::Fax,
            Self::Sit,
            Self::Silence,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

/// One labelled clip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRow {
    /// Path relative to the corpus directory.
    pub file: String,
    /// The truth.
    pub label: Truth,
    /// Human clips: end of the first utterance (ms from answer).
    pub speech_end_ms: Option<u64>,
    /// Machine clips: end of the greeting.
    pub greeting_end_ms: Option<u64>,
    /// Machine clips: end of the beep; `None` when the clip has none.
    pub beep_end_ms: Option<u64>,
    /// Whether `labels.csv` has a `beep_end_ms` column at all. A table of
    /// recordings labelled only human or machine says nothing about beeps,
    /// and a beep found on one of its voicemails is not a false one.
    pub beep_labelled: bool,
    /// Free-form scenario tag.
    pub scenario: String,
}

/// Errors reading a corpus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CorpusError {
    /// `labels.csv` could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A row is malformed.
    #[error("{path}:{line}: {reason}")]
    BadRow {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    /// The header lacks a required column.
    #[error(
        "{path}: header has no `{column}` column (expected file,label,speech_end_ms,greeting_end_ms,beep_end_ms,scenario)"
    )]
    MissingColumn { path: PathBuf, column: &'static str },
}

/// Reads and validates `dir/labels.csv`.
pub fn read_labels(dir: &Path) -> Result<Vec<LabelRow>, CorpusError> {
    let path = dir.join("labels.csv");
    let file = std::fs::File::open(&path).map_err(|source| CorpusError::Io {
        path: path.clone(),
        source,
    })?;
    parse_labels(file, &path)
}

/// Parses `labels.csv` content; `path` is only used in errors.
pub fn parse_labels(reader: impl std::io::Read, path: &Path) -> Result<Vec<LabelRow>, CorpusError> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let bad = |line: u64, reason: String| CorpusError::BadRow {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let headers = rdr
        .headers()
        .map_err(|e| bad(1, format!("unreadable header: {e}")))?
        .clone();
    let col = |name: &'static str| -> Result<usize, CorpusError> {
        headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
            .ok_or(CorpusError::MissingColumn {
                path: path.to_path_buf(),
                column: name,
            })
    };
    let (c_file, c_label) = (col("file")?, col("label")?);
    let opt = |name| {
        headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let (c_speech, c_greet, c_beep, c_scen) = (
        opt("speech_end_ms"),
        opt("greeting_end_ms"),
        opt("beep_end_ms"),
        opt("scenario"),
    );
    let mut rows = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let line = i as u64 + 2;
        let rec = rec.map_err(|e| bad(line, e.to_string()))?;
        let get = |c: Option<usize>| c.and_then(|c| rec.get(c)).unwrap_or("").trim();
        let file = get(Some(c_file)).to_string();
        if file.is_empty() {
            return Err(bad(line, "empty `file`".into()));
        }
        if Path::new(&file).is_absolute() || file.split(['/', '\\']).any(|p| p == "..") {
            return Err(bad(
                line,
                format!("`file` must be a path inside the corpus, got {file:?}"),
            ));
        }
        let label_text = get(Some(c_label));
        let label = Truth::parse(label_text).ok_or_else(|| {
            bad(
                line,
                format!("label {label_text:?} is not one of human, machine, fax, sit, silence"),
            )
        })?;
        let ms = |c: Option<usize>, name: &str| -> Result<Option<u64>, CorpusError> {
            let v = get(c);
            if v.is_empty() {
                return Ok(None);
            }
            v.parse::<u64>().map(Some).map_err(|_| {
                bad(
                    line,
                    format!("{name} {v:?} is not a whole number of milliseconds"),
                )
            })
        };
        rows.push(LabelRow {
            file,
            label,
            speech_end_ms: ms(c_speech, "speech_end_ms")?,
            greeting_end_ms: ms(c_greet, "greeting_end_ms")?,
            beep_end_ms: ms(c_beep, "beep_end_ms")?,
            beep_labelled: c_beep.is_some(),
            scenario: get(c_scen).to_string(),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<LabelRow>, CorpusError> {
        parse_labels(s.as_bytes(), Path::new("labels.csv"))
    }

    #[test]
    fn reads_the_documented_example() {
        let rows = parse(
            "file,label,speech_end_ms,greeting_end_ms,beep_end_ms,scenario\n\
             human/hello_01.wav,human,820,,,hello_silence\n\
             vm/greet_07.wav,machine,,6410,6890,personal_vm_beep\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].speech_end_ms, Some(820));
        assert_eq!(rows[1].label, Truth::Machine);
        assert_eq!(rows[1].beep_end_ms, Some(6890));
        assert!(rows.iter().all(|r| r.beep_labelled));
    }

    #[test]
    fn a_spreadsheet_export_reads_the_same() {
        // Excel writes a byte-order mark and CRLF, and people capitalise.
        let rows = parse(
            "\u{feff}File,Label,Speech_End_ms,scenario\r\n\
             a.wav, Human ,820,hello\r\n\
             b.wav,MACHINE,,greeting\r\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].label, Truth::Human);
        assert_eq!(rows[0].speech_end_ms, Some(820));
        assert_eq!(rows[1].label, Truth::Machine);
        assert_eq!(rows[1].scenario, "greeting");
        // (no beep_end_ms column: beeps are not labelled, not absent)
        assert!(
            rows.iter()
                .all(|r| !r.beep_labelled && r.beep_end_ms.is_none())
        );
    }

    #[test]
    fn bad_rows_name_their_line() {
        let err = parse("file,label\na.wav,human\nb.wav,robot\n").unwrap_err();
        assert!(err.to_string().contains("labels.csv:3"), "{err}");
        assert!(err.to_string().contains("robot"), "{err}");
        let err = parse("file,label,speech_end_ms\na.wav,human,soon\n").unwrap_err();
        assert!(
            err.to_string().contains(":2") && err.to_string().contains("soon"),
            "{err}"
        );
        assert!(matches!(
            parse("name,label\n"),
            Err(CorpusError::MissingColumn { column: "file", .. })
        ));
        assert!(parse("file,label\n../etc/passwd,human\n").is_err());
        assert!(parse("file,label\n,human\n").is_err());
        assert!(parse("").is_err());
    }
}
