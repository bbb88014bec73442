//! The firmware image. In QEMU (`mps2-an386`, the CI target) it embeds the golden image of the
//! shipped `models/tiny` and prints the line over semihosting, then answers the commands of
//! [`dim_firmware::session`] read line by line from the host's standard input until it ends,
//! starting from the shipped prototypes (`models/tiny/prototypes.bin`). On a board the same code
//! takes its frames from `dim_firmware::camera` and talks over a UART.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

#[cfg(target_os = "none")]
mod firmware {
    use cortex_m::peripheral::{SYST, syst::SystClkSource};
    use cortex_m_rt::entry;
    use dim_firmware::session::{Lines, Session};
    use dim_runtime::engine::Model;
    use dim_runtime::prototypes::file::PrototypeFile;
    use semihosting::io::Read;
    use semihosting::{print, println, process};

    use dim_firmware::LINE;
    use dim_firmware::shipped::{ARENA, BLOB, GOLDEN, PROTOTYPES};

    #[entry]
    fn main() -> ! {
        match run() {
            Ok(()) => process::exit(0),
            Err(e) => {
                println!("error: {}", e);
                process::exit(1)
            }
        }
    }

    /// A `core::fmt::Write` over semihosting's standard output.
    struct Out;
    impl core::fmt::Write for Out {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            print!("{}", s);
            Ok(())
        }
    }

    /// Times one inference of the golden image layer by layer with SysTick on the core clock,
    /// then prints each layer's CRC-32: `profile: <ticks>,…` (image, conv1..3, pool when the
    /// model has one, fc, then y) and `layers: <crc>,…` (the same activations, y excluded). Under
    /// QEMU's `-icount shift=0` one instruction is one virtual nanosecond and SysTick ticks at
    /// the machine's 25 MHz: a tick is 40 instructions (`tests/tests/firmware.rs` divides by the
    /// multiply-accumulates). The CRCs let the test compare every layer with the host engine.
    fn profile(model: &Model, arena: &mut [u8]) -> Result<(), &'static str> {
        let mut p = cortex_m::Peripherals::take().ok_or("the core peripherals are taken")?;
        p.SYST.set_clock_source(SystClkSource::Core);
        p.SYST.set_reload(0x00FF_FFFF);
        p.SYST.clear_current();
        p.SYST.enable_counter();
        let mut y = [0f32; dim_firmware::MAX_DIM];
        let y = &mut y[..model.dim()];
        let (mut marks, mut n) = ([0u32; 8], 0);
        let start = SYST::get_current();
        model
            .run_observed(GOLDEN, arena, y, |_, _| {
                marks[n] = SYST::get_current();
                n += 1;
            })
            .map_err(|_| "the engine failed on the golden image")?;
        let end = SYST::get_current();
        // SysTick counts down through 24 bits.
        let ticks = |from: u32, to: u32| from.wrapping_sub(to) & 0x00FF_FFFF;
        print!("profile: ");
        let mut last = start;
        for &m in &marks[..n] {
            print!("{},", ticks(last, m));
            last = m;
        }
        println!("{}", ticks(last, end));
        let (mut crcs, mut k) = ([0u32; 8], 0);
        model
            .run_observed(GOLDEN, arena, y, |_, a| {
                crcs[k] = dim_runtime::engine::blob::checksum(a);
                k += 1;
            })
            .map_err(|_| "the engine failed on the golden image")?;
        print!("layers: ");
        for (i, c) in crcs[..k].iter().enumerate() {
            print!("{}{:08x}", if i > 0 { "," } else { "" }, c);
        }
        println!();
        Ok(())
    }

    fn run() -> Result<(), &'static str> {
        let model = Model::parse(BLOB).map_err(|_| "the embedded blob does not parse")?;
        let mut arena = [0u8; ARENA];
        let mut q = [0i8; dim_firmware::MAX_DIM];
        let d = dim_firmware::embed(&model, GOLDEN, &mut arena, &mut q).map_err(|_| "the engine failed on the golden image")?;
        let mut line: heapless::String<512> = heapless::String::new();
        // 64 values of at most 4 characters and their commas fit in 512 bytes.
        let _ = dim_firmware::write_embedding(&mut line, &q[..d]);
        print!("arena: {} of {} bytes\n{}", model.arena_size(), ARENA, line.as_str());
        profile(&model, &mut arena)?;

        let protos = PrototypeFile::parse(PROTOTYPES).map_err(|_| "the embedded prototypes file does not parse")?;
        let mut session = match Session::new(model, Some(&protos)) {
            Ok(s) => s,
            Err(e) => {
                println!("error: {}", e);
                return Err("cannot start the command session");
            }
        };
        println!("ready: {} prototypes", session.prototypes());
        let Ok(mut stdin) = semihosting::io::stdin() else { return Ok(()) };
        let mut lines = Lines::<LINE>::new();
        let mut chunk = [0u8; 256];
        loop {
            let n = match stdin.read(&mut chunk) {
                Ok(0) | Err(_) => return Ok(()), // the host closed the line
                Ok(n) => n,
            };
            for &b in &chunk[..n] {
                lines.push(b, |line| match line {
                    // Writing to semihosting's output does not fail (`Out` never errs).
                    Ok(cmd) => drop(session.handle(cmd, &mut arena, &mut Out)),
                    Err(e) => println!("error: {}", e),
                });
            }
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("dim-firmware runs on Cortex-M: cargo run --release -p dim-firmware --target thumbv7em-none-eabihf");
}
