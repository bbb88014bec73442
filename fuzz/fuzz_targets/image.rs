//! The image reader `fit`, `eval` and `embed` use on users' files: any bytes give a 32×32 image
//! or a `DataError`, never a panic, and never more memory than the documented decode limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dim_data::decode_bytes(data, std::path::Path::new("fuzz-input"));
});
