//! Kinds of files that hold no full diffusion model: VAE, text encoder, LoRA, embedding, ControlNet,
//! and the rest of a model folder (upscalers, T2I adapters, tiny autoencoders, VAE-approx).
//!
//! VAEs and text encoders are also scored against their component signatures (`signatures.json`).

use crate::classify::{whole, whole_scored, Classification, Role};
use crate::kind::{Arch, Kind};
use crate::tensor::TensorInfo;
use rustc_hash::FxHashMap as HashMap;

type Index<'a> = HashMap<&'a str, &'a TensorInfo>;

fn dim(index: &Index, key: &str, axis: usize) -> Option<u64> {
    index.get(key).and_then(|t| t.shape.get(axis).copied())
}

/// Arch implied by a cross-attention / text width: 768 CLIP-L (SD1), 1024 OpenCLIP-H (SD2), 2048 SDXL.
fn arch_from_context(width: Option<u64>) -> Arch {
    match width {
        Some(768) => Arch::Sd1,
        Some(1024) => Arch::Sd2,
        Some(2048) => Arch::Sdxl,
        _ => Arch::Unknown,
    }
}

/// Classifies a file with no diffusion model at a known place.
pub fn classify_standalone(tensors: &[TensorInfo], index: &Index) -> Classification {
    let has = |k: &str| index.contains_key(k);
    let any_prefix = |p: &str| tensors.iter().any(|t| t.name.starts_with(p));

    // ControlNet: LDM (`control_model.` prefix or bare) with its hint block.
    for prefix in ["control_model.", ""] {
        if has(&format!("{prefix}input_hint_block.0.weight")) {
            let to_k = format!("{prefix}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight");
            let arch = if has(&format!("{prefix}label_emb.0.0.weight")) {
                Arch::Sdxl
            } else {
                arch_from_context(dim(index, &to_k, 1))
            };
            return whole(tensors, Kind::Controlnet, arch, "controlnet");
        }
    }
    if has("controlnet_cond_embedding.conv_in.weight") {
        let k = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight";
        let arch = if has("add_embedding.linear_1.weight") {
            Arch::Sdxl
        } else {
            arch_from_context(dim(index, k, 1))
        };
        return whole(tensors, Kind::Controlnet, arch, "controlnet");
    }

    if tensors.is_empty() {
        return Classification::by_role(tensors, Kind::Empty, Arch::Unknown, |_| Role::Buffer);
    }

    // cloneofsimo `lora_diffusion`: `unet:N:down`, `text_encoder:N:up`, maybe token vectors.
    if tensors.iter().any(|t| cloneofsimo_part(&t.name).is_some()) {
        return cloneofsimo(tensors);
    }

    // cloneofsimo's `.pt` LoRA: a bare list of (up, down) weight pairs.
    if let Some(c) = lora_pair_list(tensors) {
        return c;
    }

    // LoRA / LyCORIS: low-rank pairs.
    if tensors.iter().any(|t| {
        let n = t.name.as_str();
        n.contains(".lora_down.")
            || n.contains(".lora_up.")
            || n.contains(".lora_A.")
            || n.contains(".lora_B.")
            || n.contains(".hada_w1_a")
            || n.contains(".lokr_w1")
    }) {
        return lora(tensors);
    }

    // VAE (kl-f8 / 16-channel), LDM or diffusers names, bare or under `vae.`.
    if (has("encoder.conv_in.weight") && has("decoder.conv_in.weight"))
        || (has("decoder.conv_in.weight") && !any_prefix("encoder."))
        || (has("encoder.conv_in.weight") && !any_prefix("decoder."))
    {
        return whole_scored(tensors, index, Kind::Vae, Arch::Unknown, "vae");
    }

    // Text encoders: transformers CLIP, OpenCLIP, T5.
    if let Some(w) = dim(index, "text_model.embeddings.token_embedding.weight", 1) {
        let comp = if w == 1280 { "clip_g" } else { "clip_l" };
        return whole_scored(tensors, index, Kind::TextEncoder, Arch::Unknown, comp);
    }
    if has("token_embedding.weight") && any_prefix("transformer.resblocks.") {
        let w = dim(index, "token_embedding.weight", 1);
        let (comp, arch) = if w == Some(1024) {
            ("open_clip_h", Arch::Sd2)
        } else {
            ("clip_g", Arch::Unknown)
        };
        return whole_scored(tensors, index, Kind::TextEncoder, arch, comp);
    }
    if has("shared.weight") && any_prefix("encoder.block.") {
        return whole_scored(tensors, index, Kind::TextEncoder, Arch::Unknown, "t5xxl");
    }

    // Textual-inversion embeddings.
    if let Some(c) = embedding(tensors, index) {
        return c;
    }
    if let Some(c) = token_embedding(tensors) {
        return c;
    }

    if let Some(c) = crate::file_kinds::classify(tensors, index) {
        return c;
    }
    if let Some(c) = taesd(tensors, index) {
        return c;
    }

    unknown(tensors)
}

