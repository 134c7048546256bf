//! Random backbone snapshots of the real model sizes, in the Hugging Face format and tensor
//! names sv72 loads (config.json, model.safetensors, preprocessor_config.json), for timing
//! without downloaded weights.

use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// A named size: the shapes of the published checkpoint of that name.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub name: &'static str,
    /// The checkpoint it mirrors.
    pub mirrors: &'static str,
    pub arch: Arch,
    pub hidden: usize,
    pub heads: usize,
    pub layers: usize,
    pub mlp: usize,
    pub registers: usize,
}

/// The family of a named size (and what it needs beyond the widths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Dinov2,
    Dinov3,
    /// A fixed-resolution SigLIP (2) vision tower: patch side and training resolution.
    Siglip {
        patch: usize,
        image: usize,
    },
    /// A SigLIP 2 NaFlex vision tower: patch side and position-grid size (`num_patches`, also
    /// the processor's default `max_num_patches`).
    Siglip2Naflex {
        patch: usize,
        num_patches: usize,
    },
}

/// The sizes `sv72 bench --backbone` accepts by name.
pub const SIZES: &[Size] = &[
    Size {
        name: "vits14",
        mirrors: "facebook/dinov2-small",
        arch: Arch::Dinov2,
        hidden: 384,
        heads: 6,
        layers: 12,
        mlp: 1536,
        registers: 0,
    },
    Size {
        name: "vits14-reg",
        mirrors: "facebook/dinov2-with-registers-small",
        arch: Arch::Dinov2,
        hidden: 384,
        heads: 6,
        layers: 12,
        mlp: 1536,
        registers: 4,
    },
    Size {
        name: "vitb14",
        mirrors: "facebook/dinov2-base",
        arch: Arch::Dinov2,
        hidden: 768,
        heads: 12,
        layers: 12,
        mlp: 3072,
        registers: 0,
    },
    Size {
        name: "vitl14",
        mirrors: "facebook/dinov2-large",
        arch: Arch::Dinov2,
        hidden: 1024,
        heads: 16,
        layers: 24,
        mlp: 4096,
        registers: 0,
    },
    Size {
        name: "dinov3-vits16",
        mirrors: "facebook/dinov3-vits16-pretrain-lvd1689m",
        arch: Arch::Dinov3,
        hidden: 384,
        heads: 6,
        layers: 12,
        mlp: 1536,
        registers: 4,
    },
    Size {
        name: "dinov3-vitl16",
        mirrors: "facebook/dinov3-vitl16-pretrain-lvd1689m",
        arch: Arch::Dinov3,
        hidden: 1024,
        heads: 16,
        layers: 24,
        mlp: 4096,
        registers: 4,
    },
    Size {
        name: "siglip2-base-p16-224",
        mirrors: "google/siglip2-base-patch16-224",
        arch: Arch::Siglip {
            patch: 16,
            image: 224,
        },
        hidden: 768,
        heads: 12,
        layers: 12,
        mlp: 3072,
        registers: 0,
    },
    Size {
        name: "siglip2-large-p16-256",
        mirrors: "google/siglip2-large-patch16-256",
        arch: Arch::Siglip {
            patch: 16,
            image: 256,
        },
        hidden: 1024,
        heads: 16,
        layers: 24,
        mlp: 4096,
        registers: 0,
    },
    Size {
        name: "siglip2-so400m-p14-384",
        mirrors: "google/siglip2-so400m-patch14-384",
        arch: Arch::Siglip {
            patch: 14,
            image: 384,
        },
        hidden: 1152,
        heads: 16,
        layers: 27,
        mlp: 4304,
        registers: 0,
    },
    Size {
        name: "siglip2-base-p16-naflex",
        mirrors: "google/siglip2-base-patch16-naflex",
        arch: Arch::Siglip2Naflex {
            patch: 16,
            num_patches: 256,
        },
        hidden: 768,
        heads: 12,
        layers: 12,
        mlp: 3072,
        registers: 0,
    },
    Size {
        name: "siglip2-so400m-p16-naflex",
        mirrors: "google/siglip2-so400m-patch16-naflex",
        arch: Arch::Siglip2Naflex {
            patch: 16,
            num_patches: 256,
        },
        hidden: 1152,
        heads: 16,
        layers: 27,
        mlp: 4304,
        registers: 0,
    },
];

