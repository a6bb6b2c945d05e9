//! Whole-file hashes (contract §5: blake3, sha256, autov1, autov2, addnet), fed chunk by chunk in file order.

use crate::report::{Finding, Hashes, Severity};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// AutoV1 hashes the 0x10000 bytes at offset 0x100000 ...
const AUTOV1_AT: u64 = 0x10_0000;
const AUTOV1_LEN: u64 = 0x1_0000;
/// ... of files of at least 2 MiB (shorter files get null, as model sites do).
const AUTOV1_MIN_SIZE: u64 = 2 * 0x10_0000;

/// The hashers of one file; feed it every byte once, in order.
pub struct FileHashers {
    pos: u64,
    blake3: blake3::Hasher,
    autov1: Option<Sha256>,
    sha256: Option<Sha256>,
    /// Offset addnet starts at, and its hasher.
    addnet: Option<(u64, Sha256)>,
}

/// Where the addnet hash starts in a safetensors file: 8 + the u64 LE at offset 0 (`None` if unreadable).
pub fn addnet_start(head: &[u8], size: u64) -> Option<u64> {
    let n = u64::from_le_bytes(head.get(..8)?.try_into().ok()?);
    n.checked_add(8).filter(|&s| s <= size)
}

impl FileHashers {
    /// Hashers for a file of `size` bytes; `sha256` adds sha256/autov2, and addnet from `addnet_from`.
    pub fn new(size: u64, sha256: bool, addnet_from: Option<u64>) -> Self {
        FileHashers {
            pos: 0,
            blake3: blake3::Hasher::new(),
            autov1: (size >= AUTOV1_MIN_SIZE).then(Sha256::new),
            sha256: sha256.then(Sha256::new),
            addnet: addnet_from.filter(|_| sha256).map(|a| (a, Sha256::new())),
        }
    }

    /// Feeds the next bytes of the file; BLAKE3 runs on every core beside the SHA-256 contexts.
    pub fn feed(&mut self, chunk: &[u8]) {
        let pos = self.pos;
        let end = pos + chunk.len() as u64;
        if let Some(h) = &mut self.autov1 {
            let (a, b) = (AUTOV1_AT.max(pos), (AUTOV1_AT + AUTOV1_LEN).min(end));
            if a < b {
                h.update(&chunk[(a - pos) as usize..(b - pos) as usize]);
            }
        }
        let b3 = &mut self.blake3;
        let sha = &mut self.sha256;
        let addnet = &mut self.addnet;
        rayon::join(
            || {
                b3.update_rayon(chunk);
            },
            || {
                rayon::join(
                    || {
                        if let Some(h) = sha {
                            h.update(chunk);
                        }
                    },
                    || {
                        if let Some((from, h)) = addnet {
                            if *from < end {
                                h.update(&chunk[from.saturating_sub(pos) as usize..]);
                            }
                        }
                    },
                );
            },
        );
        self.pos = end;
    }

    /// The finished hashes (lowercase hex).
    pub fn finish(self) -> Hashes {
        let sha256 = self.sha256.map(|h| hex::encode(h.finalize()));
        Hashes {
            blake3: Some(self.blake3.finalize().to_hex().to_string()),
            autov1: self
                .autov1
                .map(|h| hex::encode(h.finalize())[..8].to_string()),
            autov2: sha256.as_ref().map(|s| s[..10].to_string()),
            sha256,
            addnet: self.addnet.map(|(_, h)| hex::encode(h.finalize())),
        }
    }
}

/// `hash.mismatch` when metadata `sshs_model_hash` disagrees with the computed addnet hash.
pub fn addnet_mismatch(
    metadata: &BTreeMap<String, Value>,
    addnet: Option<&str>,
) -> Option<Finding> {
    let stored = metadata.get("sshs_model_hash")?.as_str()?;
    let computed = addnet?;
    if stored.trim().eq_ignore_ascii_case(computed) {
        return None;
    }
    Some(Finding::new(
        "hash.mismatch",
        Severity::Warning,
        format!("metadata sshs_model_hash {stored} is not the file's addnet hash {computed}"),
        json!({"key": "sshs_model_hash", "stored": stored, "computed": computed}),
    ))
}

mod hex {
    /// Lowercase hex of bytes.
    pub fn encode(b: impl AsRef<[u8]>) -> String {
        b.as_ref().iter().map(|x| format!("{x:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(data: &[u8], sha: bool, addnet: Option<u64>, piece: usize) -> Hashes {
        let mut h = FileHashers::new(data.len() as u64, sha, addnet);
        for c in data.chunks(piece) {
            h.feed(c);
        }
        h.finish()
    }

    #[test]
    fn hello_world_vectors() {
        let h = run(b"hello world", true, None, 3);
        assert_eq!(
            h.blake3.as_deref(),
            Some("d74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24")
        );
        assert_eq!(
            h.sha256.as_deref(),
            Some("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9")
        );
        assert_eq!(h.autov2.as_deref(), Some("b94d27b993"));
        assert_eq!(h.autov1, None);
        assert_eq!(h.addnet, None);
    }

    #[test]
    fn two_mib_mod_251_vectors() {
        let data: Vec<u8> = (0..2usize << 20).map(|i| (i % 251) as u8).collect();
        for piece in [1 << 16, 777_777, 64 << 20] {
            let h = run(&data, true, None, piece);
            assert_eq!(h.autov1.as_deref(), Some("15ffd73b"));
            assert_eq!(
                h.sha256.as_deref(),
                Some("1e075c8d478ad21844e33e830a695ef03a4d2488b69ee275bd8947618bb1be1e")
            );
            assert_eq!(
                h.blake3.as_deref(),
                Some("96fbba37478c16b7614c890b26832f67b541cf14e69ab8ebf0c739818588c9f1")
            );
        }
        // one byte short of 2 MiB: no autov1
        assert_eq!(run(&data[1..], false, None, 1 << 20).autov1, None);
    }

    #[test]
    fn addnet_vector() {
        let header = br#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#;
        let mut file = (56u64).to_le_bytes().to_vec();
        file.extend_from_slice(header);
        file.resize(8 + 56, b' ');
        file.extend_from_slice(&[0, 1, 2, 3]);
        let from = addnet_start(&file, file.len() as u64);
        assert_eq!(from, Some(64));
        for piece in [1, 5, 100] {
            let h = run(&file, true, from, piece);
            assert_eq!(
                h.addnet.as_deref(),
                Some("054edec1d0211f624fed0cbca9d4f9400b0e491c43742af2c5b0abebf0c990d8")
            );
        }
        assert_eq!(run(&file, false, from, 8).addnet, None);
        assert_eq!(addnet_start(&file, 10), None);
    }

    #[test]
    fn mismatch_finding() {
        let mut m = BTreeMap::new();
        assert!(addnet_mismatch(&m, Some("ab")).is_none());
        m.insert("sshs_model_hash".into(), Value::from("AB"));
        assert!(addnet_mismatch(&m, Some("ab")).is_none());
        assert!(addnet_mismatch(&m, None).is_none());
        let f = addnet_mismatch(&m, Some("cd")).unwrap();
        assert_eq!(f.check, "hash.mismatch");
        assert_eq!(f.details["stored"], "AB");
    }
}
