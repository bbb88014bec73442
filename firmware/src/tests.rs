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

mod session {
    use crate::session::{CAPACITY, Lines, Session, SetupError};
    use dim_runtime::engine::Model;
    use dim_runtime::prototypes::file::{self, FileSpec, PrototypeFile};
    use dim_runtime::{PrototypeStore, Rgb32};
    extern crate std;
    use std::string::String;
    use std::vec::Vec;
    use std::{format, vec};

    static BLOB: &[u8] = include_bytes!("../../models/tiny/encoder.blob");
    static GOLDEN: &Rgb32 = include_bytes!("../../models/tiny/golden.rgb");

    fn frame_line(rgb: &Rgb32) -> String {
        let hex: String = rgb.iter().map(|b| format!("{b:02x}")).collect();
        format!("frame {hex}")
    }

    /// Runs `cmd`, returns the answer without its newline.
    fn ask(s: &mut Session, cmd: &str) -> String {
        let mut arena = vec![0u8; 16 * 1024];
        let mut out = String::new();
        s.handle(cmd, &mut arena, &mut out).unwrap();
        assert!(out.ends_with('\n') && out.matches('\n').count() == 1, "one line per answer: {out:?}");
        out.trim_end().into()
    }

    fn embedding(rgb: &Rgb32) -> [i8; crate::MAX_DIM] {
        let model = Model::parse(BLOB).unwrap();
        let mut q = [0i8; crate::MAX_DIM];
        crate::embed(&model, rgb, &mut vec![0u8; model.arena_size()], &mut q).unwrap();
        q
    }

    /// The golden image with its colours inverted: another picture, for a second label.
    fn inverted() -> Rgb32 {
        let mut f = *GOLDEN;
        f.iter_mut().for_each(|b| *b = 255 - *b);
        f
    }

    #[test]
    fn enrol_classify_forget_answer_as_the_store_computes() {
        let mut s = Session::new(Model::parse(BLOB).unwrap(), None).unwrap();
        assert!(ask(&mut s, "classify").starts_with("error: no frame"));
        assert!(ask(&mut s, "enrol cat").starts_with("error: no frame"));
        assert_eq!(ask(&mut s, &frame_line(GOLDEN)), "frame ok");
        assert!(ask(&mut s, "classify").starts_with("error: nothing enrolled"));
        let want = embedding(GOLDEN);
        let line = ask(&mut s, "embed");
        let got: Vec<i8> = line.strip_prefix("embedding: ").unwrap().split(',').map(|v| v.parse().unwrap()).collect();
        assert_eq!(got, want[..64]);
        assert_eq!(ask(&mut s, "enrol cat"), "enrolled cat (1 prototypes)");
        assert_eq!(ask(&mut s, "classify"), "class cat similarity 1.0000 novelty 0.0000");
        assert_eq!(ask(&mut s, &frame_line(&inverted())), "frame ok");
        assert_eq!(ask(&mut s, "enrol dog"), "enrolled dog (2 prototypes)");
        assert_eq!(ask(&mut s, "  classify  "), "class dog similarity 1.0000 novelty 0.0000");
        // After forgetting dog, the inverted frame's answer is what the store says of cat.
        assert_eq!(ask(&mut s, "forget dog"), "forgot 1 prototypes");
        let mut store = PrototypeStore::<4, { crate::MAX_DIM }>::new();
        store.insert(0, want).unwrap();
        let m = store.nearest(&embedding(&inverted())).unwrap();
        let expect = if m.novelty > crate::session::DEFAULT_THRESHOLD {
            format!("novel novelty {:.4} nearest cat", m.novelty)
        } else {
            format!("class cat similarity {:.4} novelty {:.4}", m.similarity, m.novelty)
        };
        assert_eq!(ask(&mut s, "classify"), expect);
        assert_eq!(ask(&mut s, "forget wolf"), "error: no label \"wolf\"");
        assert_eq!(ask(&mut s, "forget"), "forgot 1 prototypes");
        assert_eq!(s.prototypes(), 0);
    }

