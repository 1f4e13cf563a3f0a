//! A BERT encoder's forward pass in plain Rust, for vecgate's built-in embedder: weights read from a
//! safetensors file, the tokens of a batch laid end to end (no padding: attention stays within
//! each text), matrix products as blocked dot products over the weights' rows (nothing is packed
//! per call, so a single short text costs what its arithmetic costs), rows split over rayon's
//! threads, and GELU and softmax on a vectorisable `exp`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use rayon::prelude::*;
use serde::Deserialize;

/// The parts of `config.json` the forward pass needs.
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    hidden_size: usize,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f32,
    #[serde(default = "default_act")]
    hidden_act: String,
}

fn default_eps() -> f32 {
    1e-12
}

fn default_act() -> String {
    "gelu".into()
}

/// A dense layer: `y = x W^T + b`, `W` kept transposed (`inp` rows of `out`).
struct Dense {
    wt: Vec<f32>,
    b: Vec<f32>,
    out: usize,
    inp: usize,
}

/// A layer norm's gain and bias.
struct Norm {
    g: Vec<f32>,
    b: Vec<f32>,
}

struct Layer {
    query: Dense,
    key: Dense,
    value: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    intermediate: Dense,
    output: Dense,
    output_norm: Norm,
}

/// A loaded BERT encoder.
pub struct Bert {
    config: Config,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embeddings_norm: Norm,
    layers: Vec<Layer>,
}

/// One text's tokens: WordPiece ids and token type ids.
pub struct Tokens<'a> {
    /// Token ids.
    pub ids: &'a [u32],
    /// Token type (segment) ids.
    pub types: &'a [u32],
}

