//! ONNX Runtime: where the library comes from, and how models are opened.
//!
//! dialgate links ONNX Runtime at run time (`ort`'s `load-dynamic`), so the
//! binary builds anywhere and the runtime is found when a model is first
//! needed, in this order:
//!
//! 1. `ORT_DYLIB_PATH` (the variable `ort` itself honours);
//! 2. the `onnx.runtime_path` config key ([`set_runtime_override`]);
//! 3. the cache: `$DIALGATE_CACHE_DIR`, else `$XDG_CACHE_HOME/dialgate`, else
//!    `~/.cache/dialgate`, under `onnxruntime/<version>/`;
//! 4. otherwise it is fetched once into that cache: the PyPI wheel
//!    `onnxruntime==1.32.0` is downloaded with the machine's own `pip`
//!    (honouring its index and certificate settings), its sha256 checked
//!    against the pin below, and the Python-independent
//!    `libonnxruntime.so.1.32.0` (with its licence files) extracted and
//!    atomically renamed into place. A file lock keeps concurrent first runs
//!    from fetching twice.
//!
//! Any failure names the step that failed and what to do about it.
//!
//! Sessions are created with one intra-op thread: dialgate runs many small
//! models in parallel (one per call), where ORT's own thread pools only add
//! contention.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

/// ONNX Runtime version we pin and test against.
pub const ORT_VERSION: &str = "1.32.0";
/// The library's path inside the wheel.
const LIB_IN_WHEEL: &str = "onnxruntime/capi/libonnxruntime.so.1.32.0";
const LIB_NAME: &str = "libonnxruntime.so.1.32.0";
/// Licence files shipped next to the library.
const LICENCES_IN_WHEEL: [&str; 2] = ["onnxruntime/LICENSE", "onnxruntime/ThirdPartyNotices.txt"];

/// One wheel per platform, pinned by sha256. Asking pip for fixed tags
/// (CPython 3.11, manylinux_2_28) makes the download the same file whatever
/// Python the machine runs: only the native library inside is used.
struct PinnedWheel {
    arch: &'static str,
    platform: &'static str,
    sha256: &'static str,
}

const WHEELS: [PinnedWheel; 2] = [
    PinnedWheel {
        arch: "x86_64",
        platform: "manylinux_2_28_x86_64",
        sha256: "5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d",
    },
    PinnedWheel {
        arch: "aarch64",
        platform: "manylinux_2_28_aarch64",
        sha256: "2303372a85299b6757b0e11e1cbf13e410ddf7e10c37f4b37e99d1c90e7daf7c",
    },
];

/// Errors finding, fetching or loading ONNX Runtime and models.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnnxError {
    /// No pinned wheel for this machine.
    #[error(
        "no pinned ONNX Runtime wheel for {os}/{arch}; install ONNX Runtime {ORT_VERSION} yourself and set ORT_DYLIB_PATH to its shared library"
    )]
    UnsupportedPlatform {
        os: &'static str,
        arch: &'static str,
    },
    /// An override points at a file that does not exist.
    #[error(
        "{origin} points at {path}, which does not exist; fix it or unset it to let dialgate fetch ONNX Runtime {ORT_VERSION} itself"
    )]
    OverrideMissing { origin: &'static str, path: PathBuf },
    /// Fetching the wheel failed at `step`.
    #[error(
        "fetching ONNX Runtime {ORT_VERSION} failed while {step}: {detail}\n  what to do: {hint}"
    )]
    Fetch {
        step: &'static str,
        detail: String,
        hint: String,
    },
    /// The downloaded wheel is not the pinned one.
    #[error(
        "the downloaded wheel {wheel} has sha256 {actual}, expected {expected}; refusing to use it (a tampered mirror or a re-uploaded file)"
    )]
    ChecksumMismatch {
        wheel: String,
        expected: &'static str,
        actual: String,
    },
    /// The library exists but could not be loaded.
    #[error("loading ONNX Runtime from {path} failed: {detail}")]
    Load { path: PathBuf, detail: String },
    /// A model could not be opened or run.
    #[error("model {model}: {detail}")]
    Model { model: String, detail: String },
}

impl OnnxError {
    /// Wraps an `ort` error raised while using `model`.
    pub fn model(model: impl Into<String>, e: impl std::fmt::Display) -> Self {
        Self::Model {
            model: model.into(),
            detail: e.to_string(),
        }
    }
}

/// Where the runtime library was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeSource {
    /// `ORT_DYLIB_PATH`.
    EnvVar,
    /// The `onnx.runtime_path` config key.
    Config,
    /// dialgate's cache, filled by an earlier run.
    Cache,
    /// Fetched from PyPI by this run.
    Fetched,
}

impl std::fmt::Display for RuntimeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::EnvVar => "ORT_DYLIB_PATH",
            Self::Config => "config onnx.runtime_path",
            Self::Cache => "dialgate cache",
            Self::Fetched => "fetched from PyPI just now",
        })
    }
}