/// Writes a random snapshot of the named size into `dir` (created).
pub fn write_random_snapshot(name: &str, dir: &Path) -> Result<()> {
    let Some(size) = SIZES.iter().find(|s| s.name == name) else {
        bail!("unknown backbone size {name:?}");
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (config, processor, shapes) = match size.arch {
        Arch::Dinov2 => dinov2(size),
        Arch::Dinov3 => dinov3(size),
        Arch::Siglip { patch, image } => siglip(size, patch, image, None),
        Arch::Siglip2Naflex { patch, num_patches } => siglip(size, patch, 0, Some(num_patches)),
    };
    std::fs::write(dir.join("config.json"), config)?;
    std::fs::write(dir.join("preprocessor_config.json"), processor)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(72);
    let bufs: Vec<(String, Vec<u8>, Vec<usize>)> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            // Norm weights and layer scales near 1 (a stable forward), everything else small.
            let centre = if (name.contains("norm") && name.ends_with("weight"))
                || name.contains("layer_scale")
            {
                1.0
            } else {
                0.0
            };
            let bytes = (0..n)
                .flat_map(|_| (centre + rng.random_range(-0.02f32..0.02)).to_le_bytes())
                .collect();
            (name, bytes, shape)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bufs
        .iter()
        .map(|(n, b, s)| {
            Ok::<_, anyhow::Error>((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors"))
        .context("writing the random model.safetensors")?;
    Ok(())
}

type Shapes = Vec<(String, Vec<usize>)>;

fn dinov2(s: &Size) -> (String, String, Shapes) {
    let (d, grid) = (s.hidden, 37usize);
    let arch = if s.registers > 0 {
        ("Dinov2WithRegistersModel", "dinov2_with_registers")
    } else {
        ("Dinov2Model", "dinov2")
    };
    let config = format!(
        r#"{{"architectures": ["{}"], "model_type": "{}", "hidden_size": {d}, "num_attention_heads": {},
 "num_hidden_layers": {}, "mlp_ratio": {}, "hidden_act": "gelu", "image_size": 518, "patch_size": 14,
 "num_channels": 3, "num_register_tokens": {}, "layer_norm_eps": 1e-06, "layerscale_value": 1.0,
 "qkv_bias": true, "use_swiglu_ffn": false}}"#,
        arch.0,
        arch.1,
        s.heads,
        s.layers,
        s.mlp / d,
        s.registers
    );
    let processor = r#"{"crop_size": {"height": 224, "width": 224}, "do_center_crop": true, "do_convert_rgb": true,
 "do_normalize": true, "do_rescale": true, "do_resize": true, "image_mean": [0.485, 0.456, 0.406],
 "image_processor_type": "BitImageProcessor", "image_std": [0.229, 0.224, 0.225], "resample": 3,
 "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 256}}"#;
    let mut shapes: Shapes = vec![
        ("embeddings.cls_token".into(), vec![1, 1, d]),
        ("embeddings.mask_token".into(), vec![1, d]),
        (
            "embeddings.position_embeddings".into(),
            vec![1, 1 + grid * grid, d],
        ),
        (
            "embeddings.patch_embeddings.projection.weight".into(),
            vec![d, 3, 14, 14],
        ),
        (
            "embeddings.patch_embeddings.projection.bias".into(),
            vec![d],
        ),
        ("layernorm.weight".into(), vec![d]),
        ("layernorm.bias".into(), vec![d]),
    ];
    if s.registers > 0 {
        shapes.push(("embeddings.register_tokens".into(), vec![1, s.registers, d]));
    }
    for i in 0..s.layers {
        let p = format!("encoder.layer.{i}.");
        for lin in ["query", "key", "value"] {
            shapes.push((format!("{p}attention.attention.{lin}.weight"), vec![d, d]));
            shapes.push((format!("{p}attention.attention.{lin}.bias"), vec![d]));
        }
        shapes.push((format!("{p}attention.output.dense.weight"), vec![d, d]));
        shapes.push((format!("{p}attention.output.dense.bias"), vec![d]));
        shapes.push((format!("{p}mlp.fc1.weight"), vec![s.mlp, d]));
        shapes.push((format!("{p}mlp.fc1.bias"), vec![s.mlp]));
        shapes.push((format!("{p}mlp.fc2.weight"), vec![d, s.mlp]));
        shapes.push((format!("{p}mlp.fc2.bias"), vec![d]));
        for n in ["norm1", "norm2"] {
            shapes.push((format!("{p}{n}.weight"), vec![d]));
            shapes.push((format!("{p}{n}.bias"), vec![d]));
        }
        shapes.push((format!("{p}layer_scale1.lambda1"), vec![d]));
        shapes.push((format!("{p}layer_scale2.lambda1"), vec![d]));
    }
    (config, processor.to_string(), shapes)
}

fn dinov3(s: &Size) -> (String, String, Shapes) {
    let d = s.hidden;
    let config = format!(
        r#"{{"architectures": ["DINOv3ViTModel"], "model_type": "dinov3_vit", "hidden_size": {d},
 "num_attention_heads": {}, "num_hidden_layers": {}, "intermediate_size": {}, "hidden_act": "gelu",
 "image_size": 224, "patch_size": 16, "num_channels": 3, "num_register_tokens": {},
 "layer_norm_eps": 1e-05, "layerscale_value": 1.0, "mlp_bias": true, "proj_bias": true,
 "query_bias": true, "key_bias": false, "value_bias": true, "rope_theta": 100.0,
 "pos_embed_rescale": 2.0, "pos_embed_jitter": null, "pos_embed_shift": null, "use_gated_mlp": false}}"#,
        s.heads, s.layers, s.mlp, s.registers
    );
    let processor = r#"{"do_normalize": true, "do_rescale": true, "do_resize": true,
 "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "DINOv3ViTImageProcessorFast",
 "image_std": [0.229, 0.224, 0.225], "resample": 2, "rescale_factor": 0.00392156862745098,
 "size": {"height": 224, "width": 224}}"#;
    let mut shapes: Shapes = vec![
        ("embeddings.cls_token".into(), vec![1, 1, d]),
        ("embeddings.mask_token".into(), vec![1, 1, d]),
        ("embeddings.register_tokens".into(), vec![1, s.registers, d]),
        (
            "embeddings.patch_embeddings.weight".into(),
            vec![d, 3, 16, 16],
        ),
        ("embeddings.patch_embeddings.bias".into(), vec![d]),
        ("norm.weight".into(), vec![d]),
        ("norm.bias".into(), vec![d]),
    ];
    for i in 0..s.layers {
        let p = format!("model.layer.{i}.");
        for lin in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            shapes.push((format!("{p}attention.{lin}.weight"), vec![d, d]));
            if lin != "k_proj" {
                shapes.push((format!("{p}attention.{lin}.bias"), vec![d]));
            }
        }
        shapes.push((format!("{p}mlp.up_proj.weight"), vec![s.mlp, d]));
        shapes.push((format!("{p}mlp.up_proj.bias"), vec![s.mlp]));
        shapes.push((format!("{p}mlp.down_proj.weight"), vec![d, s.mlp]));
        shapes.push((format!("{p}mlp.down_proj.bias"), vec![d]));
        for n in ["norm1", "norm2"] {
            shapes.push((format!("{p}{n}.weight"), vec![d]));
            shapes.push((format!("{p}{n}.bias"), vec![d]));
        }
        shapes.push((format!("{p}layer_scale1.lambda1"), vec![d]));
        shapes.push((format!("{p}layer_scale2.lambda1"), vec![d]));
    }
    (config, processor.to_string(), shapes)
}

