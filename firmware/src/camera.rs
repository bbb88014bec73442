//! Camera driver for an ArduCAM-style SPI camera module (OV2640 sensor behind an ArduChip FIFO),
//! generic over embedded-hal 1.0: the sensor is configured over I2C (SCCB), frames are captured
//! into the module's FIFO and read out over SPI.
//!
//! The sensor is set to output RGB565 (big-endian); [`Camera::read_rgb565`] converts it to the
//! RGB888 the runtime's preprocessing takes.

use embedded_hal::i2c::I2c;
use embedded_hal::spi::{Operation, SpiDevice};

/// Errors of the camera, wrapping the bus errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<S, I> {
    Spi(S),
    I2c(I),
    /// The ArduChip test register did not echo: no module on the bus, or wiring.
    NotFound,
    /// The sensor's product id is not an OV2640's.
    WrongSensor {
        pid: u16,
    },
    /// The capture-done flag never rose.
    Timeout,
    /// The FIFO holds a frame of another size than the buffer asked for.
    FrameSize {
        fifo: usize,
        expected: usize,
    },
}

/// ArduChip registers (SPI; bit 7 set = write).
mod reg {
    pub const TEST: u8 = 0x00;
    pub const FIFO_CONTROL: u8 = 0x04;
    pub const FIFO_CLEAR: u8 = 0x01;
    pub const FIFO_START: u8 = 0x02;
    pub const STATUS: u8 = 0x41;
    pub const CAPTURE_DONE: u8 = 0x08;
    pub const FIFO_SIZE: [u8; 3] = [0x42, 0x43, 0x44];
    pub const BURST_READ: u8 = 0x3C;
    pub const WRITE: u8 = 0x80;
}

/// OV2640's SCCB address and product-id registers (in register bank 1, selected by 0xFF = 1).
pub const SENSOR_ADDR: u8 = 0x30;
const BANK_SELECT: u8 = 0xFF;
const PID: [u8; 2] = [0x0A, 0x0B];
pub const OV2640_PID: u16 = 0x2642;

pub struct Camera<SPI, I2C> {
    spi: SPI,
    i2c: I2C,
    /// Status polls before [`Error::Timeout`].
    pub poll_limit: u32,
}

type Result<T, SPI, I2C> = core::result::Result<T, Error<<SPI as embedded_hal::spi::ErrorType>::Error, <I2C as embedded_hal::i2c::ErrorType>::Error>>;

impl<SPI: SpiDevice, I2C: I2c> Camera<SPI, I2C> {
    pub fn new(spi: SPI, i2c: I2C) -> Self {
        Self { spi, i2c, poll_limit: 100_000 }
    }

    /// Hands the buses back.
    pub fn release(self) -> (SPI, I2C) {
        (self.spi, self.i2c)
    }

    fn write_reg(&mut self, r: u8, v: u8) -> Result<(), SPI, I2C> {
        self.spi.write(&[r | reg::WRITE, v]).map_err(Error::Spi)
    }

    fn read_reg(&mut self, r: u8) -> Result<u8, SPI, I2C> {
        let mut buf = [r & !reg::WRITE, 0];
        self.spi.transfer_in_place(&mut buf).map_err(Error::Spi)?;
        Ok(buf[1])
    }

    /// Checks the SPI link (test register echo) and that the sensor is an OV2640, then writes
    /// the sensor register list `init` (`(register, value)` pairs, e.g. RGB565 at 32×32).
    pub fn init(&mut self, init: &[(u8, u8)]) -> Result<(), SPI, I2C> {
        self.write_reg(reg::TEST, 0x55)?;
        if self.read_reg(reg::TEST)? != 0x55 {
            return Err(Error::NotFound);
        }
        self.i2c.write(SENSOR_ADDR, &[BANK_SELECT, 0x01]).map_err(Error::I2c)?;
        let mut id = [0u8; 2];
        for (b, r) in id.iter_mut().zip(PID) {
            let mut v = [0u8];
            self.i2c.write_read(SENSOR_ADDR, &[r], &mut v).map_err(Error::I2c)?;
            *b = v[0];
        }
        let pid = u16::from_be_bytes(id);
        if pid != OV2640_PID {
            return Err(Error::WrongSensor { pid });
        }
        for &(r, v) in init {
            self.i2c.write(SENSOR_ADDR, &[r, v]).map_err(Error::I2c)?;
        }
        Ok(())
    }

    /// Captures one frame into the module's FIFO and returns its length in bytes.
    pub fn capture(&mut self) -> Result<usize, SPI, I2C> {
        self.write_reg(reg::FIFO_CONTROL, reg::FIFO_CLEAR)?;
        self.write_reg(reg::FIFO_CONTROL, reg::FIFO_START)?;
        let mut polls = 0;
        while self.read_reg(reg::STATUS)? & reg::CAPTURE_DONE == 0 {
            polls += 1;
            if polls >= self.poll_limit {
                return Err(Error::Timeout);
            }
        }
        let mut len = 0usize;
        for (i, r) in reg::FIFO_SIZE.into_iter().enumerate() {
            let v = self.read_reg(r)? as usize;
            len |= if i == 2 { v & 0x7F } else { v } << (8 * i);
        }
        Ok(len)
    }

    /// Captures a `width`×`height` RGB565 frame and writes it as RGB888 (HWC) into `rgb`,
    /// reading the FIFO through `scratch` (any size ≥ 2; larger means fewer SPI bursts).
    pub fn read_rgb565(&mut self, rgb: &mut [u8], scratch: &mut [u8]) -> Result<(), SPI, I2C> {
        let expected = rgb.len() / 3 * 2;
        let fifo = self.capture()?;
        if fifo != expected || scratch.len() < 2 {
            return Err(Error::FrameSize { fifo, expected });
        }
        let chunk = scratch.len() & !1;
        let mut out = rgb.chunks_exact_mut(3);
        let mut left = expected;
        while left > 0 {
            let n = chunk.min(left);
            // Each chip-select window: the burst command, then the next `n` FIFO bytes.
            self.spi.transaction(&mut [Operation::Write(&[reg::BURST_READ]), Operation::Read(&mut scratch[..n])]).map_err(Error::Spi)?;
            for px in scratch[..n].chunks_exact(2) {
                let v = u16::from_be_bytes([px[0], px[1]]);
                if let Some(o) = out.next() {
                    o.copy_from_slice(&rgb565_to_rgb888(v));
                }
            }
            left -= n;
        }
        Ok(())
    }
}

/// Expands 5/6/5-bit channels to 8 bits by replicating their high bits (0 → 0, max → 255).
pub fn rgb565_to_rgb888(v: u16) -> [u8; 3] {
    let (r, g, b) = (((v >> 11) & 0x1F) as u8, ((v >> 5) & 0x3F) as u8, (v & 0x1F) as u8);
    [(r << 3) | (r >> 2), (g << 2) | (g >> 4), (b << 3) | (b >> 2)]
}
