//! The WAV reader (amd classify / bench, the sim's clips) on arbitrary bytes:
//! a clear error or frames, never a panic or an endless loop.
#![no_main]

use dialgate::audio::wav::WavReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = WavReader::new(data) else {
        return;
    };
    // A header may claim gigabytes; the bytes given bound what can be read.
    for _ in 0..=data.len() {
        match reader.next_frame() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
});
