//! The firmware image. In QEMU (`mps2-an386`, the CI target) it embeds the golden image of the
//! shipped `models/tiny` and prints the line over semihosting, then answers the commands of
//! [`dim_firmware::session`] read line by line from the host's standard input until it ends,
//! starting from the shipped prototypes (`models/tiny/prototypes.bin`). On a board the same code
//! takes its frames from `dim_firmware::camera` and talks over a UART.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

#[cfg(target_os = "none")]
mod firmware {
    use cortex_m_rt::entry;
    use dim_firmware::session::{Lines, Session};
    use dim_runtime::engine::{Model, blob};
    use dim_runtime::prototypes::file::PrototypeFile;
    use semihosting::io::Read;
    use semihosting::{print, println, process};

    /// The shipped `models/tiny` encoder, its golden image and prototypes;
    /// `tests/tests/firmware.rs` compares the printed lines with the host's for the same files.
    static BLOB: &[u8] = include_bytes!("../../models/tiny/encoder.blob");
    static GOLDEN: &dim_runtime::Rgb32 = include_bytes!("../../models/tiny/golden.rgb");
    static PROTOTYPES: &[u8] = include_bytes!("../../models/tiny/prototypes.bin");
    /// Arena for the engine, on the stack (tiny needs 12,288 bytes; `run` checks the size).
    const ARENA: usize = 16 * 1024;
    /// The longest command: `frame ` and 6,144 hex digits.
    const LINE: usize = 6200;

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

    fn run() -> Result<(), &'static str> {
        let model = Model::parse(BLOB).map_err(|_| "the embedded blob does not parse")?;
        let mut arena = [0u8; ARENA];
        let mut q = [0i8; dim_firmware::MAX_DIM];
        let d = dim_firmware::embed(&model, GOLDEN, &mut arena, &mut q).map_err(|_| "the engine failed on the golden image")?;
        let mut line: heapless::String<512> = heapless::String::new();
        // 64 values of at most 4 characters and their commas fit in 512 bytes.
        let _ = dim_firmware::write_embedding(&mut line, &q[..d]);
        print!("arena: {} of {} bytes\n{}", model.arena_size(), ARENA, line.as_str());

        let protos = PrototypeFile::parse(PROTOTYPES).map_err(|_| "the embedded prototypes file does not parse")?;
        let id = blob::model_id(BLOB).map_err(|_| "the embedded blob does not parse")?;
        let mut session = match Session::new(model, id, Some(&protos)) {
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
