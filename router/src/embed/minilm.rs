//! The built-in embedder: all-MiniLM-L6-v2 (384-d) run in process with candle, from a directory
//! in the Hugging Face layout (`config.json`, `tokenizer.json`, `model.safetensors`; fetched by
//! `scripts/fetch-model.sh`). As sentence-transformers runs it: WordPiece tokens truncated to
//! 256, BERT's last hidden states mean-pooled over the attention mask, then L2-normalised.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

/// The model's name, as a `Document` gives it.
pub const MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// The files a model directory must hold.
pub const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// sentence-transformers' `max_seq_length` for this model.
const MAX_TOKENS: usize = 256;

/// A loaded model and its tokenizer.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
}

impl MiniLm {
    /// Loads the model in `dir`.
    pub fn load(dir: &Path) -> Result<MiniLm, String> {
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| format!("{}/config.json: {e}", dir.display()))?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| format!("{}/tokenizer.json: {e}", dir.display()))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| format!("tokenizer: {e}"))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        let weights = dir.join("model.safetensors");
        // SAFETY: the file is mapped read-only and not changed while vecgate runs (it is the
        // model directory's, written once by scripts/fetch-model.sh).
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu) }
                .map_err(|e| format!("{}: {e}", weights.display()))?;
        let model = BertModel::load(vb, &config).map_err(|e| format!("loading the model: {e}"))?;
        Ok(MiniLm { model, tokenizer })
    }

    /// The unit vectors of `texts`, in order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| format!("tokenizing: {e}"))?;
        let rows = encodings.len();
        let cols = encodings.first().map_or(0, |e| e.get_ids().len());
        let flat = |f: fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings
                .iter()
                .flat_map(|e| f(e).iter().copied())
                .collect()
        };
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let ids = Tensor::from_vec(
                flat(tokenizers::Encoding::get_ids),
                (rows, cols),
                &Device::Cpu,
            )?;
            let types = Tensor::from_vec(
                flat(tokenizers::Encoding::get_type_ids),
                (rows, cols),
                &Device::Cpu,
            )?;
            let mask = Tensor::from_vec(
                flat(tokenizers::Encoding::get_attention_mask),
                (rows, cols),
                &Device::Cpu,
            )?;
            let hidden = self.model.forward(&ids, &types, Some(&mask))?;
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?.clamp(1e-9, f32::MAX)?;
            let mean = summed.broadcast_div(&counts)?;
            let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
            mean.broadcast_div(&norms)?.to_vec2::<f32>()
        };
        run().map_err(|e| format!("running the model: {e}"))
    }
}
