//! The AMD classifier: the average of five gradient-boosted tree ensembles
//! (one ONNX graph) over the features of
//! [`super::features`], trained by `models/train_amd.py` and run with ONNX
//! Runtime. Embedded in the binary from `models/amd.onnx` (model card:
//! `models/amd.md`). Like the VAD, one session per worker thread; the
//! per-call state is nothing but the features.

use std::cell::RefCell;

use ort::session::Session;
use ort::value::TensorRef;

use super::features::{FeatureVector, N_FEATURES};
use crate::onnx::{self, OnnxError};

/// The model, embedded.
pub const MODEL: &[u8] = include_bytes!("../../models/amd.onnx");
/// Its file name under `models/`.
pub const MODEL_FILE: &str = "amd.onnx";

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

/// Loads the model on this thread now (so a broken runtime fails at call
/// set-up rather than mid-call).
pub fn warm_up() -> Result<(), OnnxError> {
    p_machine(&[0.0; N_FEATURES]).map(|_| ())
}

/// p(machine) for one feature vector.
pub fn p_machine(features: &FeatureVector) -> Result<f32, OnnxError> {
    SESSION.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(onnx::session_from_memory(MODEL_FILE, MODEL)?);
        }
        let Some(session) = slot.as_mut() else {
            return Err(OnnxError::model(MODEL_FILE, "session missing"));
        };
        let model = |e: ort::Error| OnnxError::model(MODEL_FILE, e);
        let input =
            TensorRef::from_array_view(([1usize, N_FEATURES], &features[..])).map_err(model)?;
        let outputs = session.run(ort::inputs![input]).map_err(model)?;
        // outputs: label [1], probabilities [1, 2] (zipmap disabled)
        let (_, probs) = outputs[1].try_extract_tensor::<f32>().map_err(model)?;
        probs.get(1).copied().ok_or_else(|| {
            OnnxError::model(MODEL_FILE, "probabilities output has fewer than 2 values")
        })
    })
}
