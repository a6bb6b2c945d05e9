//! Recognising a file's format by its first bytes, never its name.

/// A file format fastscan knows (kebab-case in reports: `torch-zip`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Safetensors,
    /// PyTorch zip checkpoint (`archive/data.pkl` + storages).
    TorchZip,
    /// Pre-1.6 PyTorch file: magic-number pickle followed by more pickles.
    TorchLegacy,
    /// Pre-1.0 PyTorch tar archive (`storages`, `tensors`, `pickle` members).
    TorchTar,
    /// A bare pickle stream.
    Pickle,
    /// A NumPy array file.
    Npy,
    /// A zip of NumPy arrays (`np.savez`).
    Npz,
    /// A diffusers folder (`model_index.json` + component subfolders); never sniffed from bytes.
    Diffusers,
    /// Tensors held in memory (a loaded torch state dict, [`crate::scan_memory`]); never sniffed.
    StateDict,
    /// A JSON file: a sharded model's `*.index.json`, only in a diffusers folder's `parts`; never sniffed.
    Json,
    #[default]
    Unknown,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Format {
    /// The report's name for this format.
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::TorchZip => "torch-zip",
            Format::TorchLegacy => "torch-legacy",
            Format::TorchTar => "torch-tar",
            Format::Pickle => "pickle",
            Format::Npy => "npy",
            Format::Npz => "npz",
            Format::Diffusers => "diffusers",
            Format::StateDict => "state-dict",
            Format::Json => "json",
            Format::Unknown => "unknown",
        }
    }
}

/// Bytes of a file's start the protocol 0 pickle heuristic looks at.
pub const SNIFF_LEN: usize = 64;
/// Bytes `sniff` wants to see (fewer is fine for short files): a tar header block.
pub const HEAD_LEN: usize = 512;

/// Guesses the format from the first bytes; `named_safetensors` only decides between
/// "damaged safetensors" and "unknown" when the bytes alone cannot tell.
pub fn sniff(head: &[u8], named_safetensors: bool) -> Format {
    if head.starts_with(crate::npy::MAGIC) {
        return Format::Npy;
    }
    if crate::npy::zip_is_npz(head) {
        return Format::Npz;
    }
    // A safetensors length under 2^32 then a JSON object: checked first, because a length such as
    // 0x0480 starts with the bytes of a pickle protocol header (0x80 0x04).
    if head.len() >= 9 && head[4..8] == [0, 0, 0, 0] {
        let first = head[8..].iter().find(|b| !b" \t\r\n".contains(b));
        if first == Some(&b'{') {
            return Format::Safetensors;
        }
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Format::TorchZip;
    }
    if head.len() >= 2 && head[0] == 0x80 && head[1] <= 5 {
        // PyTorch legacy files start with the pickled magic number 0x1950a86a20f9469cfc6c (LONG1, 10 bytes),
        // after a FRAME opcode when saved with pickle protocol 4 or 5.
        let at = if head.get(2) == Some(&0x95) { 11 } else { 2 };
        if head.len() >= at + 10
            && head[at] == 0x8a
            && head[at + 1] == 0x0a
            && head[at + 2..].starts_with(&[0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8])
        {
            return Format::TorchLegacy;
        }
        return Format::Pickle;
    }
    if head.len() >= 9 {
        let n = u64::from_le_bytes(head[..8].try_into().unwrap());
        let first = head[8..].iter().find(|b| !b" \t\r\n".contains(b));
        // A JSON object after the prefix is safetensors even when the length is wrong (then it is damaged).
        if first == Some(&b'{') && n >= 2 {
            return Format::Safetensors;
        }
    }
    // torch.load tries the tar loader first on every non-zip file: a valid first tar header is enough.
    if crate::pickle::tar::is_header(head) {
        return Format::TorchTar;
    }
    if crate::pickle::looks_like_protocol0(&head[..head.len().min(SNIFF_LEN)]) {
        return Format::Pickle;
    }
    if named_safetensors {
        return Format::Safetensors;
    }
    Format::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_by_bytes() {
        let mut st = 2u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{}");
        assert_eq!(sniff(&st, false), Format::Safetensors);
        assert_eq!(sniff(b"PK\x03\x04rest", false), Format::TorchZip);
        assert_eq!(sniff(&[0x80, 0x02, b'}', b'.'], false), Format::Pickle);
        let magic = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";
        let p2 = [&b"\x80\x02"[..], magic].concat();
        assert_eq!(sniff(&p2, false), Format::TorchLegacy);
        let p4 = [&b"\x80\x04\x95\x0d\x00\x00\x00\x00\x00\x00\x00"[..], magic].concat();
        assert_eq!(sniff(&p4, false), Format::TorchLegacy);
        assert_eq!(sniff(b"cos\nsystem\n(S'ls'\ntR.", false), Format::Pickle);
        assert_eq!(sniff(b"cmod\n\xf8\n", false), Format::Unknown);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n", false), Format::Unknown);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n", true), Format::Safetensors);
        // Header lengths whose first bytes look like a pickle protocol header (0x80, 0..=5).
        for n in [0x80u64, 0x0480, 0x0580] {
            let mut st = n.to_le_bytes().to_vec();
            st.extend_from_slice(b"{\"a\":");
            assert_eq!(sniff(&st, false), Format::Safetensors, "{n:#x}");
        }
    }
}