/// A `SiglipModel` checkpoint's vision half (the text tower is never read, so it is left out);
/// with `naflex = Some(num_patches)` a `Siglip2Model` one (linear patch embedding).
fn siglip(s: &Size, p: usize, image: usize, naflex: Option<usize>) -> (String, String, Shapes) {
    let d = s.hidden;
    if let Some(np) = naflex {
        let config = format!(
            r#"{{"architectures": ["Siglip2Model"], "model_type": "siglip2", "vision_config": {{
 "model_type": "siglip2_vision_model", "hidden_size": {d}, "num_attention_heads": {},
 "num_hidden_layers": {}, "intermediate_size": {}, "hidden_act": "gelu_pytorch_tanh",
 "num_patches": {np}, "patch_size": {p}, "num_channels": 3, "layer_norm_eps": 1e-06}}}}"#,
            s.heads, s.layers, s.mlp
        );
        let processor = format!(
            r#"{{"do_normalize": true, "do_rescale": true, "do_resize": true,
 "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "Siglip2ImageProcessor",
 "image_std": [0.5, 0.5, 0.5], "resample": 2, "rescale_factor": 0.00392156862745098,
 "max_num_patches": {np}, "patch_size": {p}}}"#
        );
        let grid = (np as f64).sqrt() as usize;
        let (_, _, mut shapes) = siglip(s, p, grid * p, None);
        shapes[0].1 = vec![d, 3 * p * p];
        return (config, processor, shapes);
    }
    let config = format!(
        r#"{{"architectures": ["SiglipModel"], "model_type": "siglip", "vision_config": {{
 "model_type": "siglip_vision_model", "hidden_size": {d}, "num_attention_heads": {},
 "num_hidden_layers": {}, "intermediate_size": {}, "hidden_act": "gelu_pytorch_tanh",
 "image_size": {image}, "patch_size": {p}, "num_channels": 3, "layer_norm_eps": 1e-06}}}}"#,
        s.heads, s.layers, s.mlp
    );
    let processor = format!(
        r#"{{"do_normalize": true, "do_rescale": true, "do_resize": true,
 "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "SiglipImageProcessor",
 "image_std": [0.5, 0.5, 0.5], "resample": 2, "rescale_factor": 0.00392156862745098,
 "size": {{"height": {image}, "width": {image}}}}}"#
    );
    let v = "vision_model.";
    let grid = image / p;
    let mut shapes: Shapes = vec![
        (
            format!("{v}embeddings.patch_embedding.weight"),
            vec![d, 3, p, p],
        ),
        (format!("{v}embeddings.patch_embedding.bias"), vec![d]),
        (
            format!("{v}embeddings.position_embedding.weight"),
            vec![grid * grid, d],
        ),
        (format!("{v}post_layernorm.weight"), vec![d]),
        (format!("{v}post_layernorm.bias"), vec![d]),
        (format!("{v}head.probe"), vec![1, 1, d]),
        (format!("{v}head.attention.in_proj_weight"), vec![3 * d, d]),
        (format!("{v}head.attention.in_proj_bias"), vec![3 * d]),
        (format!("{v}head.attention.out_proj.weight"), vec![d, d]),
        (format!("{v}head.attention.out_proj.bias"), vec![d]),
        (format!("{v}head.layernorm.weight"), vec![d]),
        (format!("{v}head.layernorm.bias"), vec![d]),
    ];
    let mlp = |pre: &str, shapes: &mut Shapes| {
        shapes.push((format!("{pre}mlp.fc1.weight"), vec![s.mlp, d]));
        shapes.push((format!("{pre}mlp.fc1.bias"), vec![s.mlp]));
        shapes.push((format!("{pre}mlp.fc2.weight"), vec![d, s.mlp]));
        shapes.push((format!("{pre}mlp.fc2.bias"), vec![d]));
    };
    mlp(&format!("{v}head."), &mut shapes);
    for i in 0..s.layers {
        let pre = format!("{v}encoder.layers.{i}.");
        for lin in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            shapes.push((format!("{pre}self_attn.{lin}.weight"), vec![d, d]));
            shapes.push((format!("{pre}self_attn.{lin}.bias"), vec![d]));
        }
        mlp(&pre, &mut shapes);
        for n in ["layer_norm1", "layer_norm2"] {
            shapes.push((format!("{pre}{n}.weight"), vec![d]));
            shapes.push((format!("{pre}{n}.bias"), vec![d]));
        }
    }
    (config, processor, shapes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::{Backbone, FeatureExtractor};

    /// Every named size writes a snapshot sv72 loads with the advertised width (checked on
    /// the smallest of each family to keep the test fast; the others differ only in numbers).
    #[test]
    fn named_snapshots_load() {
        for (name, width, prefix) in [
            ("vits14-reg", 384, 5),
            ("dinov3-vits16", 384, 5),
            ("siglip2-base-p16-224", 768, 0),
            ("siglip2-base-p16-naflex", 768, 0),
        ] {
            let dir =
                std::env::temp_dir().join(format!("sv72-snap-test-{name}-{}", std::process::id()));
            write_random_snapshot(name, &dir).unwrap();
            let m = Backbone::<Cpu>::load(&dir, &Default::default()).unwrap();
            assert_eq!(m.hidden_size(), width, "{name}");
            assert_eq!(m.num_layers(), 12, "{name}");
            assert_eq!(m.num_prefix_tokens(), prefix, "{name}");
            crate::model::preprocess::Preprocess::from_snapshot(&dir).unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
        }
        assert!(write_random_snapshot("vitx", Path::new("/nonexistent")).is_err());
    }
}
