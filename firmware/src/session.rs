//! The serial command session: enrol what the camera sees under a label, classify, forget.
//!
//! One command per line in, one answer per line out (over whatever `core::fmt::Write` the board
//! offers). The current frame is the last one captured (`frame` sets it from the line: QEMU has
//! no camera, and a host can replay known images; on a board the main loop captures into
//! [`Session::frame_mut`] first).
//!
//! ```text
//! frame <6144 hex digits>   32×32 RGB, row by row          → frame ok
//! embed                     the frame's int8 embedding     → embedding: v0,v1,…
//! enrol <label>             add the frame's embedding      → enrolled <label> (<n> prototypes)
//! classify                  nearest prototype              → class <label> similarity <s> novelty <n>
//!                                                            or novel novelty <n> nearest <label>
//! forget [<label>]          drop a label's prototypes (or all) → forgot <k> prototypes
//! ```
//!
//! A frame is novel when its novelty (1 − cosine to the nearest prototype) is above the threshold
//! the prototypes file was calibrated with (`trainer prototypes`). Every mistake is answered with
//! a line `error: …` and leaves the session as it was.

use crate::MAX_DIM;
use core::fmt::Write;
use dim_runtime::engine::Model;
use dim_runtime::prototypes::file::{MAX_NAME, PrototypeFile};
use dim_runtime::{PrototypeStore, RGB32_LEN, Rgb32};

/// Prototypes the session holds.
pub const CAPACITY: usize = 64;
/// Labels it knows.
pub const MAX_LABELS: usize = 16;
/// Novelty threshold of a session started without a prototypes file.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

type Name = heapless::String<MAX_NAME>;

/// Why a session cannot start with a prototypes file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupError {
    /// The file was made with another encoder (its embeddings live in another space).
    OtherEncoder {
        /// The blob id in the file.
        file: u32,
        /// The id of the blob the firmware runs.
        model: u32,
    },
    /// More prototypes, labels or a wider embedding than the session holds.
    TooBig,
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            Self::OtherEncoder { file, model } => write!(f, "the prototypes were made with encoder {file:08x}, this firmware runs {model:08x}"),
            Self::TooBig => write!(f, "the prototypes file holds more than {CAPACITY} prototypes, {MAX_LABELS} labels or {MAX_DIM} values"),
        }
    }
}

/// The state between commands: the model, the prototypes, their names and the current frame.
pub struct Session<'m> {
    model: Model<'m>,
    store: PrototypeStore<CAPACITY, MAX_DIM>,
    names: heapless::Vec<Name, MAX_LABELS>,
    threshold: f32,
    frame: Rgb32,
    has_frame: bool,
}

/// Lower-case or upper-case hex digit.
fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

impl<'m> Session<'m> {
    /// A session running `model`, starting from `protos` if given (made with the same blob).
    pub fn new(model: Model<'m>, protos: Option<&PrototypeFile>) -> Result<Self, SetupError> {
        let model_id = model.id;
        let mut s =
            Self { model, store: PrototypeStore::new(), names: heapless::Vec::new(), threshold: DEFAULT_THRESHOLD, frame: [0; RGB32_LEN], has_frame: false };
        if let Some(f) = protos {
            if f.model != model_id {
                return Err(SetupError::OtherEncoder { file: f.model, model: model_id });
            }
            if f.labels() > MAX_LABELS {
                return Err(SetupError::TooBig);
            }
            f.load_into(&mut s.store).map_err(|_| SetupError::TooBig)?;
            for n in f.label_names() {
                // Names are at most MAX_NAME bytes (the reader checked) and there is room.
                let _ = s.names.push(Name::try_from(n).unwrap_or_default());
            }
            s.threshold = f.threshold;
        }
        Ok(s)
    }

    /// The frame buffer a camera captures into (then call [`Session::frame_captured`]).
    pub fn frame_mut(&mut self) -> &mut Rgb32 {
        &mut self.frame
    }

    /// Marks the frame buffer as holding a frame.
    pub fn frame_captured(&mut self) {
        self.has_frame = true;
    }

    /// Prototypes held.
    pub fn prototypes(&self) -> usize {
        self.store.len()
    }

    /// Runs one command line and writes its answer line to `out`.
    pub fn handle(&mut self, line: &str, arena: &mut [u8], out: &mut impl Write) -> core::fmt::Result {
        let line = line.trim();
        let (cmd, arg) = line.split_once(' ').map_or((line, ""), |(c, a)| (c, a.trim()));
        match (cmd, arg) {
            ("frame", hexes) => self.set_frame(hexes, out),
            ("embed", "") => match self.embed(arena) {
                Ok(q) => crate::write_embedding(out, &q[..self.model.dim()]),
                Err(e) => writeln!(out, "error: {e}"),
            },
            ("enrol", label) => self.enrol(label, arena, out),
            ("classify", "") => self.classify(arena, out),
            ("forget", label) => self.forget(label, out),
            _ => writeln!(out, "error: unknown command {cmd:?}; commands: frame <hex>, embed, enrol <label>, classify, forget [<label>]"),
        }
    }

