//! The blob parser, the engine and the host fast path on arbitrary bytes: never a panic, never an
//! out-of-bounds, and the fast path's `y` is the engine's, bit for bit.
//!
//! Each input is tried twice: as a whole blob (the header checks), and as a payload given a
//! valid header and checksum, so the structural checks and the engine itself are reached.
#![no_main]

use dim_runtime::engine::{Model, blob};
use dim_runtime::fast::FastModel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Model::parse(data);
    let mut framed = Vec::with_capacity(blob::HEADER_LEN + data.len());
    framed.extend(blob::MAGIC);
    framed.extend(blob::VERSION.to_le_bytes());
    framed.extend([0, 0]);
    framed.extend((data.len() as u32).to_le_bytes());
    framed.extend(blob::checksum(data).to_le_bytes());
    framed.extend(data);
    if let Ok(model) = Model::parse(&framed) {
        // Shapes that parse may still ask for a huge arena; a device would refuse them too.
        if model.arena_size() > 1 << 22 {
            return;
        }
        let mut arena = vec![0u8; model.arena_size()];
        let mut y = vec![0f32; model.dim()];
        let mut rgb = [0u8; 3072];
        rgb.iter_mut().zip(data.iter().cycle()).for_each(|(p, d)| *p = *d);
        model.run(&rgb, &mut arena, &mut y).expect("a parsed model runs with its own arena size");
        let mut q = vec![0i8; y.len()];
        model.quantize_output(&y, &mut q);
        for fast in [FastModel::new(&model), FastModel::portable(&model), FastModel::signed(&model)] {
            let mut y2 = vec![0f32; model.dim()];
            fast.run(&rgb, &mut dim_runtime::fast::Scratch::default(), &mut y2).expect("the fast path runs what the engine runs");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y), bits(&y2), "the fast path differs from the engine");
        }
    }
});