impl Bert {
    /// Loads `config.json` and `model.safetensors` from `dir`.
    pub fn load(dir: &Path) -> Result<Bert, String> {
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| format!("{}/config.json: {e}", dir.display()))?;
        if config.hidden_act != "gelu" {
            return Err(format!(
                "{}/config.json: hidden_act {:?} (only gelu is supported)",
                dir.display(),
                config.hidden_act
            ));
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(format!(
                "{}/config.json: hidden_size {} is not a multiple of num_attention_heads {}",
                dir.display(),
                config.hidden_size,
                config.num_attention_heads
            ));
        }
        let file = dir.join("model.safetensors");
        let tensors = Safetensors::parse(read("model.safetensors")?)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>, String> {
            tensors
                .get(name, shape)
                .map_err(|e| format!("{}: {name}: {e}", file.display()))
        };
        let dense = |name: &str, out: usize, inp: usize| -> Result<Dense, String> {
            Ok(Dense::new(
                get(&format!("{name}.weight"), &[out, inp])?,
                get(&format!("{name}.bias"), &[out])?,
                out,
                inp,
            ))
        };
        let norm = |name: &str| -> Result<Norm, String> {
            Ok(Norm {
                g: get(&format!("{name}.weight"), &[h])?,
                b: get(&format!("{name}.bias"), &[h])?,
            })
        };
        let layers = (0..config.num_hidden_layers)
            .map(|l| {
                let p = format!("encoder.layer.{l}");
                Ok(Layer {
                    query: dense(&format!("{p}.attention.self.query"), h, h)?,
                    key: dense(&format!("{p}.attention.self.key"), h, h)?,
                    value: dense(&format!("{p}.attention.self.value"), h, h)?,
                    attention_out: dense(&format!("{p}.attention.output.dense"), h, h)?,
                    attention_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                    intermediate: dense(&format!("{p}.intermediate.dense"), i, h)?,
                    output: dense(&format!("{p}.output.dense"), h, i)?,
                    output_norm: norm(&format!("{p}.output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Bert {
            word: get("embeddings.word_embeddings.weight", &[0, h])?,
            position: get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type: get(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?,
            embeddings_norm: norm("embeddings.LayerNorm")?,
            layers,
            config,
        })
    }

    /// The mean of each text's last hidden states (every token counts: there is no padding).
    pub fn mean_pooled(&self, texts: &[Tokens]) -> Result<Vec<Vec<f32>>, String> {
        let h = self.config.hidden_size;
        let vocab = self.word.len() / h;
        let mut spans = Vec::with_capacity(texts.len());
        let mut x = Vec::new();
        for t in texts {
            if t.ids.len() > self.config.max_position_embeddings || t.ids.len() != t.types.len() {
                return Err(format!(
                    "a text of {} tokens (at most {})",
                    t.ids.len(),
                    self.config.max_position_embeddings
                ));
            }
            let start = x.len() / h;
            for (p, (&id, &ty)) in t.ids.iter().zip(t.types).enumerate() {
                let (id, ty) = (id as usize, ty as usize);
                if id >= vocab || ty >= self.config.type_vocab_size {
                    return Err(format!("token {id} (type {ty}) is outside the vocabulary"));
                }
                let (w, pos, typ) = (
                    &self.word[id * h..(id + 1) * h],
                    &self.position[p * h..(p + 1) * h],
                    &self.token_type[ty * h..(ty + 1) * h],
                );
                x.extend((0..h).map(|j| w[j] + pos[j] + typ[j]));
            }
            spans.push(start..start + t.ids.len());
        }
        let eps = self.config.layer_norm_eps;
        layer_norm(&mut x, &self.embeddings_norm, eps);
        for layer in &self.layers {
            let context = self.attention(layer, &x, &spans);
            let mut attended = layer.attention_out.forward(&context);
            add(&mut attended, &x);
            layer_norm(&mut attended, &layer.attention_norm, eps);
            let mut inner = layer.intermediate.forward(&attended);
            inner.par_chunks_mut(4096).for_each(gelu);
            let mut out = layer.output.forward(&inner);
            add(&mut out, &attended);
            layer_norm(&mut out, &layer.output_norm, eps);
            x = out;
        }
        Ok(spans
            .iter()
            .map(|span| {
                let mut mean = vec![0.0f32; h];
                for row in span.clone() {
                    for (m, v) in mean.iter_mut().zip(&x[row * h..(row + 1) * h]) {
                        *m += v;
                    }
                }
                let n = span.len().max(1) as f32;
                mean.iter_mut().for_each(|m| *m /= n);
                mean
            })
            .collect())
    }

    /// Multi-head self-attention of each text over its own tokens: the context vectors, laid
    /// out as `x` is.
    fn attention(&self, layer: &Layer, x: &[f32], spans: &[std::ops::Range<usize>]) -> Vec<f32> {
        let h = self.config.hidden_size;
        let heads = self.config.num_attention_heads;
        let d = h / heads;
        let (q, k, v) = (
            layer.query.forward(x),
            layer.key.forward(x),
            layer.value.forward(x),
        );
        let scale = 1.0 / (d as f32).sqrt();
        let blocks: Vec<(usize, usize)> = (0..spans.len())
            .flat_map(|s| (0..heads).map(move |hd| (s, hd)))
            .collect();
        let done: Vec<Vec<f32>> = blocks
            .par_iter()
            .map(|&(s, hd)| {
                let span = &spans[s];
                let len = span.len();
                let col = hd * d;
                // This head's queries (scaled), keys transposed and values, each contiguous.
                let mut qh = Vec::with_capacity(len * d);
                let mut kt = vec![0.0f32; d * len];
                let mut vh = Vec::with_capacity(len * d);
                for i in 0..len {
                    let row = (span.start + i) * h + col;
                    qh.extend(q[row..row + d].iter().map(|v| v * scale));
                    vh.extend_from_slice(&v[row..row + d]);
                    for (j, kv) in k[row..row + d].iter().enumerate() {
                        kt[j * len + i] = *kv;
                    }
                }
                let mut scores = vec![0.0f32; len * len];
                product(&qh, &kt, &vec![0.0; len], d, len, &mut scores);
                scores.chunks_mut(len).for_each(softmax);
                let mut out = vec![0.0f32; len * d];
                product(&scores, &vh, &vec![0.0; d], len, d, &mut out);
                out
            })
            .collect();
        let mut context = vec![0.0f32; x.len()];
        for (&(s, hd), out) in blocks.iter().zip(&done) {
            let span = &spans[s];
            for i in 0..span.len() {
                context[(span.start + i) * h + hd * d..][..d]
                    .copy_from_slice(&out[i * d..(i + 1) * d]);
            }
        }
        context
    }
}

impl Dense {
    /// A layer from `w` as stored (`out` rows of `inp`), kept transposed (`inp` rows of `out`)
    /// so that the product reads whole rows of outputs at a time.
    fn new(w: Vec<f32>, b: Vec<f32>, out: usize, inp: usize) -> Dense {
        let mut wt = vec![0.0f32; w.len()];
        for n in 0..out {
            for k in 0..inp {
                wt[k * out + n] = w[n * inp + k];
            }
        }
        Dense { wt, b, out, inp }
    }

    /// `x W^T + b` for every row of `x` (rows of `inp`), rows split over the thread pool.
    fn forward(&self, x: &[f32]) -> Vec<f32> {
        let rows = x.len() / self.inp;
        let mut y = vec![0.0f32; rows * self.out];
        let threads = rayon::current_num_threads().max(1);
        let per = rows.div_ceil(threads).max(1);
        y.par_chunks_mut(per * self.out)
            .zip(x.par_chunks(per * self.inp))
            .for_each(|(y, x)| product(x, &self.wt, &self.b, self.inp, self.out, y));
        y
    }
}

/// Which kernel this CPU runs.
#[derive(Clone, Copy)]
enum Simd {
    Avx512,
    Avx2,
    Plain,
}

fn simd() -> Simd {
    static SIMD: OnceLock<Simd> = OnceLock::new();
    *SIMD.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Simd::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Simd::Avx2;
            }
        }
        Simd::Plain
    })
}