/// The loaded runtime, as `doctor` reports it.
#[derive(Debug, Clone)]
pub struct RuntimeInfo {
    /// The shared library's path.
    pub path: PathBuf,
    /// How it was found.
    pub source: RuntimeSource,
    /// The version the library reports.
    pub version: String,
}

static CONFIG_OVERRIDE: Mutex<Option<PathBuf>> = Mutex::new(None);
static RUNTIME: OnceLock<(ort::environment::Environment, RuntimeInfo)> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// Sets the config-file override (call before the first model is opened).
pub fn set_runtime_override(path: Option<PathBuf>) {
    if let Ok(mut slot) = CONFIG_OVERRIDE.lock() {
        *slot = path;
    }
}

/// dialgate's cache directory.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DIALGATE_CACHE_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("dialgate");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("dialgate"),
        None => std::env::temp_dir().join("dialgate-cache"),
    }
}

fn runtime_dir() -> PathBuf {
    cache_dir().join("onnxruntime").join(ORT_VERSION)
}

fn pinned_wheel() -> Result<&'static PinnedWheel, OnnxError> {
    if std::env::consts::OS != "linux" {
        return Err(OnnxError::UnsupportedPlatform {
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        });
    }
    WHEELS
        .iter()
        .find(|w| w.arch == std::env::consts::ARCH)
        .ok_or(OnnxError::UnsupportedPlatform {
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        })
}

/// Finds the runtime library without loading it, fetching it if needed.
pub fn locate_runtime() -> Result<(PathBuf, RuntimeSource), OnnxError> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(p);
        return if path.exists() {
            Ok((path, RuntimeSource::EnvVar))
        } else {
            Err(OnnxError::OverrideMissing {
                origin: "ORT_DYLIB_PATH",
                path,
            })
        };
    }
    let configured = CONFIG_OVERRIDE.lock().ok().and_then(|g| g.clone());
    if let Some(path) = configured {
        return if path.exists() {
            Ok((path, RuntimeSource::Config))
        } else {
            Err(OnnxError::OverrideMissing {
                origin: "config key onnx.runtime_path",
                path,
            })
        };
    }
    let lib = runtime_dir().join(LIB_NAME);
    if lib.exists() {
        return Ok((lib, RuntimeSource::Cache));
    }
    fetch_runtime().map(|p| (p, RuntimeSource::Fetched))
}

fn fetch_err(step: &'static str, detail: impl std::fmt::Display) -> OnnxError {
    OnnxError::Fetch {
        step,
        detail: detail.to_string(),
        hint: format!(
            "make sure `python3 -m pip download onnxruntime=={ORT_VERSION}` works on this machine (pip installed, PyPI reachable), \
             or point ORT_DYLIB_PATH at an existing libonnxruntime.so.{ORT_VERSION}; the cache is {}",
            runtime_dir().display()
        ),
    }
}

fn python() -> String {
    if let Ok(p) = std::env::var("DIALGATE_PYTHON")
        && !p.is_empty()
    {
        return p;
    }
    for candidate in ["python3", "python"] {
        if Command::new(candidate).arg("--version").output().is_ok() {
            return candidate.to_string();
        }
    }
    "python3".to_string()
}

