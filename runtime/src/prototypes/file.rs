//! The prototypes file: labelled int8 embeddings and a calibrated novelty threshold, made on the
//! host by `trainer prototypes` and embedded in (or sent to) the firmware.
//!
//! Layout (all little-endian; [`write()`] writes it, [`PrototypeFile::parse`] reads it):
//!
//! ```text
//! header  "DIMP" | version u16 | reserved u16 | payload length u32 | CRC-32 (IEEE) of payload u32
//! payload model u32                  the CRC field of the engine blob the embeddings came from
//!         dim u16 | labels u16 | count u16 | 0u16
//!         threshold f32              novelty (1 − cosine) above it: "novel"
//!         false_positive_rate f32    the share of known validation images it flags (calibration)
//!         labels × (length u8 | UTF-8 name[length])      length 1 ..= MAX_NAME
//!         count × (label u16 | embedding i8[dim])        label < labels
//! ```
//!
//! The embeddings are int8 in the blob's print scale (what `engine::Model::quantize_output`
//! writes and the firmware prints), so the device compares like with like. `model` ties the file
//! to its encoder: prototypes from another encoder live in another space, and the firmware
//! refuses them. As with the blob, parsing checks every size before anything is indexed, so no
//! byte string makes the reader panic.

use crate::PrototypeStore;

/// The first four bytes of every prototypes file.
pub const MAGIC: [u8; 4] = *b"DIMP";
/// The format version this module reads and writes.
pub const VERSION: u16 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 16;
/// Longest label name, in bytes.
pub const MAX_NAME: usize = 31;
/// Largest embedding width accepted (sanity bound against hostile sizes).
pub const MAX_DIM: usize = 4096;

/// Why bytes are not a usable prototypes file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// The bytes do not start with the file's magic.
    #[error("not a dim-edge prototypes file (bad magic)")]
    NotAPrototypesFile,
    /// A file of another format version.
    #[error("prototypes file version {found}; this reader reads version {supported}")]
    Version {
        /// The file's version.
        found: u16,
        /// The version this reader reads.
        supported: u16,
    },
    /// Fewer bytes than the header or a section says.
    #[error("the prototypes file is truncated")]
    Truncated,
    /// More bytes than the payload.
    #[error("the prototypes file has bytes after its payload")]
    TrailingBytes,
    /// The payload's CRC-32 differs from the header's.
    #[error("the prototypes file's checksum does not match its payload (corrupted)")]
    Checksum,
    /// Values no writer produces.
    #[error("invalid prototypes file: {0}")]
    Invalid(&'static str),
    /// A store too small for the file.
    #[error("the store holds {have} prototypes of width {width}; the file has {need} of width {dim}")]
    Capacity {
        /// Prototypes in the file.
        need: usize,
        /// Prototypes the store holds.
        have: usize,
        /// Embedding width in the file.
        dim: usize,
        /// Embedding width of the store.
        width: usize,
    },
}

type E = FileError;

