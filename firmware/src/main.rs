//! The firmware image. In QEMU (`mps2-an386`, the CI target) it embeds the golden image of the
//! shipped `models/tiny` and prints the line over semihosting; on a board the same
//! code takes its frame from `dim_firmware::camera` and prints to a UART.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

#[cfg(target_os = "none")]
mod firmware {
    use cortex_m_rt::entry;
    use cortex_m_semihosting::{debug, hprint};
    use dim_runtime::engine::Model;
    use panic_semihosting as _;

    /// The shipped `models/tiny` encoder and its golden image; `tests/tests/firmware.rs`
    /// compares the printed line with tract's output for the same pair.
    static BLOB: &[u8] = include_bytes!("../../models/tiny/encoder.blob");
    static GOLDEN: &dim_runtime::Rgb32 = include_bytes!("../../models/tiny/golden.rgb");
    /// Arena for the engine, on the stack (tiny needs 12,288 bytes; `run` checks the size).
    const ARENA: usize = 16 * 1024;

    #[entry]
    fn main() -> ! {
        let code = match run() {
            Ok(()) => debug::EXIT_SUCCESS,
            Err(e) => {
                hprint!("error: {}\n", e);
                debug::EXIT_FAILURE
            }
        };
        debug::exit(code);
        #[allow(clippy::empty_loop)]
        loop {}
    }

    fn run() -> Result<(), dim_runtime::engine::EngineError> {
        let model = Model::parse(BLOB)?;
        let mut arena = [0u8; ARENA];
        let mut q = [0i8; dim_firmware::MAX_DIM];
        let d = dim_firmware::embed(&model, GOLDEN, &mut arena, &mut q)?;
        let mut line: heapless::String<512> = heapless::String::new();
        // 64 values of at most 4 characters and their commas fit in 512 bytes.
        let _ = dim_firmware::write_embedding(&mut line, &q[..d]);
        hprint!("arena: {} of {} bytes\n{}", model.arena_size(), ARENA, line.as_str());
        Ok(())
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("dim-firmware runs on Cortex-M: cargo run --release -p dim-firmware --target thumbv7em-none-eabihf");
}