/// Downloads, verifies and unpacks the pinned wheel; returns the library path.
fn fetch_runtime() -> Result<PathBuf, OnnxError> {
    let wheel = pinned_wheel()?;
    let dir = runtime_dir();
    std::fs::create_dir_all(&dir).map_err(|e| {
        fetch_err(
            "creating the cache directory",
            format!("{}: {e}", dir.display()),
        )
    })?;
    // Serialise concurrent first runs (parallel test binaries, two servers).
    let lock = std::fs::File::create(dir.join(".lock"))
        .map_err(|e| fetch_err("creating the cache lock", e))?;
    lock.lock().map_err(|e| fetch_err("locking the cache", e))?;
    let lib = dir.join(LIB_NAME);
    if lib.exists() {
        return Ok(lib);
    }
    let tmp = dir.join(format!("download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| fetch_err("creating a download directory", e))?;
    let result = download_and_extract(wheel, &tmp, &dir, &lib);
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|()| lib)
}

fn download_and_extract(
    wheel: &PinnedWheel,
    tmp: &Path,
    dir: &Path,
    lib: &Path,
) -> Result<(), OnnxError> {
    let py = python();
    tracing::info!(
        version = ORT_VERSION,
        platform = wheel.platform,
        "fetching ONNX Runtime with pip (first run only)"
    );
    let output = Command::new(&py)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args([
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
        ])
        .args(["--platform", wheel.platform])
        .arg(format!("onnxruntime=={ORT_VERSION}"))
        .arg("--dest")
        .arg(tmp)
        .arg("--quiet")
        .output()
        .map_err(|e| fetch_err("starting pip", format!("`{py} -m pip`: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(fetch_err(
            "downloading the wheel with pip",
            format!(
                "`{py} -m pip download` exited with {}: {}",
                output.status,
                tail.join(" | ")
            ),
        ));
    }
    let whl = std::fs::read_dir(tmp)
        .map_err(|e| fetch_err("listing the download", e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| {
            fetch_err(
                "finding the downloaded wheel",
                "pip reported success but left no .whl",
            )
        })?;
    let mut file = std::fs::File::open(&whl).map_err(|e| fetch_err("opening the wheel", e))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(|e| fetch_err("hashing the wheel", e))?;
    let actual = hex::encode(hasher.finalize());
    if actual != wheel.sha256 {
        return Err(OnnxError::ChecksumMismatch {
            wheel: whl
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            expected: wheel.sha256,
            actual,
        });
    }
    let file = std::fs::File::open(&whl).map_err(|e| fetch_err("opening the wheel", e))?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| fetch_err("reading the wheel as a zip", e))?;
    for name in LICENCES_IN_WHEEL {
        if let Ok(mut entry) = zip.by_name(name) {
            let mut text = Vec::new();
            if entry.read_to_end(&mut text).is_ok() {
                let base = Path::new(name).file_name().unwrap_or_default();
                let _ = std::fs::write(dir.join(base), text);
            }
        }
    }
    let mut entry = zip.by_name(LIB_IN_WHEEL).map_err(|e| {
        fetch_err(
            "finding the library in the wheel",
            format!("{LIB_IN_WHEEL}: {e}"),
        )
    })?;
    let partial = dir.join(format!("{LIB_NAME}.partial-{}", std::process::id()));
    {
        let mut out =
            std::fs::File::create(&partial).map_err(|e| fetch_err("writing the library", e))?;
        io::copy(&mut entry, &mut out).map_err(|e| fetch_err("extracting the library", e))?;
        out.flush()
            .map_err(|e| fetch_err("writing the library", e))?;
        out.sync_all()
            .map_err(|e| fetch_err("writing the library", e))?;
    }
    std::fs::rename(&partial, lib)
        .map_err(|e| fetch_err("moving the library into the cache", e))?;
    tracing::info!(path = %lib.display(), "ONNX Runtime cached");
    Ok(())
}

/// The process-wide ONNX Runtime environment, loading (and if needed
/// fetching) the library on first use.
pub fn environment() -> Result<&'static ort::environment::Environment, OnnxError> {
    if let Some((env, _)) = RUNTIME.get() {
        return Ok(env);
    }
    let _guard = INIT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((env, _)) = RUNTIME.get() {
        return Ok(env);
    }
    let (path, source) = locate_runtime()?;
    let load = |detail: String| OnnxError::Load {
        path: path.clone(),
        detail,
    };
    let builder = ort::init_from(&path).map_err(|e| load(e.to_string()))?;
    let env = builder
        .with_name("dialgate")
        .with_telemetry(false)
        .build()
        .map_err(|e| load(e.to_string()))?;
    let version = ort::info()
        .split(',')
        .find_map(|kv| kv.trim().strip_prefix("git-branch=rel-"))
        .unwrap_or(ORT_VERSION)
        .to_string();
    let info = RuntimeInfo {
        path,
        source,
        version,
    };
    let _ = RUNTIME.set((env, info));
    RUNTIME
        .get()
        .map(|(env, _)| env)
        .ok_or_else(|| OnnxError::Load {
            path: PathBuf::new(),
            detail: "environment vanished after initialisation".into(),
        })
}

/// What was loaded, once [`environment`] succeeded.
pub fn runtime_info() -> Option<&'static RuntimeInfo> {
    RUNTIME.get().map(|(_, info)| info)
}

/// Opens a model from memory with one intra-op thread.
pub fn session_from_memory(name: &str, bytes: &[u8]) -> Result<ort::session::Session, OnnxError> {
    let env = environment()?;
    ort::session::Session::builder(env)
        .and_then(|b| b.with_intra_threads(1).map_err(Into::into))
        .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
        .and_then(|mut b| b.commit_from_memory(bytes))
        .map_err(|e| OnnxError::model(name, e))
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One input or output of a model, for `doctor`.
#[derive(Debug, Clone)]
pub struct Port {
    /// Tensor name.
    pub name: String,
    /// Element type and shape as ORT prints them.
    pub ty: String,
}

/// Inputs and outputs of a session.
pub fn signature(session: &ort::session::Session) -> (Vec<Port>, Vec<Port>) {
    let ports = |outlets: &[ort::value::Outlet]| {
        outlets
            .iter()
            .map(|o| Port {
                name: o.name().to_string(),
                ty: o.dtype().to_string(),
            })
            .collect()
    };
    (ports(session.inputs()), ports(session.outputs()))
}
