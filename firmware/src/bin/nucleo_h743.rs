//! The firmware on ST's Nucleo-H743ZI (STM32H743ZI, Cortex-M7F) through ST's HAL
//! (`stm32h7xx-hal`, embedded-hal 0.2), its command session on **USART3** (PD8 TX, PD9 RX: the
//! board's ST-LINK virtual COM port, 115,200 baud 8N1), the core at 400 MHz from the PLL on the
//! internal oscillator. Built in CI (`.ci/run`); QEMU emulates no STM32H7, so it is run on the
//! board only: `probe-rs run --chip STM32H743ZITx <elf>` and a terminal on the COM port. The
//! session, the blob and what it prints are those of the STM32F405 build, which the test suite
//! runs in QEMU (`firmware/src/bin/stm32f405.rs`).
#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_code)]

#[cfg(target_os = "none")]
mod board {
    use core::fmt::Write;
    use cortex_m_rt::entry;
    use panic_halt as _;
    use stm32h7xx_hal::{pac, prelude::*};

    #[entry]
    fn main() -> ! {
        let dp = pac::Peripherals::take().expect("the device peripherals are taken once, here");
        let pwrcfg = dp.PWR.constrain().freeze();
        let ccdr = dp.RCC.constrain().sys_ck(400.MHz()).freeze(pwrcfg, &dp.SYSCFG);
        let gpiod = dp.GPIOD.split(ccdr.peripheral.GPIOD);
        let (tx, rx) = (gpiod.pd8.into_alternate(), gpiod.pd9.into_alternate());
        let serial = dp.USART3.serial((tx, rx), 115_200.bps(), ccdr.peripheral.USART3, &ccdr.clocks);
        // The pins are USART3's and the baud rate fits the clock: it cannot fail.
        let (mut tx, mut rx) = serial.expect("USART3 on PD8/PD9").split();
        let _ = writeln!(tx, "dim-firmware on STM32H743: sysclk {} Hz", ccdr.clocks.sys_ck().raw());
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
        "dim-firmware-nucleo-h743 runs on a Nucleo-H743ZI: cargo build --release -p dim-firmware --target thumbv7em-none-eabihf --no-default-features --features board-nucleo-h743-hal"
    );
}
