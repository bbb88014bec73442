//! Host tests: the camera driver against embedded-hal-mock buses, the app on the golden image.

extern crate std;
use crate::camera::{Camera, Error, OV2640_PID, SENSOR_ADDR, rgb565_to_rgb888};
use embedded_hal::i2c::ErrorKind;
use embedded_hal_mock::eh1::i2c::{Mock as I2c, Transaction as I2cT};
use embedded_hal_mock::eh1::spi::{Mock as Spi, Transaction as SpiT};
use std::vec;
use std::vec::Vec;

/// One SpiDevice call: chip select around the given bus transfers.
fn cs(inner: Vec<SpiT<u8>>) -> Vec<SpiT<u8>> {
    let mut v = vec![SpiT::transaction_start()];
    v.extend(inner);
    v.push(SpiT::transaction_end());
    v
}
fn write_reg(r: u8, v: u8) -> Vec<SpiT<u8>> {
    cs(vec![SpiT::write_vec(vec![r | 0x80, v])])
}
fn read_reg(r: u8, v: u8) -> Vec<SpiT<u8>> {
    cs(vec![SpiT::transfer_in_place(vec![r, 0], vec![0, v])])
}

/// Checks that every expected bus transaction happened.
fn done(cam: Camera<Spi<u8>, I2c>) {
    let (mut s, mut i) = cam.release();
    s.done();
    i.done();
}

fn sensor_id(pid: u16) -> Vec<I2cT> {
    let [hi, lo] = pid.to_be_bytes();
    vec![I2cT::write(SENSOR_ADDR, vec![0xFF, 0x01]), I2cT::write_read(SENSOR_ADDR, vec![0x0A], vec![hi]), I2cT::write_read(SENSOR_ADDR, vec![0x0B], vec![lo])]
}

#[test]
fn init_checks_the_link_and_the_sensor_then_writes_the_register_list() {
    let spi = [write_reg(0x00, 0x55), read_reg(0x00, 0x55)].concat();
    let i2c = [sensor_id(OV2640_PID), vec![I2cT::write(SENSOR_ADDR, vec![0xDA, 0x08])]].concat();
    let mut cam = Camera::new(Spi::new(&spi), I2c::new(&i2c));
    cam.init(&[(0xDA, 0x08)]).unwrap();
    done(cam);
}

#[test]
fn a_missing_module_and_a_wrong_sensor_are_named() {
    let spi = [write_reg(0x00, 0x55), read_reg(0x00, 0xFF)].concat();
    let mut cam = Camera::new(Spi::new(&spi), I2c::new(&[]));
    assert_eq!(cam.init(&[]), Err(Error::NotFound));
    done(cam);

    let spi = [write_reg(0x00, 0x55), read_reg(0x00, 0x55)].concat();
    let mut cam = Camera::new(Spi::new(&spi), I2c::new(&sensor_id(0x7673)));
    assert_eq!(cam.init(&[]), Err(Error::WrongSensor { pid: 0x7673 }));
    done(cam);
}

#[test]
fn capture_polls_reads_the_fifo_and_converts_rgb565() {
    // A 2×1 frame: pure red, then white. FIFO length 4 bytes, read in bursts of 2.
    let spi = [
        write_reg(0x04, 0x01),
        write_reg(0x04, 0x02),
        read_reg(0x41, 0x00),
        read_reg(0x41, 0x08),
        read_reg(0x42, 4),
        read_reg(0x43, 0),
        read_reg(0x44, 0x80), // bit 7 is not part of the length
        cs(vec![SpiT::write_vec(vec![0x3C]), SpiT::read_vec(vec![0xF8, 0x00])]),
        cs(vec![SpiT::write_vec(vec![0x3C]), SpiT::read_vec(vec![0xFF, 0xFF])]),
    ]
    .concat();
    let mut cam = Camera::new(Spi::new(&spi), I2c::new(&[]));
    let mut rgb = [0u8; 6];
    cam.read_rgb565(&mut rgb, &mut [0u8; 2]).unwrap();
    assert_eq!(rgb, [255, 0, 0, 255, 255, 255]);
    done(cam);
}

#[test]
fn a_stuck_capture_times_out_and_bus_errors_are_handed_up() {
    let spi = [write_reg(0x04, 0x01), write_reg(0x04, 0x02), read_reg(0x41, 0), read_reg(0x41, 0)].concat();
    let mut cam = Camera::new(Spi::new(&spi), I2c::new(&[]));
    cam.poll_limit = 2;
    assert_eq!(cam.capture(), Err(Error::Timeout));
    done(cam);

    let spi = [write_reg(0x00, 0x55), read_reg(0x00, 0x55)].concat();
    let i2c = [I2cT::write(SENSOR_ADDR, vec![0xFF, 0x01]).with_error(ErrorKind::Other)];
    let mut cam = Camera::new(Spi::new(&spi), I2c::new(&i2c));
    assert_eq!(cam.init(&[]), Err(Error::I2c(ErrorKind::Other)));
    done(cam);
}

#[test]
fn rgb565_expansion_spans_the_full_range() {
    assert_eq!(rgb565_to_rgb888(0x0000), [0, 0, 0]);
    assert_eq!(rgb565_to_rgb888(0xFFFF), [255, 255, 255]);
    assert_eq!(rgb565_to_rgb888(0x07E0), [0, 255, 0]);
    assert_eq!(rgb565_to_rgb888(0x8410), [132, 130, 132]);
}

#[test]
fn the_app_prints_the_engines_int8_embedding() {
    let blob = include_bytes!("../../models/tiny/encoder.blob");
    let rgb: &dim_runtime::Rgb32 = include_bytes!("../../models/tiny/golden.rgb");
    let model = dim_runtime::engine::Model::parse(blob).unwrap();
    let mut arena = vec![0u8; model.arena_size()];
    let mut q = [0i8; crate::MAX_DIM];
    let d = crate::embed(&model, rgb, &mut arena, &mut q).unwrap();
    assert_eq!(d, 64);
    let mut line = std::string::String::new();
    crate::write_embedding(&mut line, &q[..d]).unwrap();
    let values: Vec<i8> = line.strip_prefix("embedding: ").unwrap().trim_end().split(',').map(|v| v.parse().unwrap()).collect();
    assert_eq!(values, q[..d]);
    assert!(values.iter().any(|v| *v != 0) && values.iter().map(|v| v.unsigned_abs()).max() <= Some(127));
    assert!(crate::embed(&model, rgb, &mut arena[..10], &mut q).is_err(), "a short arena is an error");
}