fn unknown(tensors: &[TensorInfo]) -> Classification {
    Classification::by_role(tensors, Kind::Unknown, Arch::Unknown, |_| Role::Buffer)
}

/// `(side, is_down)` of a cloneofsimo LoRA key `unet:N:down` / `text_encoder:N:up`.
fn cloneofsimo_part(name: &str) -> Option<(&str, bool)> {
    let mut parts = name.split(':');
    let (side, n, dir) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !matches!(side, "unet" | "text_encoder")
        || n.is_empty()
        || !n.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    match dir {
        "down" => Some((side, true)),
        "up" => Some((side, false)),
        _ => None,
    }
}

/// Classifies a cloneofsimo LoRA; the arch comes from the widths its down projections read.
fn cloneofsimo(tensors: &[TensorInfo]) -> Classification {
    let widths = |want: &str| -> Vec<u64> {
        tensors
            .iter()
            .filter_map(|t| match cloneofsimo_part(&t.name) {
                Some((side, true)) if side == want => t.shape.get(1).copied(),
                _ => None,
            })
            .collect()
    };
    // The UNet's cross-attention reads the text width: 768 (SD1), 1024 (SD2), 2048 (SDXL).
    let unet = widths("unet");
    let cross = [2048, 1024, 768].into_iter().find(|w| unet.contains(w));
    let arch = match cross {
        Some(w) => arch_from_context(Some(w)),
        None => {
            let te = widths("text_encoder");
            arch_from_context(te.first().copied().filter(|w| te.iter().all(|x| x == w)))
        }
    };
    Classification::by_role(tensors, Kind::Lora, arch, |t| {
        let name = match cloneofsimo_part(&t.name) {
            Some(("unet", _)) => "unet",
            Some(_) => "text_encoder",
            None => "embedding",
        };
        Role::Component {
            name,
            prefix_len: 0,
        }
    })
}

fn lora(tensors: &[TensorInfo]) -> Classification {
    let names = || tensors.iter().map(|t| t.name.as_str());
    let arch = if names().any(|n| n.starts_with("lora_te1_") || n.starts_with("lora_te2_")) {
        Arch::Sdxl
    } else if names().any(|n| n.contains("double_blocks")) {
        Arch::Flux
    } else if names().any(|n| n.contains("joint_blocks")) {
        Arch::Sd3
    } else {
        // Width of the text side: the down projection of a text-encoder or cross-attention key.
        let width = tensors.iter().find_map(|t| {
            let n = t.name.as_str();
            let te = n.starts_with("lora_te_")
                && n.contains("self_attn_q_proj")
                && n.contains("lora_down");
            let xattn = n.contains("attn2_to_k") && n.contains("lora_down");
            (te || xattn).then(|| t.shape.get(1).copied()).flatten()
        });
        arch_from_context(width)
    };
    Classification::by_role(tensors, Kind::Lora, arch, |t| {
        let comp = if t.name.starts_with("lora_te") || t.name.starts_with("text_encoder") {
            "text_encoder"
        } else {
            "unet"
        };
        Role::Component {
            name: comp,
            prefix_len: 0,
        }
    })
}

fn embedding(tensors: &[TensorInfo], index: &Index) -> Option<Classification> {
    let width_of = |k: &str| {
        index
            .get(k)
            .filter(|t| t.shape.len() == 2)
            .map(|t| t.shape[1])
    };
    let arch = if let (Some(768), Some(1280)) = (width_of("clip_l"), width_of("clip_g")) {
        Arch::Sdxl
    } else if let Some(w) = width_of("emb_params") {
        arch_from_context(Some(w))
    } else if tensors.len() <= 4
        && tensors
            .iter()
            .all(|t| t.name.starts_with("string_to_param."))
    {
        arch_from_context(tensors.first().and_then(|t| t.shape.last().copied()))
    } else {
        return None;
    };
    Some(whole(tensors, Kind::Embedding, arch, "embedding"))
}

