//! `trainer data fetch`: download an official archive, check its SHA-256, unpack it.
//!
//! The download goes to `<dir>/<name>.part` and is renamed only after the checksum matches, so
//! an interrupted or corrupted download never looks like a good one.

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A dataset archive users can fetch.
pub struct Archive {
    pub name: &'static str,
    pub url: &'static str,
    pub file: &'static str,
    pub sha256: &'static str,
}

/// The official CIFAR-10 binary archive (170,052,171 bytes).
pub const CIFAR10: Archive = Archive {
    name: "cifar10",
    url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    file: "cifar-10-binary.tar.gz",
    sha256: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
};

pub fn archive(name: &str) -> anyhow::Result<&'static Archive> {
    match name {
        "cifar10" | "cifar-10" => Ok(&CIFAR10),
        other => bail!("unknown dataset `{other}`; available: cifar10"),
    }
}

/// Downloads `url` into `dir`, checks `sha256`, unpacks the tar.gz there. Returns the archive path.
pub fn fetch(url: &str, file: &str, sha256: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dest = dir.join(file);
    if dest.exists() && hash_file(&dest)? == sha256 {
        eprintln!("{} already present and verified", dest.display());
    } else {
        download(url, &dest, sha256, STALL_TIMEOUT)?;
    }
    let gz = std::fs::File::open(&dest).with_context(|| format!("cannot open {}", dest.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    // unpack() refuses entries that would escape `dir` (absolute paths, `..`).
    tar.unpack(dir).with_context(|| format!("cannot unpack {} into {}", dest.display(), dir.display()))?;
    Ok(dest)
}

fn hash_file(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex(&h.finalize()))
}

/// The SHA-256 of `bytes`, in lowercase hex (as `hash_file` gives a file's).
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How long a download may go without a byte before it is given up (a server that stops
/// sending would otherwise hang `data fetch` forever); also the connection timeout.
const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn download(url: &str, dest: &Path, sha256: &str, stall: std::time::Duration) -> anyhow::Result<()> {
    let agent = ureq::AgentBuilder::new().timeout_connect(stall).timeout_read(stall).build();
    let resp = agent
        .get(url)
        .call()
        .with_context(|| format!("download of {url} failed; check the network, or download it by hand into {}", dest.parent().unwrap().display()))?;
    let total = resp.header("Content-Length").and_then(|v| v.parse::<u64>().ok());
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(indicatif::ProgressStyle::with_template("{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}").unwrap());
    bar.set_message(format!("fetching {url}"));
    let part = dest.with_extension("part");
    let mut out = std::fs::File::create(&part).with_context(|| format!("cannot write {}", part.display()))?;
    let mut reader = resp.into_reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n =
            reader.read(&mut buf).with_context(|| format!("download of {url} was interrupted or stalled for {} s; run the command again", stall.as_secs()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).with_context(|| format!("cannot write {}", part.display()))?;
        bar.inc(n as u64);
    }
    out.sync_all()?;
    bar.finish_and_clear();
    let got = hex(&hasher.finalize());
    if got != sha256 {
        let _ = std::fs::remove_file(&part);
        bail!("{url}: SHA-256 is {got}, expected {sha256}; the download is corrupt or not the official archive (nothing was kept)");
    }
    std::fs::rename(&part, dest).with_context(|| format!("cannot move download to {}", dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves `body` to each of `n` connections on a loopback port; returns the URL.
    fn serve(body: Vec<u8>, n: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/cifar.tar.gz", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(n) {
                let mut s = stream.unwrap();
                let mut req = [0u8; 4096];
                let _ = s.read(&mut req);
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body);
            }
        });
        url
    }

    fn tiny_archive() -> Vec<u8> {
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        let data = vec![7u8; 3073];
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "cifar-10-batches-bin/data_batch_1.bin", &data[..]).unwrap();
        tar.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn fetches_verifies_and_unpacks_over_loopback() {
        let body = tiny_archive();
        let sha = hex(&Sha256::digest(&body));
        let dir = tempfile::tempdir().unwrap();
        let url = serve(body, 1);
        fetch(&url, "c.tar.gz", &sha, dir.path()).unwrap();
        let src = crate::data::open(dir.path()).unwrap();
        assert_eq!((src.len(), src.label(0)), (1, 7));
        // Second call finds the verified archive and does not download (the server is gone).
        fetch(&url, "c.tar.gz", &sha, dir.path()).unwrap();
    }

    #[test]
    fn a_server_that_stops_sending_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/cifar.tar.gz", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let mut s = listener.incoming().next().unwrap().unwrap();
            let _ = s.read(&mut [0u8; 4096]);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789");
            std::thread::sleep(std::time::Duration::from_secs(5)); // then hangs up
        });
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let err = download(&url, &dir.path().join("c.tar.gz"), &"0".repeat(64), std::time::Duration::from_millis(500)).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(4), "took {:?}", started.elapsed());
        assert!(format!("{err:#}").contains("stalled"), "{err:#}");
        assert!(!dir.path().join("c.tar.gz").exists());
        server.join().unwrap();
    }

    #[test]
    fn checksum_mismatch_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let url = serve(tiny_archive(), 1);
        let err = fetch(&url, "c.tar.gz", &"0".repeat(64), dir.path()).unwrap_err().to_string();
        assert!(err.contains("SHA-256"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