    #[test]
    fn bad_commands_are_answered_and_change_nothing() {
        let mut s = Session::new(Model::parse(BLOB).unwrap(), None).unwrap();
        assert_eq!(ask(&mut s, &frame_line(GOLDEN)), "frame ok");
        assert_eq!(ask(&mut s, "enrol cat"), "enrolled cat (1 prototypes)");
        assert!(ask(&mut s, "frame 00ff").starts_with("error: a frame is 6144 hex digits"));
        let mut bad = frame_line(&inverted());
        bad.replace_range(100..101, "g");
        assert!(ask(&mut s, &bad).contains("not a hex digit"));
        assert_eq!(ask(&mut s, "classify"), "class cat similarity 1.0000 novelty 0.0000", "the golden frame is still current");
        assert!(ask(&mut s, "enrol").starts_with("error: a label is 1 to 31 bytes"));
        assert!(ask(&mut s, "enrol a-label-far-longer-than-31-bytes").starts_with("error: a label"));
        assert!(ask(&mut s, "dance").starts_with("error: unknown command \"dance\""));
        assert!(ask(&mut s, "embed now").starts_with("error: unknown command"));
        assert!(ask(&mut s, "").starts_with("error: unknown command"));
        // Full: the store's capacity, then the label table's.
        for _ in 1..CAPACITY {
            ask(&mut s, "enrol cat");
        }
        assert!(ask(&mut s, "enrol cat").starts_with("error: the store is full"));
        ask(&mut s, "forget");
        for i in 0..crate::session::MAX_LABELS {
            assert!(ask(&mut s, &format!("enrol l{i}")).starts_with("enrolled"));
        }
        assert!(ask(&mut s, "enrol one-more").contains("labels already"));
        assert_eq!(s.prototypes(), crate::session::MAX_LABELS);
    }

    #[test]
    fn a_prototypes_file_sets_labels_threshold_and_its_encoder() {
        let id = Model::parse(BLOB).unwrap().id;
        let golden = embedding(GOLDEN);
        let protos: [(u16, &[i8]); 1] = [(1, &golden[..64])];
        let spec = FileSpec { model: id, threshold: 0.0001, false_positive_rate: 0.05, labels: &["sky", "golden"], prototypes: &protos };
        let bytes = file::write(&spec).unwrap();
        let f = PrototypeFile::parse(&bytes).unwrap();
        let mut s = Session::new(Model::parse(BLOB).unwrap(), Some(&f)).unwrap();
        assert_eq!(s.prototypes(), 1);
        ask(&mut s, &frame_line(GOLDEN));
        assert_eq!(ask(&mut s, "classify"), "class golden similarity 1.0000 novelty 0.0000");
        ask(&mut s, &frame_line(&inverted()));
        assert!(ask(&mut s, "classify").starts_with("novel novelty "), "the file's tight threshold");
        // A file made with another blob is refused.
        let other = file::write(&FileSpec { model: id ^ 1, ..spec }).unwrap();
        let other = PrototypeFile::parse(&other).unwrap();
        assert_eq!(Session::new(Model::parse(BLOB).unwrap(), Some(&other)).err(), Some(SetupError::OtherEncoder { file: id ^ 1, model: id }));
    }

    /// The shipped prototypes belong to the shipped blob (remade by `trainer prototypes` when the
    /// model changes) and the firmware starts from them.
    #[test]
    fn the_shipped_prototypes_fit_the_shipped_blob() {
        let f = PrototypeFile::parse(include_bytes!("../../models/tiny/prototypes.bin")).unwrap();
        let s = Session::new(Model::parse(BLOB).unwrap(), Some(&f)).unwrap();
        assert_eq!(s.prototypes(), f.len());
        assert!(f.threshold > 0.0 && f.threshold < 1.0);
    }

    #[test]
    fn lines_split_on_newlines_and_refuse_overlong_ones() {
        let mut lines = Lines::<8>::new();
        let mut got: Vec<Result<String, &str>> = Vec::new();
        for &b in b"embed\r\nclassify now\nenrol x\n\xff\n" {
            lines.push(b, |l| got.push(l.map(String::from)));
        }
        assert_eq!(got, [Ok("embed".into()), Err("the line is too long"), Ok("enrol x".into()), Err("the line is not UTF-8")]);
    }

    #[test]
    fn a_damaged_line_is_refused_and_the_next_one_served() {
        let mut lines = Lines::<8>::new();
        let mut got: Vec<Result<String, &str>> = Vec::new();
        for &b in b"emb" {
            lines.push(b, |l| got.push(l.map(String::from)));
        }
        lines.damage(); // the UART lost a byte here
        for &b in b"ed
embed
"
        {
            lines.push(b, |l| got.push(l.map(String::from)));
        }
        assert_eq!(got, [Err("the line lost bytes in transit"), Ok("embed".into())]);
    }
}
