//! The C example (`examples/c/embed.c`) compiled with a C compiler against `libdim_runtime_c.a`
//! and run: its rows equal `trainer embed`'s on the same images (`examples/c/expected.*.csv`,
//! written by `trainer embed` from the PNG twins of the example's PPM / PGM files; the trainer's
//! test `embed_matches_the_c_example_golden_rows` keeps those files current), for the int8
//! ONNX file through tract and for the engine blob.
//!
//! Natively this runs in `cargo test --workspace --release` with `cc`. CI also runs it for
//! 64-bit ARM (`cargo test --release -p dim-capi --target aarch64-unknown-linux-gnu`, under
//! QEMU): then the example is compiled with `aarch64-linux-gnu-gcc` and, since an emulated
//! process cannot start an ARM program directly, run with `qemu-aarch64 -L /usr/aarch64-linux-gnu`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `libdim_runtime_c.a` of this build. `cargo test` compiles the library once with every crate
/// type of its `[lib]` (cdylib, staticlib, rlib) into the `deps/` folder this test runs from, with
/// this test's features and profile, so the C example links what the test build made. (Calling
/// `cargo build -p dim-capi` here instead resolved the features of a one-package build and
/// recompiled tract and its dependencies: 6 of CI's 90 minutes, twice with the ARM run.)
fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let lib = exe.with_file_name("libdim_runtime_c.a");
    assert!(lib.exists(), "{} is missing: `cargo test -p dim-capi` builds it beside this test", lib.display());
    lib
}

fn c_compiler() -> String {
    if let Ok(cc) = std::env::var("DIM_CC") {
        return cc;
    }
    let cross = "aarch64-linux-gnu-gcc";
    if cfg!(target_arch = "aarch64") && Command::new(cross).arg("--version").output().is_ok() { cross.into() } else { "cc".into() }
}

/// Runs `exe args`; an ARM program started from an emulated process goes through QEMU.
fn run(exe: &Path, args: &[PathBuf]) -> std::process::Output {
    let qemu =
        || Command::new("qemu-aarch64").args(["-L", "/usr/aarch64-linux-gnu"]).arg(exe).args(args).output().expect("qemu-aarch64 (scripts/setup installs it)");
    match Command::new(exe).args(args).output() {
        // This process is itself emulated and the host has no binfmt handler for ARM programs:
        // the exec fails with ENOEXEC, or — when the spawn's error cannot travel back through
        // QEMU's emulated vfork — as a child that exits 127 having printed nothing.
        Err(e) if cfg!(target_arch = "aarch64") && e.raw_os_error() == Some(8) => qemu(),
        Ok(out) if cfg!(target_arch = "aarch64") && out.status.code() == Some(127) && out.stdout.is_empty() && out.stderr.is_empty() => qemu(),
        r => r.expect("the compiled example runs"),
    }
}

fn rows(text: &str, skip_header: bool) -> Vec<Vec<f32>> {
    text.lines()
        .skip(skip_header as usize)
        .map(|l| {
            let fields: Vec<&str> = if skip_header { l.rsplit(',').collect() } else { l.rsplit(' ').collect() };
            // The path is the first field (CSV: quoted, may hold commas): take the 64 values from the end.
            fields[..64].iter().rev().map(|v| v.parse().unwrap()).collect()
        })
        .collect()
}

#[test]
fn c_example_prints_what_trainer_embed_writes() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("embed");
    let cc = c_compiler();
    let root = root();
    let out = Command::new(&cc)
        .args(["-O2", "-Wall", "-Werror", "-I"])
        .arg(root.join("capi/include"))
        .arg(root.join("examples/c/embed.c"))
        .arg(static_lib())
        .args(["-lm", "-lpthread", "-ldl", "-o"])
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("{cc}: {e}"));
    assert!(out.status.success(), "{cc} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let images: Vec<PathBuf> = ["a.ppm", "b.pgm", "c.ppm"].iter().map(|n| root.join("examples/c/images").join(n)).collect();
    for (model, expected) in [("encoder.int8.onnx", "expected.int8.csv"), ("encoder.blob", "expected.blob.csv")] {
        let args: Vec<PathBuf> = std::iter::once(root.join("models/tiny").join(model)).chain(images.iter().cloned()).collect();
        let out = run(&exe, &args);
        assert!(out.status.success(), "{model}: {} ({})", String::from_utf8_lossy(&out.stderr), out.status);
        let got = rows(&String::from_utf8_lossy(&out.stdout), false);
        let want = rows(&std::fs::read_to_string(root.join("examples/c").join(expected)).unwrap(), true);
        assert_eq!(got.len(), 3, "{model}: one line per image");
        assert_eq!(got, want, "{model}: the C example's rows differ from trainer embed's");
    }
    // A corrupt model: exit status 1 and the library's message.
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let out = run(&exe, &[junk, images[0].clone()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(1) && err.contains("junk.onnx"), "{err}");
}
