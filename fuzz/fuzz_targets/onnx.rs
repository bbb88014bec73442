//! `Encoder` (tract, and the float path where the file has `trainer export`'s form) on
//! arbitrary bytes as a model file: a loaded encoder or an `Error`, never a panic; a model that
//! loads embeds an image.
#![no_main]

use dim_runtime::{Encoder, INPUT_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(encoder) = Encoder::from_bytes(data) {
        let y = encoder.embed_preprocessed(&[0.5; INPUT_LEN]);
        if let Ok(y) = y {
            assert_eq!(y.len(), encoder.dim());
        }
    }
});
