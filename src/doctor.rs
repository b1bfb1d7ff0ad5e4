//! `dialgate doctor`: checks everything dialgate loads at run time (ONNX
//! Runtime, each model, the Opus codec) and says plainly what is missing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::audio::opus;
use crate::detect::vad::{self, SileroVad, VadRate};
use crate::onnx;

/// A model embedded in the binary.
pub struct EmbeddedModel {
    /// File name under `models/`.
    pub file: &'static str,
    /// What it is for.
    pub purpose: &'static str,
    /// The bytes compiled in.
    pub bytes: &'static [u8],
}

/// Every model dialgate runs.
pub fn models() -> Vec<EmbeddedModel> {
    vec![EmbeddedModel {
        file: vad::MODEL_FILE,
        purpose: "voice activity (Silero VAD v6, MIT)",
        bytes: vad::MODEL,
    }]
}

/// Where the repo's `models/` directory is, if we can find one: to compare
/// the embedded copies with the files beside the source.
fn models_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DIALGATE_MODELS_DIR") {
        return Some(PathBuf::from(dir));
    }
    [
        PathBuf::from("models"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models"),
    ]
    .into_iter()
    .find(|p| p.is_dir())
}

/// The outcome of one check.
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// The details to print.
    pub detail: String,
}

/// Runs every check; the report is printable and `ok` is false when any
/// check failed.
pub fn run() -> (Vec<Check>, bool) {
    let mut checks = Vec::new();

    match onnx::environment() {
        Ok(_) => {
            let info = onnx::runtime_info();
            let detail = match info {
                Some(i) => format!(
                    "version {} (pinned {})\n    path    {}\n    source  {}",
                    i.version,
                    onnx::ORT_VERSION,
                    i.path.display(),
                    i.source
                ),
                None => "loaded".into(),
            };
            checks.push(Check {
                name: "ONNX Runtime".into(),
                ok: true,
                detail,
            });
        }
        Err(e) => checks.push(Check {
            name: "ONNX Runtime".into(),
            ok: false,
            detail: e.to_string(),
        }),
    }
    let runtime_ok = checks[0].ok;

    let dir = models_dir();
    for model in models() {
        let mut detail = String::new();
        let mut ok = true;
        let digest = onnx::sha256_hex(model.bytes);
        let _ = writeln!(detail, "{}", model.purpose);
        let _ = write!(
            detail,
            "    sha256  {digest} ({} bytes, embedded)",
            model.bytes.len()
        );
        if let Some(dir) = &dir {
            let path = dir.join(model.file);
            match std::fs::read(&path) {
                Ok(bytes) if onnx::sha256_hex(&bytes) == digest => {
                    let _ = write!(detail, "\n    file    {} (matches)", path.display());
                }
                Ok(_) => {
                    ok = false;
                    let _ = write!(
                        detail,
                        "\n    file    {} DIFFERS from the embedded copy: rebuild dialgate",
                        path.display()
                    );
                }
                Err(_) => {
                    let _ = write!(
                        detail,
                        "\n    file    not in {} (the embedded copy is used)",
                        dir.display()
                    );
                }
            }
        }
        if runtime_ok {
            match onnx::session_from_memory(model.file, model.bytes) {
                Ok(session) => {
                    let (inputs, outputs) = onnx::signature(&session);
                    for p in inputs {
                        let _ = write!(detail, "\n    input   {} {}", p.name, p.ty);
                    }
                    for p in outputs {
                        let _ = write!(detail, "\n    output  {} {}", p.name, p.ty);
                    }
                }
                Err(e) => {
                    ok = false;
                    let _ = write!(detail, "\n    cannot open: {e}");
                }
            }
        }
        checks.push(Check {
            name: format!("model {}", model.file),
            ok,
            detail,
        });
    }

    if runtime_ok {
        let check = SileroVad::new(VadRate::Hz8000).and_then(|mut v| v.process_chunk(&[0i16; 256]));
        checks.push(match check {
            Ok(p) => Check {
                name: "VAD inference".into(),
                ok: (0.0..=1.0).contains(&p),
                detail: format!("one 8 kHz chunk of silence -> p(speech) = {p:.3}"),
            },
            Err(e) => Check {
                name: "VAD inference".into(),
                ok: false,
                detail: e.to_string(),
            },
        });
    }

    checks.push(match opus::self_test() {
        Ok(len) => Check {
            name: "Opus".into(),
            ok: true,
            detail: format!(
                "{}\n    20 ms at 48 kHz encoded to {len} bytes and decoded",
                opus::IMPLEMENTATION
            ),
        },
        Err(e) => Check {
            name: "Opus".into(),
            ok: false,
            detail: e.to_string(),
        },
    });

    let ok = checks.iter().all(|c| c.ok);
    (checks, ok)
}

/// Formats the checks for a terminal.
pub fn report(checks: &[Check]) -> String {
    let mut out = format!("dialgate {}\n", env!("CARGO_PKG_VERSION"));
    for c in checks {
        let _ = writeln!(
            out,
            "[{}] {}: {}",
            if c.ok { " ok " } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    out
}
