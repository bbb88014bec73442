//! Puts the linker memory map of the chosen machine where cortex-m-rt's `link.x` finds it.
fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let feature = |name: &str| std::env::var_os(format!("CARGO_FEATURE_{name}")).is_some();
    let map = if feature("BOARD_STM32F405") {
        "memory-stm32f405.x"
    } else if feature("BOARD_NUCLEO_H743") {
        "memory-nucleo-h743.x"
    } else {
        "memory-mps2-an386.x"
    };
    std::fs::copy(map, out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed={map}");
    println!("cargo:rerun-if-changed=build.rs");
}
