//! The built-in embedder: all-MiniLM-L6-v2 (384-d) run in process (the `bert` crate), from a directory
//! in the Hugging Face layout (`config.json`, `tokenizer.json`, `model.safetensors`; fetched by
//! `scripts/fetch-model.sh`). As sentence-transformers runs it: WordPiece tokens truncated to
//! 256, BERT's last hidden states mean-pooled over the attention mask, then L2-normalised.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationParams};

use bert::Bert;

/// The model's name, as a `Document` gives it.
pub const MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// The files a model directory must hold.
pub const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// sentence-transformers' `max_seq_length` for this model.
const MAX_TOKENS: usize = 256;

/// A loaded model and its tokenizer.
pub struct MiniLm {
    model: Bert,
    tokenizer: Tokenizer,
}

impl MiniLm {
    /// Loads the model in `dir`.
    pub fn load(dir: &Path) -> Result<MiniLm, String> {
        let path = dir.join("tokenizer.json");
        let mut tokenizer =
            Tokenizer::from_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| format!("tokenizer: {e}"))?;
        // Texts are not padded: the model lays a batch's tokens end to end.
        tokenizer.with_padding(None);
        let model = Bert::load(dir)?;
        Ok(MiniLm { model, tokenizer })
    }

    /// The unit vectors of `texts`, in order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| format!("tokenizing: {e}"))?;
        let tokens: Vec<bert::Tokens> = encodings
            .iter()
            .map(|e| bert::Tokens {
                ids: e.get_ids(),
                types: e.get_type_ids(),
            })
            .collect();
        let mut vectors = self.model.mean_pooled(&tokens)?;
        for v in &mut vectors {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(vectors)
    }
}