/// Rows of `x` a tile computes at once.
const TILE_ROWS: usize = 6;

/// `y = x Wt + b` (`wt`: `inp` rows of `out`) with the widest kernel the CPU has: tiles of
/// `TILE_ROWS` rows by 32 (AVX-512) or 16 (AVX2) outputs kept in registers, each step one row of
/// `wt` times one broadcast input per row; the columns past the last full tile, plainly.
fn product(x: &[f32], wt: &[f32], b: &[f32], inp: usize, out: usize, y: &mut [f32]) {
    let rows = x.len() / inp;
    let done = match simd() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512F (checked at run time); every tile reads and writes
        // within `x`, `wt`, `b` and `y` (its rows and columns are in range).
        Simd::Avx512 => unsafe { x86::tiles512(x, wt, b, inp, out, rows, y) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, with AVX2 and FMA.
        Simd::Avx2 => unsafe { x86::tiles256(x, wt, b, inp, out, rows, y) },
        _ => 0,
    };
    for r in 0..rows {
        for n in done..out {
            let mut sum = b[n];
            for k in 0..inp {
                sum += x[r * inp + k] * wt[k * out + n];
            }
            y[r * out + n] = sum;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::TILE_ROWS;

    /// Generates a tile kernel of `R` rows by `$regs` registers of `$lanes` outputs, and the
    /// loop over a matrix's full tiles; returns the outputs covered (a multiple of the width).
    macro_rules! tiles {
        ($tiles:ident, $tile:ident, $feature:literal, $v:ty, $lanes:expr, $regs:expr,
         $zero:ident, $load:ident, $store:ident, $set1:ident, $fmadd:ident, $add:ident) => {
            #[target_feature(enable = $feature)]
            unsafe fn $tile<const R: usize>(
                x: *const f32,
                inp: usize,
                wt: *const f32,
                out: usize,
                n0: usize,
                b: *const f32,
                y: *mut f32,
            ) {
                let mut acc = [[$zero(); $regs]; R];
                for k in 0..inp {
                    let mut w = [$zero(); $regs];
                    for (j, w) in w.iter_mut().enumerate() {
                        *w = $load(wt.add(k * out + n0 + j * $lanes));
                    }
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let xv = $set1(*x.add(r * inp + k));
                        for j in 0..$regs {
                            acc[j] = $fmadd(xv, w[j], acc[j]);
                        }
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    for j in 0..$regs {
                        let bias = $load(b.add(n0 + j * $lanes));
                        $store(y.add(r * out + n0 + j * $lanes), $add(acc[j], bias));
                    }
                }
            }

            #[target_feature(enable = $feature)]
            pub(super) unsafe fn $tiles(
                x: &[f32],
                wt: &[f32],
                b: &[f32],
                inp: usize,
                out: usize,
                rows: usize,
                y: &mut [f32],
            ) -> usize {
                const WIDTH: usize = $lanes * $regs;
                let full = out / WIDTH * WIDTH;
                let (xp, wp, bp, yp) = (x.as_ptr(), wt.as_ptr(), b.as_ptr(), y.as_mut_ptr());
                for n0 in (0..full).step_by(WIDTH) {
                    let mut r0 = 0;
                    while r0 < rows {
                        let (xr, yr) = (xp.add(r0 * inp), yp.add(r0 * out));
                        match rows - r0 {
                            1 => $tile::<1>(xr, inp, wp, out, n0, bp, yr),
                            2 => $tile::<2>(xr, inp, wp, out, n0, bp, yr),
                            3 => $tile::<3>(xr, inp, wp, out, n0, bp, yr),
                            4 => $tile::<4>(xr, inp, wp, out, n0, bp, yr),
                            5 => $tile::<5>(xr, inp, wp, out, n0, bp, yr),
                            _ => $tile::<TILE_ROWS>(xr, inp, wp, out, n0, bp, yr),
                        }
                        r0 += TILE_ROWS;
                    }
                }
                full
            }
        };
    }

    tiles!(
        tiles512,
        tile512,
        "avx512f",
        __m512,
        16,
        2,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_add_ps
    );
    tiles!(
        tiles256,
        tile256,
        "avx2,fma",
        __m256,
        8,
        2,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps
    );
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

/// Normalises each row of `x` (rows as long as the norm's gain) to mean 0 and variance 1, then
/// scales and shifts it.
fn layer_norm(x: &mut [f32], norm: &Norm, eps: f32) {
    let h = norm.g.len();
    for row in x.chunks_mut(h) {
        let mean = row.iter().sum::<f32>() / h as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(&norm.g).zip(&norm.b) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// `e^x`, to a relative error below 1e-6, in a form the compiler vectorises: `2^n` from the
/// exponent bits times a polynomial for `e^r`, `r = x - n ln 2` (ln 2 in two parts, so `r` keeps
/// its precision for large `|x|`).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by the float trick (exact for |t| < 2^22).
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    f32::from_bits(((n as i32 + 127) as u32) << 23) * p
}

/// BERT's exact GELU, `x (1 + erf(x / sqrt 2)) / 2`, with erf by Abramowitz and Stegun 7.1.26
/// (absolute error below 1.5e-7).
fn gelu(xs: &mut [f32]) {
    for v in xs {
        let x = *v;
        let z = (x * std::f32::consts::FRAC_1_SQRT_2).abs();
        let t = 1.0 / (1.0 + 0.327_591_1 * z);
        let poly = t
            * (0.254_829_6
                + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
        let erf = (1.0 - poly * exp(-z * z)).copysign(x);
        *v = 0.5 * x * (1.0 + erf);
    }
}

fn softmax(xs: &mut [f32]) {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in xs.iter_mut() {
        *v = exp(*v - max);
        sum += *v;
    }
    xs.iter_mut().for_each(|v| *v /= sum);
}

/// The tensors of a safetensors file: a little-endian u64 header length, a JSON header naming
/// each tensor's dtype, shape and byte range, then the bytes.
struct Safetensors {
    bytes: Vec<u8>,
    start: usize,
    header: HashMap<String, serde_json::Value>,
}

impl Safetensors {
    fn parse(bytes: Vec<u8>) -> Result<Safetensors, String> {
        let len = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("eight bytes")) as usize)
            .ok_or("shorter than its header")?;
        let header = bytes.get(8..8 + len).ok_or("header cut short")?;
        let header: HashMap<String, serde_json::Value> =
            serde_json::from_slice(header).map_err(|e| format!("header: {e}"))?;
        Ok(Safetensors {
            start: 8 + len,
            bytes,
            header,
        })
    }

    /// Tensor `name` as f32s; `shape` must match (a 0 accepts any size on that axis).
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        let t = self.header.get(name).ok_or("missing")?;
        if t["dtype"] != "F32" {
            return Err(format!("dtype {} (F32 expected)", t["dtype"]));
        }
        let dims: Vec<usize> = t["shape"]
            .as_array()
            .ok_or("no shape")?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or("a bad shape")?;
        let fits =
            dims.len() == shape.len() && dims.iter().zip(shape).all(|(d, s)| *s == 0 || d == s);
        if !fits {
            return Err(format!("shape {dims:?} ({shape:?} expected)"));
        }
        let range = t["data_offsets"].as_array().ok_or("no data_offsets")?;
        let (a, b) = match (
            range.first().and_then(|v| v.as_u64()),
            range.get(1).and_then(|v| v.as_u64()),
        ) {
            (Some(a), Some(b)) => (a as usize, b as usize),
            _ => return Err("bad data_offsets".into()),
        };
        let data = self
            .bytes
            .get(self.start + a..self.start + b)
            .ok_or("data past the end of the file")?;
        if data.len() != dims.iter().product::<usize>() * 4 {
            return Err("data does not match its shape".into());
        }
        Ok(data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_gelu_match_the_standard_functions() {
        for i in -2000..=800 {
            let x = i as f32 * 0.05;
            let (got, want) = (exp(x), x.exp());
            assert!(
                (got - want).abs() <= want * 1e-6 + 1e-37,
                "exp({x}) = {got}, want {want}"
            );
        }
        let xs: Vec<f32> = (-800..=800).map(|i| i as f32 * 0.01).collect();
        let mut got = xs.clone();
        gelu(&mut got);
        for (x, g) in xs.iter().zip(&got) {
            if x.abs() <= 4.0 {
                let want =
                    0.5 * (*x as f64) * (1.0 + series_erf(*x as f64 / std::f64::consts::SQRT_2));
                assert!(
                    (*g as f64 - want).abs() < 1e-6,
                    "gelu({x}) = {g}, want {want}"
                );
            } else {
                // Past 4, GELU is x or 0 to within 1e-4 of x.
                let limit = if *x > 0.0 { *x } else { 0.0 };
                assert!((g - limit).abs() < 1e-4 * x.abs(), "gelu({x}) = {g}");
            }
        }
    }

    /// erf by its Maclaurin series (Abramowitz and Stegun 7.1.5) in f64, accurate for
    /// |x| <= 3: the reference for the test.
    fn series_erf(x: f64) -> f64 {
        let mut sum = x;
        let mut term = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn a_dense_layer_equals_the_naive_product() {
        // 70 outputs: two full tiles of 32 and a plain rest; 13 rows: two tiles of 6 and one.
        let (inp, out, rows) = (37, 70, 13);
        let x: Vec<f32> = (0..rows * inp)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let w: Vec<f32> = (0..out * inp)
            .map(|i| ((i * 11 % 17) as f32 - 8.0) / 9.0)
            .collect();
        let b: Vec<f32> = (0..out).map(|i| i as f32 / 10.0).collect();
        let y = Dense::new(w.clone(), b.clone(), out, inp).forward(&x);
        for r in 0..rows {
            for n in 0..out {
                let want: f32 = (0..inp)
                    .map(|k| x[r * inp + k] * w[n * inp + k])
                    .sum::<f32>()
                    + b[n];
                assert!((y[r * out + n] - want).abs() < 1e-4, "{r},{n}");
            }
        }
    }
}
