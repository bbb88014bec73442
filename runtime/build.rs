//! Target facts the engine picks its code by; stable Rust has no `target_feature` cfg for them
//! on Arm, so the target name decides, as the cortex-m crate's build script does.
//! - `cfg(dim_dsp)`: the ARMv7E-M DSP extension (thumbv7em: Cortex-M4/M7); the engine's `dsp`
//!   module runs SMLAD / SXTB16.
//! - `cfg(dim_no_fpu)`: bare-metal Arm without a hardware-float ABI (thumbv6m, thumbv7m, and
//!   `eabi` builds of the others): requantization in integers (`ops::requant_int`).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(dim_dsp)");
    println!("cargo::rustc-check-cfg=cfg(dim_no_fpu)");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("thumbv7em") {
        println!("cargo::rustc-cfg=dim_dsp");
    }
    if target.starts_with("thumb") && !target.ends_with("eabihf") {
        println!("cargo::rustc-cfg=dim_no_fpu");
    }
    println!("cargo::rerun-if-changed=build.rs");
}
