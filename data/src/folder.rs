//! Image folders: `<root>/<class>/*.{png,jpg,jpeg}`. Classes are the sorted subfolder names;
//! images are decoded lazily (on the loader's worker threads) and resized/cropped to 32×32.

use super::{DataError, ImageSource, Rgb32};
use std::path::{Path, PathBuf};

pub struct ImageFolder {
    files: Vec<(PathBuf, usize)>,
    classes: Vec<String>,
    root: PathBuf,
}

/// Whether `p` names an image this reader decodes (`.png`, `.jpg`, `.jpeg`, any case).
pub fn is_image(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref(), Some("png" | "jpg" | "jpeg"))
}

fn subdirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs
}

pub(super) fn looks_like_folder(root: &Path) -> bool {
    subdirs(root).iter().any(|d| std::fs::read_dir(d).into_iter().flatten().flatten().any(|e| is_image(&e.path())))
}

impl ImageFolder {
    pub fn open(root: &Path) -> Result<Self, DataError> {
        let mut files = Vec::new();
        let mut classes = Vec::new();
        for dir in subdirs(root) {
            let mut imgs: Vec<PathBuf> =
                std::fs::read_dir(&dir).map_err(|e| DataError::io(&dir, e))?.flatten().map(|e| e.path()).filter(|p| is_image(p)).collect();
            if imgs.is_empty() {
                continue;
            }
            imgs.sort();
            let label = classes.len();
            classes.push(dir.file_name().unwrap().to_string_lossy().into_owned());
            files.extend(imgs.into_iter().map(|p| (p, label)));
        }
        if files.is_empty() {
            return Err(DataError::Empty { path: root.to_path_buf() });
        }
        Ok(Self { files, classes, root: root.to_path_buf() })
    }
}

/// Decodes an image file of any size to 32×32 RGB.
pub fn decode_file(path: &Path) -> Result<Rgb32, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_bytes(&bytes, path)
}

/// Decodes an encoded image (PNG, JPEG) to 32×32 RGB; `path` names it in errors.
/// Largest side and decoded size accepted: photos are welcome, a 20000×20000 header is not
/// (decoding it would take gigabytes before the image is scaled to 32×32).
const MAX_SIDE: u32 = 8192;
const MAX_DECODED_BYTES: u64 = 256 << 20;

pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<Rgb32, DataError> {
    let decode_err = |reason: String| DataError::Decode { path: path.to_path_buf(), reason };
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| decode_err(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| decode_err(e.to_string()))?.to_rgb8();
    let mut out = [0u8; super::IMAGE_BYTES];
    dim_runtime::preprocess::to_rgb32(img.as_raw(), img.width() as usize, img.height() as usize, 3, &mut out)
        .map_err(|e| DataError::Decode { path: path.to_path_buf(), reason: e.to_string() })?;
    Ok(out)
}

impl ImageSource for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn label(&self, i: usize) -> usize {
        self.files[i].1
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn load(&self, i: usize) -> Result<Rgb32, DataError> {
        decode_file(&self.files[i].0)
    }
    fn describe(&self) -> String {
        format!("image folder, {} images in {} classes under {}", self.len(), self.classes.len(), self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::write_folder;

    #[test]
    fn reads_classes_and_crops_png_and_jpeg() {
        let dir = tempfile::tempdir().unwrap();
        write_folder(dir.path(), 3);
        std::fs::write(dir.path().join("README.txt"), "not an image dir").unwrap();
        let src = super::super::open(dir.path()).unwrap();
        assert_eq!(src.len(), 6);
        assert_eq!(src.classes(), ["cats", "dogs"]);
        assert_eq!((src.label(0), src.label(5)), (0, 1));
        let png = src.load(4).unwrap(); // dogs/0001? index 4 = dogs 0001.jpg; index 3 = dogs 0000.png
        let png0 = src.load(3).unwrap();
        assert_eq!(png0[0], 200); // red channel exact in PNG
        // 40 wide → centre 32 columns start at x = 4, green = 6x.
        assert_eq!(png0[1], 24);
        assert!((png[0] as i32 - 200).abs() <= 8, "JPEG red near 200: {}", png[0]);
    }

    /// A header that promises 20000×20000 pixels is refused before anything that large is made.
    #[test]
    fn oversized_images_are_refused() {
        let mut png = Vec::new();
        image::GrayImage::new(1, 1).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        // Patch the IHDR width and height (bytes 16..24) and its CRC (bytes 29..33).
        png[16..20].copy_from_slice(&20000u32.to_be_bytes());
        png[20..24].copy_from_slice(&20000u32.to_be_bytes());
        let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode_bytes(&png, Path::new("huge.png")).unwrap_err().to_string();
        assert!(err.contains("huge.png") && err.to_lowercase().contains("limit"), "{err}");
    }

    #[test]
    fn corrupt_and_truncated_images_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_folder(dir.path(), 2);
        let bad = dir.path().join("cats/0000.png");
        let bytes = std::fs::read(&bad).unwrap();
        std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
        std::fs::write(dir.path().join("dogs/0001.jpg"), b"definitely not a jpeg").unwrap();
        let src = ImageFolder::open(dir.path()).unwrap();
        for i in [0, 3] {
            let err = src.load(i).err().unwrap().to_string();
            assert!(err.contains("cannot decode") && err.contains("--skip-bad"), "{err}");
        }
        assert!(src.load(0).err().unwrap().to_string().contains("0000.png"));
        assert!(src.load(1).is_ok());
    }
}