    fn set_frame(&mut self, hexes: &str, out: &mut impl Write) -> core::fmt::Result {
        let b = hexes.as_bytes();
        if b.len() != 2 * RGB32_LEN {
            return writeln!(out, "error: a frame is {} hex digits (32×32 RGB), got {}", 2 * RGB32_LEN, b.len());
        }
        // Decode into a copy, so a bad digit keeps the previous frame.
        let mut frame = [0u8; RGB32_LEN];
        for (px, pair) in frame.iter_mut().zip(b.chunks_exact(2)) {
            match (hex(pair[0]), hex(pair[1])) {
                (Some(h), Some(l)) => *px = h << 4 | l,
                _ => return writeln!(out, "error: the frame holds a character that is not a hex digit"),
            }
        }
        self.frame = frame;
        self.has_frame = true;
        writeln!(out, "frame ok")
    }

    /// The current frame's int8 embedding (zero-padded to [`MAX_DIM`]).
    fn embed(&self, arena: &mut [u8]) -> Result<[i8; MAX_DIM], &'static str> {
        if !self.has_frame {
            return Err("no frame yet: send `frame <hex>` (or capture one)");
        }
        let mut q = [0i8; MAX_DIM];
        crate::embed(&self.model, &self.frame, arena, &mut q).map_err(|_| "the engine failed on this frame")?;
        Ok(q)
    }

    fn enrol(&mut self, label: &str, arena: &mut [u8], out: &mut impl Write) -> core::fmt::Result {
        if label.is_empty() || label.len() > MAX_NAME || label.contains(char::is_whitespace) {
            return writeln!(out, "error: a label is 1 to {MAX_NAME} bytes without spaces");
        }
        let q = match self.embed(arena) {
            Ok(q) => q,
            Err(e) => return writeln!(out, "error: {e}"),
        };
        if self.store.len() == CAPACITY {
            return writeln!(out, "error: the store is full ({CAPACITY} prototypes): forget a label first");
        }
        let id = match self.names.iter().position(|n| n == label) {
            Some(i) => i,
            None => {
                if self.names.push(Name::try_from(label).unwrap_or_default()).is_err() {
                    return writeln!(out, "error: {MAX_LABELS} labels already: forget one first");
                }
                self.names.len() - 1
            }
        };
        // Room was checked above.
        let _ = self.store.insert(id as u16, q);
        writeln!(out, "enrolled {label} ({} prototypes)", self.store.len())
    }

    fn classify(&mut self, arena: &mut [u8], out: &mut impl Write) -> core::fmt::Result {
        let q = match self.embed(arena) {
            Ok(q) => q,
            Err(e) => return writeln!(out, "error: {e}"),
        };
        let Some(m) = self.store.nearest(&q) else { return writeln!(out, "error: nothing enrolled yet: `enrol <label>` first") };
        let name = self.names.get(m.label as usize).map_or("?", |n| n.as_str());
        if m.novelty > self.threshold {
            writeln!(out, "novel novelty {:.4} nearest {name}", m.novelty)
        } else {
            writeln!(out, "class {name} similarity {:.4} novelty {:.4}", m.similarity, m.novelty)
        }
    }

    fn forget(&mut self, label: &str, out: &mut impl Write) -> core::fmt::Result {
        if label.is_empty() {
            let n = self.store.len();
            self.store.clear();
            self.names.clear();
            return writeln!(out, "forgot {n} prototypes");
        }
        // The label keeps its slot (other prototypes refer to labels by position).
        match self.names.iter().position(|n| n == label) {
            Some(i) => writeln!(out, "forgot {} prototypes", self.store.forget(i as u16)),
            None => writeln!(out, "error: no label {label:?}"),
        }
    }
}

/// Splits the bytes of a serial line into command lines (`\n`-terminated, `\r` ignored), at
/// most `N` bytes each: a longer line is answered with an error once it ends, not cut in two;
/// so is a line during which the UART reported a lost or garbled byte ([`Lines::damage`]).
#[derive(Debug, Default)]
pub struct Lines<const N: usize> {
    buf: heapless::Vec<u8, N>,
    overflow: bool,
    damaged: bool,
}

impl<const N: usize> Lines<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self { buf: heapless::Vec::new(), overflow: false, damaged: false }
    }

    /// The receiver lost or garbled a byte of the line in progress (overrun, framing, noise):
    /// the line is answered with an error when it ends instead of being run half-read.
    pub fn damage(&mut self) {
        self.damaged = true;
    }

    /// Takes one byte; at the end of a line, hands it (or why it is unusable) to `line`.
    pub fn push(&mut self, byte: u8, mut line: impl FnMut(Result<&str, &'static str>)) {
        match byte {
            b'\n' => {
                if self.damaged {
                    line(Err("the line lost bytes in transit"));
                } else if self.overflow {
                    line(Err("the line is too long"));
                } else {
                    line(core::str::from_utf8(&self.buf).map_err(|_| "the line is not UTF-8"));
                }
                self.buf.clear();
                (self.overflow, self.damaged) = (false, false);
            }
            b'\r' => {}
            _ => self.overflow |= self.buf.push(byte).is_err(),
        }
    }
}
