//! `cfg(dim_dsp)` on targets with the ARMv7E-M DSP extension (thumbv7em: Cortex-M4/M7): stable
//! Rust has no `target_feature = "dsp"` cfg for ARM yet, so the target name decides, as the
//! cortex-m crate's build script does. The engine's `dsp` module then runs SMLAD / SXTB16.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(dim_dsp)");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("thumbv7em") {
        println!("cargo::rustc-cfg=dim_dsp");
    }
    println!("cargo::rerun-if-changed=build.rs");
}