/// A parsed prototypes file: views into the bytes, nothing copied.
#[derive(Debug, Clone, Copy)]
pub struct PrototypeFile<'a> {
    /// The CRC field of the engine blob the embeddings were computed with.
    pub model: u32,
    /// Embedding width.
    pub dim: usize,
    /// Novelty above this is reported as novel.
    pub threshold: f32,
    /// The false-positive rate the threshold was calibrated for.
    pub false_positive_rate: f32,
    labels: usize,
    names: &'a [u8],
    items: &'a [u8],
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], E> {
        if self.b.len() < n {
            return Err(E::Truncated);
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, E> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, E> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f32(&mut self) -> Result<f32, E> {
        self.u32().map(f32::from_bits)
    }
}

/// Splits the next `length u8 | name` off a label section.
fn next_name(b: &[u8]) -> Result<(&str, &[u8]), E> {
    let (&len, rest) = b.split_first().ok_or(E::Truncated)?;
    let len = len as usize;
    if len == 0 || len > MAX_NAME {
        return Err(E::Invalid("a label name is empty or longer than 31 bytes"));
    }
    if rest.len() < len {
        return Err(E::Truncated);
    }
    let name = core::str::from_utf8(&rest[..len]).map_err(|_| E::Invalid("a label name is not UTF-8"))?;
    Ok((name, &rest[len..]))
}

impl<'a> PrototypeFile<'a> {
    /// Parses and validates a file; every failure is an `Err`, never a panic.
    ///
    /// ```
    /// use dim_runtime::prototypes::file::{self, FileError, PrototypeFile};
    /// let bytes = file::write(&file::FileSpec {
    ///     model: 0x1234_5678,
    ///     threshold: 0.4,
    ///     false_positive_rate: 0.05,
    ///     labels: &["cat", "dog"],
    ///     prototypes: &[(0, &[100, 0][..]), (1, &[0, 100][..])],
    /// })
    /// .unwrap();
    /// let f = PrototypeFile::parse(&bytes)?;
    /// assert_eq!((f.dim, f.label_name(1)), (2, Some("dog")));
    /// let mut store = dim_runtime::PrototypeStore::<8, 2>::new();
    /// f.load_into(&mut store)?;
    /// assert_eq!(store.nearest(&[90, 10]).unwrap().label, 0);
    /// assert_eq!(PrototypeFile::parse(&bytes[..20]).err(), Some(FileError::Truncated));
    /// # Ok::<(), FileError>(())
    /// ```
    pub fn parse(bytes: &'a [u8]) -> Result<Self, E> {
        let mut r = Reader { b: bytes };
        if r.take(4).map_err(|_| E::Truncated)? != MAGIC {
            return Err(E::NotAPrototypesFile);
        }
        let version = r.u16()?;
        if version != VERSION {
            return Err(E::Version { found: version, supported: VERSION });
        }
        // Reserved for flags a later writer may set: a reader that does not know them refuses.
        if r.u16()? != 0 {
            return Err(E::Invalid("reserved header bytes are not zero"));
        }
        let len = r.u32()? as usize;
        let crc = r.u32()?;
        if r.b.len() < len {
            return Err(E::Truncated);
        }
        if r.b.len() > len {
            return Err(E::TrailingBytes);
        }
        if crate::engine::blob::checksum(r.b) != crc {
            return Err(E::Checksum);
        }
        let model = r.u32()?;
        let (dim, labels, count) = (r.u16()? as usize, r.u16()? as usize, r.u16()? as usize);
        if r.u16()? != 0 {
            return Err(E::Invalid("reserved payload bytes are not zero"));
        }
        if dim == 0 || dim > MAX_DIM {
            return Err(E::Invalid("embedding width is 0 or above 4096"));
        }
        let (threshold, false_positive_rate) = (r.f32()?, r.f32()?);
        if !threshold.is_finite() || !(0.0..=1.0).contains(&false_positive_rate) {
            return Err(E::Invalid("the threshold is not finite or the false-positive rate is outside [0, 1]"));
        }
        // Walk the names once to find where the section ends (and check each).
        let start = r.b;
        let mut rest = r.b;
        for _ in 0..labels {
            rest = next_name(rest)?.1;
        }
        let names = &start[..start.len() - rest.len()];
        r.b = rest;
        let items = r.take(count * (2 + dim))?;
        if !r.b.is_empty() {
            return Err(E::TrailingBytes);
        }
        let file = Self { model, dim, threshold, false_positive_rate, labels, names, items };
        if file.prototypes().any(|(label, _)| label as usize >= labels) {
            return Err(E::Invalid("a prototype's label is not in the label table"));
        }
        Ok(file)
    }

    /// Number of labels.
    pub fn labels(&self) -> usize {
        self.labels
    }

    /// The names of the labels, in label order.
    pub fn label_names(&self) -> impl Iterator<Item = &'a str> + 'a {
        let mut rest = self.names;
        core::iter::from_fn(move || {
            // Parsing checked every name: this only stops at the end of the section.
            let (name, tail) = next_name(rest).ok()?;
            rest = tail;
            Some(name)
        })
    }

    /// The name of `label`, if the file has it.
    pub fn label_name(&self, label: u16) -> Option<&'a str> {
        self.label_names().nth(label as usize)
    }

    /// Number of prototypes.
    pub fn len(&self) -> usize {
        self.items.len() / (2 + self.dim)
    }

    /// Whether the file holds no prototype (labels and threshold only).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The prototypes: label and int8 embedding (as the file's bytes; `as i8` each).
    pub fn prototypes(&self) -> impl Iterator<Item = (u16, &'a [u8])> + 'a {
        self.items.chunks_exact(2 + self.dim).map(|c| (u16::from_le_bytes([c[0], c[1]]), &c[2..]))
    }

    /// Adds every prototype to `store`, zero-padding embeddings narrower than `D` (cosine is
    /// unchanged). Checks the room first, so a store too small is left as it was.
    pub fn load_into<const N: usize, const D: usize>(&self, store: &mut PrototypeStore<N, D>) -> Result<(), E> {
        if self.dim > D || store.len() + self.len() > N {
            return Err(E::Capacity { need: self.len(), have: N - store.len(), dim: self.dim, width: D });
        }
        for (label, bytes) in self.prototypes() {
            let mut e = [0i8; D];
            for (v, &b) in e.iter_mut().zip(bytes) {
                *v = b as i8;
            }
            // Room was checked above.
            let _ = store.insert(label, e);
        }
        Ok(())
    }
}

/// A whole file to [`write()`]: what [`PrototypeFile`] is parsed back into.
#[cfg(feature = "std")]
#[derive(Debug, Clone, Copy)]
pub struct FileSpec<'a> {
    /// The CRC field of the engine blob the embeddings came from.
    pub model: u32,
    /// Novelty above this is novel.
    pub threshold: f32,
    /// The false-positive rate the threshold was chosen for.
    pub false_positive_rate: f32,
    /// Label names, indexed by label.
    pub labels: &'a [&'a str],
    /// Label and int8 embedding of each prototype (all of one width).
    pub prototypes: &'a [(u16, &'a [i8])],
}

