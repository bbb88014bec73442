//! The firmware in QEMU (Arm MPS2 AN386, Cortex-M4): build it for thumbv7em-none-eabihf, run
//! it, and compare its `embedding:` line with tract's output for the same image and model.

use std::path::PathBuf;
use std::process::Command;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tiny").join(name)
}

/// A target folder of its own: the `cargo test` that runs this holds the lock on the outer one.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join("firmware-build")
}

#[test]
fn firmware_in_qemu_prints_tracts_embedding() {
    if Command::new("qemu-system-arm").arg("--version").output().is_err() {
        panic!("qemu-system-arm not found: run scripts/setup (Debian package qemu-system-arm)");
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = target_dir();
    let build = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "-p", "dim-firmware", "--target", "thumbv7em-none-eabihf"])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(build.status.success(), "firmware build failed:\n{}", String::from_utf8_lossy(&build.stderr));
    let elf = target.join("thumbv7em-none-eabihf/release/dim-firmware");
    let run = Command::new("timeout")
        .args([
            "120",
            "qemu-system-arm",
            "-cpu",
            "cortex-m4",
            "-machine",
            "mps2-an386",
            "-nographic",
            "-semihosting-config",
            "enable=on,target=native",
            "-kernel",
        ])
        .arg(&elf)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "QEMU exit {:?}:\n{out}\n{}", run.status, String::from_utf8_lossy(&run.stderr));
    let line = out.lines().find_map(|l| l.strip_prefix("embedding: ")).unwrap_or_else(|| panic!("no embedding line in:\n{out}"));
    let got: Vec<i8> = line.split(',').map(|v| v.trim().parse().unwrap()).collect();

    // tract, on the same image through the same int8 model, printed with the blob's scale.
    let rgb: dim_runtime::Rgb32 = std::fs::read(data("golden.rgb")).unwrap().try_into().unwrap();
    let mut input = vec![0f32; dim_runtime::INPUT_LEN];
    dim_runtime::preprocess::rgb32_to_input(&rgb, &mut input).unwrap();
    let int8 = std::fs::read(data("encoder.int8.onnx")).unwrap();
    let y = dim_runtime::Encoder::from_bytes_as_written(&int8).unwrap().embed_preprocessed(&input).unwrap();
    let blob = std::fs::read(data("encoder.blob")).unwrap();
    let model = dim_runtime::engine::Model::parse(&blob).unwrap();
    let mut want = vec![0i8; y.len()];
    model.quantize_output(&y, &mut want);
    assert_eq!(got.len(), want.len());
    let worst = got.iter().zip(&want).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
    assert!(worst <= 1, "firmware {got:?}\ntract    {want:?}");
    eprintln!("firmware == tract on {} of {} values (worst {worst} LSB)", got.iter().zip(&want).filter(|(a, b)| a == b).count(), got.len());
}
