//! The blocking LLM verifier for file drivers (`amd classify`, `amd bench`):
//! it runs [`LlmVerifier`] on a small private runtime and times the answer,
//! which the benchmark then replays on the detector's virtual clock. A
//! driver, so it lives outside `src/detect`, whose cores never read a clock.

use std::time::{Duration, Instant};

use crate::detect::amd::LlmVerdict;
use crate::detect::bench::Verifier;
use crate::detect::llm::{LlmError, LlmVerifier};

/// Blocks on one verification per call.
pub struct BlockingVerifier {
    inner: LlmVerifier,
    rt: tokio::runtime::Runtime,
}

impl BlockingVerifier {
    /// Wraps `inner`.
    pub fn new(inner: LlmVerifier) -> Result<Self, LlmError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LlmError::Config(e.to_string()))?;
        Ok(Self { inner, rt })
    }
}

impl Verifier for BlockingVerifier {
    fn verify(&self, wav: &[u8], budget: Duration) -> (LlmVerdict, Duration, Option<String>) {
        let start = Instant::now();
        let result = self.rt.block_on(self.inner.verify_async(wav, budget));
        let took = start.elapsed();
        match result {
            Ok(p) => (LlmVerdict::Answer { p_machine: p }, took, None),
            Err(e) => {
                tracing::warn!(error = %e, "LLM verification failed; falling back");
                (LlmVerdict::Failed, took, Some(e.to_string()))
            }
        }
    }
}
