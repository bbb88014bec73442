//! The no_std engine on the committed `tiny` blob and image, against tract's embedding of the
//! same image with the same int8 model (`golden.tiny.int8.y.txt`, made on x86-64 by
//! `tests/tests/fixtures.rs`). Runs on every target, aarch64 under QEMU included.

use dim_runtime::engine::Model;

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn engine_reproduces_tracts_embedding() {
    let blob = data("tiny.blob");
    let rgb: dim_runtime::Rgb32 = data("golden.rgb").try_into().unwrap();
    let want: Vec<f32> = String::from_utf8(data("golden.tiny.int8.y.txt")).unwrap().split_whitespace().map(|v| v.parse().unwrap()).collect();
    let model = Model::parse(&blob).unwrap();
    let mut arena = vec![0u8; model.arena_size()];
    let mut y = vec![0f32; model.dim()];
    model.run(&rgb, &mut arena, &mut y).unwrap();
    let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
    let rel = y.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale;
    assert!(rel <= 1e-6, "relative |Δy| {rel}");
    let (mut q, mut qw) = (vec![0i8; y.len()], vec![0i8; y.len()]);
    model.quantize_output(&y, &mut q);
    model.quantize_output(&want, &mut qw);
    assert!(q.iter().zip(&qw).all(|(a, b)| (*a as i32 - *b as i32).abs() <= 1), "{q:?} vs {qw:?}");
}

#[test]
fn arena_size_is_the_two_largest_alternating_activations_and_a_column() {
    let blob = data("tiny.blob");
    let m = Model::parse(&blob).unwrap();
    // tiny's activations in order: image, conv1 (16×16), conv2 (8×8), conv3 (4×4), pool, fc.
    let c = &m.convs;
    let sizes = [dim_runtime::RGB32_LEN, c[0].out * 256, c[1].out * 64, c[2].out * 16, c[2].out, m.fc.out];
    let even = sizes.iter().step_by(2).max().unwrap();
    let odd = sizes.iter().skip(1).step_by(2).max().unwrap();
    // The widest gathered column: conv3's 64 inputs × 3 × 3 taps, as i16 pairs in 288 words,
    // and 3 bytes to align them wherever the arena starts.
    let column = 2 * c[2].inp * c[2].kernel * c[2].kernel + 3;
    assert_eq!(column, 1155);
    assert_eq!(m.arena_size(), even + odd + column);
    assert!(m.pool_scale.is_some());
}