/// Writes `spec` in the layout above; refuses what [`PrototypeFile::parse`] would refuse.
#[cfg(feature = "std")]
pub fn write(spec: &FileSpec) -> Result<std::vec::Vec<u8>, E> {
    let dim = spec.prototypes.first().map_or(0, |(_, e)| e.len());
    if dim == 0 || dim > MAX_DIM || spec.prototypes.iter().any(|(_, e)| e.len() != dim) {
        return Err(E::Invalid("prototypes must share one width in 1 ..= 4096"));
    }
    if spec.labels.len() > u16::MAX as usize || spec.prototypes.len() > u16::MAX as usize {
        return Err(E::Invalid("more than 65535 labels or prototypes"));
    }
    if spec.prototypes.iter().any(|(l, _)| *l as usize >= spec.labels.len()) {
        return Err(E::Invalid("a prototype's label is not in the label table"));
    }
    if spec.labels.iter().any(|n| n.is_empty() || n.len() > MAX_NAME) {
        return Err(E::Invalid("a label name is empty or longer than 31 bytes"));
    }
    if !spec.threshold.is_finite() || !(0.0..=1.0).contains(&spec.false_positive_rate) {
        return Err(E::Invalid("the threshold is not finite or the false-positive rate is outside [0, 1]"));
    }
    let mut p = std::vec::Vec::new();
    p.extend(spec.model.to_le_bytes());
    for v in [dim, spec.labels.len(), spec.prototypes.len(), 0] {
        p.extend((v as u16).to_le_bytes());
    }
    p.extend(spec.threshold.to_le_bytes());
    p.extend(spec.false_positive_rate.to_le_bytes());
    for name in spec.labels {
        p.push(name.len() as u8);
        p.extend(name.as_bytes());
    }
    for (label, e) in spec.prototypes {
        p.extend(label.to_le_bytes());
        p.extend(e.iter().map(|&v| v as u8));
    }
    let mut out = std::vec::Vec::with_capacity(HEADER_LEN + p.len());
    out.extend(MAGIC);
    out.extend(VERSION.to_le_bytes());
    out.extend([0, 0]);
    out.extend((p.len() as u32).to_le_bytes());
    out.extend(crate::engine::blob::checksum(&p).to_le_bytes());
    out.extend(p);
    Ok(out)
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn sample() -> Vec<u8> {
        let protos: [(u16, &[i8]); 3] = [(0, &[127, -128, 0]), (1, &[5, 6, 7]), (0, &[-1, 0, 1])];
        write(&FileSpec { model: 0xDEAD_BEEF, threshold: 0.25, false_positive_rate: 0.05, labels: &["airplane", "猫"], prototypes: &protos }).unwrap()
    }

    #[test]
    fn round_trips_every_field() {
        let bytes = sample();
        // 16 header + 20 fixed + (1+8) + (1+3) names + 3 × (2+3) prototypes.
        assert_eq!(bytes.len(), 16 + 20 + 9 + 4 + 15);
        let f = PrototypeFile::parse(&bytes).unwrap();
        assert_eq!((f.model, f.dim, f.threshold, f.false_positive_rate), (0xDEAD_BEEF, 3, 0.25, 0.05));
        assert_eq!(f.label_names().collect::<Vec<_>>(), ["airplane", "猫"]);
        assert_eq!((f.label_name(1), f.label_name(2)), (Some("猫"), None));
        let got: Vec<(u16, Vec<i8>)> = f.prototypes().map(|(l, e)| (l, e.iter().map(|&b| b as i8).collect())).collect();
        assert_eq!(got, [(0, vec![127, -128, 0]), (1, vec![5, 6, 7]), (0, vec![-1, 0, 1])]);
        assert_eq!((f.len(), f.labels()), (3, 2));
    }

    #[test]
    fn loads_into_a_store_padded_or_refuses_without_touching_it() {
        let bytes = sample();
        let f = PrototypeFile::parse(&bytes).unwrap();
        let mut wide = PrototypeStore::<4, 8>::new();
        f.load_into(&mut wide).unwrap();
        assert_eq!(wide.len(), 3);
        let m = wide.nearest(&[5, 6, 7, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(m.label, 1);
        assert!((m.similarity - 1.0).abs() < 1e-6, "zero padding keeps the cosine");
        assert_eq!(f.load_into(&mut wide), Err(E::Capacity { need: 3, have: 1, dim: 3, width: 8 }));
        assert_eq!(wide.len(), 3, "a refused load adds nothing");
        assert!(f.load_into(&mut PrototypeStore::<4, 2>::new()).is_err(), "narrower than the file");
    }

    #[test]
    fn every_corruption_is_a_named_error() {
        let good = sample();
        let at = |i: usize, v: u8| {
            let mut b = good.clone();
            b[i] = v;
            PrototypeFile::parse(&b).err()
        };
        assert_eq!(at(0, b'X'), Some(E::NotAPrototypesFile));
        assert_eq!(at(4, 2), Some(E::Version { found: 2, supported: 1 }));
        assert_eq!(at(6, 1), Some(E::Invalid("reserved header bytes are not zero")));
        assert_eq!(at(40, b'b'), Some(E::Checksum), "a flipped byte in a name");
        // Every truncation and an extra byte.
        for n in 0..good.len() {
            assert!(PrototypeFile::parse(&good[..n]).is_err(), "{n} bytes parsed");
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(PrototypeFile::parse(&long).err(), Some(E::TrailingBytes));
    }

    /// Payloads with a valid checksum but forged contents: the checks behind the checksum.
    #[test]
    fn forged_payloads_with_valid_checksums_are_refused() {
        let reseal = |mut b: Vec<u8>| {
            let crc = crate::engine::blob::checksum(&b[HEADER_LEN..]);
            b[12..16].copy_from_slice(&crc.to_le_bytes());
            b
        };
        let forge = |i: usize, bytes: &[u8]| {
            let mut b = sample();
            b[i..i + bytes.len()].copy_from_slice(bytes);
            PrototypeFile::parse(&reseal(b)).err()
        };
        assert_eq!(forge(20, &[0, 0]), Some(E::Invalid("embedding width is 0 or above 4096")));
        assert_eq!(forge(20, &[4, 0]), Some(E::Truncated), "a wider embedding than the bytes hold");
        assert_eq!(forge(49, &[2, 0]), Some(E::Invalid("a prototype's label is not in the label table")));
        assert_eq!(forge(24, &[9, 0]), Some(E::Truncated));
        assert_eq!(forge(28, &f32::NAN.to_le_bytes()), Some(E::Invalid("the threshold is not finite or the false-positive rate is outside [0, 1]")));
        assert_eq!(forge(32, &2f32.to_le_bytes()), Some(E::Invalid("the threshold is not finite or the false-positive rate is outside [0, 1]")));
        assert_eq!(forge(36, &[0]), Some(E::Invalid("a label name is empty or longer than 31 bytes")));
        assert_eq!(forge(46, &[0xFF]), Some(E::Invalid("a label name is not UTF-8")));
    }

    #[test]
    fn the_writer_refuses_what_the_reader_would() {
        let ok: [(u16, &[i8]); 1] = [(0, &[1])];
        let spec = FileSpec { model: 0, threshold: 0.5, false_positive_rate: 0.05, labels: &["a"], prototypes: &ok };
        assert!(write(&spec).is_ok());
        assert!(write(&FileSpec { prototypes: &[], ..spec }).is_err(), "no width");
        assert!(write(&FileSpec { prototypes: &[(0, &[1]), (0, &[1, 2])], ..spec }).is_err(), "two widths");
        assert!(write(&FileSpec { prototypes: &[(1, &[1])], ..spec }).is_err(), "unknown label");
        assert!(write(&FileSpec { labels: &["a name longer than thirty-one bytes"], ..spec }).is_err());
        assert!(write(&FileSpec { threshold: f32::INFINITY, ..spec }).is_err());
    }
}
