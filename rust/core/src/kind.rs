//! What a file is: its kind (a closed list kept here) and its arch (generated from rules.json).

use std::fmt;

include!(concat!(env!("OUT_DIR"), "/arch.rs"));

/// What a file holds, the report's `kind` (kebab-case: `text-encoder`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A full model: a diffusion model under its checkpoint prefix, with the parts it carries.
    Checkpoint,
    /// A diffusion model alone (UNet or transformer, LDM or diffusers names).
    Unet,
    /// An autoencoder (kl-f8, 16-channel), LDM or diffusers names.
    Vae,
    /// A CLIP, OpenCLIP or T5 text encoder.
    TextEncoder,
    /// A LoRA or LyCORIS (low-rank pairs).
    Lora,
    /// A textual-inversion embedding.
    Embedding,
    /// A ControlNet (its hint block).
    Controlnet,
    /// A TencentARC T2I-Adapter.
    T2iAdapter,
    /// ESRGAN / Real-ESRGAN.
    Upscaler,
    /// A tiny autoencoder (TAESD family).
    Taesd,
    /// The web UI's latent preview decoder.
    VaeApprox,
    /// A readable file holding no tensors.
    Empty,
    /// Another tool's hash file (`.civitai.info`, `.cm-info.json`, the web UI's `cache.json`).
    Sidecar,
    /// A sharded model's `*.index.json` (only in a diffusers folder's `parts`).
    Index,
    /// None of the above (or not a model file).
    #[default]
    Unknown,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 15] = [
        Kind::Checkpoint,
        Kind::Unet,
        Kind::Vae,
        Kind::TextEncoder,
        Kind::Lora,
        Kind::Embedding,
        Kind::Controlnet,
        Kind::T2iAdapter,
        Kind::Upscaler,
        Kind::Taesd,
        Kind::VaeApprox,
        Kind::Empty,
        Kind::Sidecar,
        Kind::Index,
        Kind::Unknown,
    ];

    /// The report's name for this kind (what serde writes).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Checkpoint => "checkpoint",
            Kind::Unet => "unet",
            Kind::Vae => "vae",
            Kind::TextEncoder => "text-encoder",
            Kind::Lora => "lora",
            Kind::Embedding => "embedding",
            Kind::Controlnet => "controlnet",
            Kind::T2iAdapter => "t2i-adapter",
            Kind::Upscaler => "upscaler",
            Kind::Taesd => "taesd",
            Kind::VaeApprox => "vae-approx",
            Kind::Empty => "empty",
            Kind::Sidecar => "sidecar",
            Kind::Index => "index",
            Kind::Unknown => "unknown",
        }
    }

    /// The kind named `name` in a report, if any.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl Arch {
    /// The arch named `name` in a report, if any.
    pub fn parse(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_what_serde_writes_and_parse_back() {
        for k in Kind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.name());
            assert_eq!(Kind::parse(k.name()), Some(k));
        }
        for a in Arch::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.name());
            assert_eq!(Arch::parse(a.name()), Some(a));
        }
        assert_eq!(Kind::parse("nope"), None);
    }

    #[test]
    fn the_archs_are_those_of_the_rules_then_unknown() {
        let rules: serde_json::Value = serde_json::from_str(include_str!("rules.json")).unwrap();
        let mut want: Vec<&str> = vec![];
        for r in rules["archs"].as_array().unwrap() {
            let a = r["arch"].as_str().unwrap();
            if !want.contains(&a) {
                want.push(a);
            }
        }
        want.push("unknown");
        let got: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
        assert_eq!(got, want);
        assert_eq!(Arch::SdxlRefiner.name(), "sdxl-refiner");
        assert_eq!(Arch::default(), Arch::Unknown);
    }
}
