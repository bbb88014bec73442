//! The IDX reader (MNIST-style files, raw or gzip): any pair of images/labels bytes gives a
//! source whose every image loads, or a `DataError`; never a panic, never an allocation the
//! header asks for before the bytes are there.
#![no_main]

use dim_data::{ImageSource, Idx};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    // The first byte says where the images file ends and the labels file starts.
    let Some((&cut, rest)) = data.split_first() else { return };
    let (images, labels) = rest.split_at(cut as usize * rest.len() / 256);
    let with_labels = Idx::from_bytes((Path::new("images"), images), Some((Path::new("labels"), labels)));
    let without = Idx::from_bytes((Path::new("images"), rest), None);
    for source in [with_labels, without].into_iter().flatten() {
        for i in 0..source.len().min(8) {
            source.load(i).expect("every image of a parsed IDX file loads");
            assert!(source.label(i) < source.classes().len());
        }
    }
});