/// cloneofsimo's `lora_diffusion` `.pt`: `torch.save([up0, down0, up1, down1, ...])`, so the tensors are
/// named `0`, `1`, ... and each pair chains (`up` is `[out, r]`, `down` is `[r, in]`, r small).
fn lora_pair_list(tensors: &[TensorInfo]) -> Option<Classification> {
    if tensors.len() < 2 || !tensors.len().is_multiple_of(2) {
        return None;
    }
    let numbered = tensors
        .iter()
        .enumerate()
        .all(|(i, t)| t.name == i.to_string() && matches!(t.shape.len(), 2 | 4));
    if !numbered {
        return None;
    }
    let mut ins = Vec::new();
    for pair in tensors.chunks(2) {
        let (up, down) = (&pair[0].shape, &pair[1].shape);
        let rank = up[1];
        if down[0] != rank || rank == 0 || rank > up[0].min(down[1]) {
            return None;
        }
        ins.push(down[1]);
    }
    // A UNet LoRA touches 320/640/1280-wide layers; a text-encoder LoRA only the text width.
    let unet = ins.iter().any(|w| matches!(w, 320 | 640 | 1280));
    let arch = if unet {
        arch_from_context([2048, 1024, 768].into_iter().find(|w| ins.contains(w)))
    } else {
        arch_from_context(ins.first().copied().filter(|w| ins.iter().all(|x| x == w)))
    };
    let comp = if unet { "unet" } else { "text_encoder" };
    Some(Classification::by_role(tensors, Kind::Lora, arch, |_| {
        Role::Component {
            name: comp,
            prefix_len: 0,
        }
    }))
}

/// Token embeddings keyed by their token: cloneofsimo's `.ti.pt` and diffusers' `learned_embeds.bin`
/// (`{"<token>": tensor[width]}`), a few vectors as wide as a CLIP text encoder.
fn token_embedding(tensors: &[TensorInfo]) -> Option<Classification> {
    const MAX_TOKENS: usize = 8;
    if tensors.len() > MAX_TOKENS {
        return None;
    }
    let width = |t: &TensorInfo| match t.shape.as_slice() {
        [w] | [_, w] if matches!(w, 768 | 1024 | 1280) => Some(*w),
        _ => None,
    };
    let first = width(&tensors[0])?;
    let ok = tensors
        .iter()
        .all(|t| !t.name.is_empty() && !t.name.contains('.') && width(t) == Some(first));
    ok.then(|| {
        whole(
            tensors,
            Kind::Embedding,
            arch_from_context(Some(first)),
            "embedding",
        )
    })
}

/// A Tiny AutoEncoder (madebyollin's TAESD family): a numbered `nn.Sequential` of plain convolutions
/// and `N.conv.{0,2,4}` blocks, bare (`taesd_encoder.pth`) or as diffusers' `AutoencoderTiny`
/// (`encoder.layers.N.`, `decoder.layers.N.`).
fn taesd(tensors: &[TensorInfo], index: &Index) -> Option<Classification> {
    let blocks = |prefix: &str| {
        tensors
            .iter()
            .filter(|t| {
                t.name
                    .strip_prefix(prefix)
                    .and_then(|r| r.split_once('.'))
                    .is_some_and(|(n, rest)| {
                        !n.is_empty()
                            && n.bytes().all(|b| b.is_ascii_digit())
                            && rest == "conv.4.weight"
                    })
            })
            .count()
    };
    let sequential = |prefix: &str| {
        tensors.iter().all(|t| {
            t.name
                .strip_prefix(prefix)
                .and_then(|r| r.split(['.']).next())
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    // diffusers AutoencoderTiny: both halves in one file.
    if blocks("encoder.layers.") >= 3 && blocks("decoder.layers.") >= 3 {
        return Some(whole(tensors, Kind::Taesd, Arch::Unknown, "taesd"));
    }
    if blocks("") < 3 || !sequential("") {
        return None;
    }
    // The encoder's first convolution reads RGB; the decoder's last one writes it.
    let comp = match index.get("0.weight").map(|t| t.shape.as_slice()) {
        Some([_, 3, _, _]) => "taesd_encoder",
        _ => "taesd_decoder",
    };
    Some(whole(tensors, Kind::Taesd, Arch::Unknown, comp))
}
