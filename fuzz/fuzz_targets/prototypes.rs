//! The prototypes file reader on arbitrary bytes: never a panic. Like `blob`, each input is also
//! tried as a payload behind a valid header and checksum, so the checks behind the CRC are reached,
//! and what parses is walked (labels, prototypes) and loaded into a store as the firmware does.
#![no_main]

use dim_runtime::PrototypeStore;
use dim_runtime::engine::blob::checksum;
use dim_runtime::prototypes::file::{HEADER_LEN, MAGIC, PrototypeFile, VERSION};
use libfuzzer_sys::fuzz_target;

fn walk(f: &PrototypeFile) {
    let names = f.label_names().count();
    assert_eq!(names, f.labels(), "every label the header counts has a name");
    for (label, e) in f.prototypes() {
        assert!((label as usize) < names && e.len() == f.dim);
    }
    let mut store = PrototypeStore::<64, 64>::new();
    if f.load_into(&mut store).is_ok() {
        assert_eq!(store.len(), f.len());
        let _ = store.nearest(&[1; 64]);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = PrototypeFile::parse(data) {
        walk(&f);
    }
    let mut framed = Vec::with_capacity(HEADER_LEN + data.len());
    framed.extend(MAGIC);
    framed.extend(VERSION.to_le_bytes());
    framed.extend([0, 0]);
    framed.extend((data.len() as u32).to_le_bytes());
    framed.extend(checksum(data).to_le_bytes());
    framed.extend(data);
    if let Ok(f) = PrototypeFile::parse(&framed) {
        walk(&f);
    }
});
