//! The firmware's serial session (`dim_firmware::session`) on arbitrary bytes, as a UART would
//! deliver them: split into lines by `Lines`, each line run by a `Session` on the shipped tiny
//! blob and prototypes. Never a panic, and every line that ends gets exactly one answer line —
//! the device keeps serving whatever it is sent.
#![no_main]

use dim_firmware::session::{Lines, Session};
use dim_runtime::engine::Model;
use dim_runtime::prototypes::file::PrototypeFile;
use libfuzzer_sys::fuzz_target;

static BLOB: &[u8] = include_bytes!("../../models/tiny/encoder.blob");
static PROTOTYPES: &[u8] = include_bytes!("../../models/tiny/prototypes.bin");

fuzz_target!(|data: &[u8]| {
    let model = Model::parse(BLOB).expect("the shipped blob parses");
    let protos = PrototypeFile::parse(PROTOTYPES).expect("the shipped prototypes parse");
    let mut session = Session::new(model, Some(&protos)).expect("the shipped prototypes fit");
    let mut arena = vec![0u8; 16 * 1024];
    let mut lines = Lines::<6200>::new();
    for &b in data {
        let mut out = String::new();
        let mut ended = false;
        lines.push(b, |line| {
            ended = true;
            match line {
                Ok(cmd) => session.handle(cmd, &mut arena, &mut out).expect("a String takes every write"),
                Err(e) => out = format!("error: {e}\n"),
            }
        });
        if ended {
            assert!(out.ends_with('\n') && out.matches('\n').count() == 1, "one answer line per command: {out:?}");
        }
    }
});
