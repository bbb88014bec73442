//! The firmware on an ST STM32F405 (Cortex-M4F, 1 MB flash, 128 KB RAM) through ST's HAL
//! (`stm32f4xx-hal`, embedded-hal 1.0), its command session on **USART1** (PA9 TX, PA10 RX,
//! 115,200 baud, 8N1) instead of semihosting: what a board without a debugger attached runs.
//! `tests/tests/firmware.rs` runs it on QEMU's `netduinoplus2` (an STM32F405RG) with
//! the USART on QEMU's standard input and output.
//!
//! At reset it prints `dim-firmware on STM32F405: sysclk <Hz>`, the golden image's embedding and
//! `ready: <n> prototypes`, then answers one line per command line ([`dim_firmware::session`]).
//! A host sends the next command after the answer to the last: while the engine runs (a few
//! hundred milliseconds at 16 MHz) nothing reads the USART, so a byte sent then overruns and is
//! lost (the session answers the damaged line with an error and goes on).
//!
//! **Clocks**: the internal 16 MHz oscillator (HSI) drives the core directly. QEMU 7.2 models no
//! RCC on this chip (its registers read as zero), so the HAL's wait for the external crystal or
//! the PLL to report ready would never end; the HSI needs no wait and is on every STM32F405. A
//! board that wants 168 MHz sets `cfgr.use_hse(..).sysclk(168.MHz())` and runs the same code.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

#[cfg(target_os = "none")]
mod board {
    use core::fmt::Write;
    use cortex_m_rt::entry;
    use panic_halt as _;
    use stm32f4xx_hal::{pac, prelude::*, serial::Config};

    #[entry]
    fn main() -> ! {
        let dp = pac::Peripherals::take().expect("the device peripherals are taken once, here");
        let clocks = dp.RCC.constrain().cfgr.freeze(); // the HSI, no PLL: see the module doc
        let gpioa = dp.GPIOA.split();
        let serial = dp.USART1.serial((gpioa.pa9, gpioa.pa10), Config::default().baudrate(115_200.bps()), &clocks);
        // The pins are USART1's and the baud rate fits any clock the HAL computes: it cannot fail.
        let (mut tx, mut rx) = serial.expect("USART1 on PA9/PA10").split();
        let _ = writeln!(tx, "dim-firmware on STM32F405: sysclk {} Hz", clocks.sysclk().raw());
        let why = dim_firmware::serve_shipped(&mut tx, &mut || nb::block!(rx.read()).map_err(|_| ()));
        let _ = writeln!(tx, "error: {why}");
        loop {
            cortex_m::asm::wfi();
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "dim-firmware-stm32f405 runs on an STM32F405: cargo build --release -p dim-firmware --target thumbv7em-none-eabihf --no-default-features --features board-stm32f405"
    );
}
