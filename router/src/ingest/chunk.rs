//! Chunking for `vecgate ingest`: a document's text cut into pieces of at most `max` tokens of
//! the embedder's own tokenizer, at sentence ends where it can, consecutive chunks sharing up to
//! `overlap` tokens of whole sentences.

use std::path::Path;

use tokenizers::Tokenizer;

/// How the length of a text is counted.
pub enum Tokens {
    /// By the embedder's tokenizer (`tokenizer.json`).
    Model(Box<Tokenizer>),
    /// Without one (a remote model): four characters a token, the usual rule of thumb.
    Approximate,
}

/// Characters a token, when no tokenizer is known.
const CHARS_PER_TOKEN: usize = 4;

impl Tokens {
    /// The tokenizer in `dir/tokenizer.json`, with its padding and truncation off.
    pub fn load(dir: &Path) -> Result<Tokens, String> {
        let path = dir.join("tokenizer.json");
        let mut t = Tokenizer::from_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        t.with_padding(None);
        t.with_truncation(None)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Tokens::Model(Box::new(t)))
    }

    /// The token offsets (byte ranges in each text) of `texts`, special tokens excluded.
    fn offsets(&self, texts: &[&str]) -> Result<Vec<Vec<(usize, usize)>>, String> {
        match self {
            Tokens::Model(t) => {
                let encodings = t
                    .encode_batch(texts.to_vec(), false)
                    .map_err(|e| format!("tokenizing: {e}"))?;
                Ok(encodings.iter().map(|e| e.get_offsets().to_vec()).collect())
            }
            Tokens::Approximate => Ok(texts
                .iter()
                .map(|text| {
                    let bounds: Vec<usize> = text
                        .char_indices()
                        .map(|(i, _)| i)
                        .step_by(CHARS_PER_TOKEN)
                        .chain(std::iter::once(text.len()))
                        .collect();
                    bounds.windows(2).map(|w| (w[0], w[1])).collect()
                })
                .collect()),
        }
    }
}

/// One chunk of a document.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    /// Its text.
    pub text: String,
    /// Its length in tokens (the sum of its sentences').
    pub tokens: usize,
}

/// A sentence (or a piece of a long one) and whether a paragraph starts with it.
struct Unit<'a> {
    text: &'a str,
    tokens: usize,
    starts_paragraph: bool,
}

/// `text` in chunks of at most `max` tokens, sentences kept whole unless one alone is longer
/// than `max`, each chunk after the first starting with the last sentences of the one before
/// it that fit in `overlap` tokens.
pub fn chunk(
    text: &str,
    tokens: &Tokens,
    max: usize,
    overlap: usize,
) -> Result<Vec<Chunk>, String> {
    let max = max.max(1);
    let sentences = sentences(text);
    let offsets = tokens.offsets(&sentences.iter().map(|s| s.0).collect::<Vec<_>>())?;
    let mut units = Vec::new();
    for ((sentence, starts_paragraph), offsets) in sentences.into_iter().zip(offsets) {
        if offsets.len() <= max {
            units.push(Unit {
                text: sentence,
                tokens: offsets.len(),
                starts_paragraph,
            });
            continue;
        }
        // A sentence longer than a chunk: cut at token boundaries.
        for (n, piece) in offsets.chunks(max).enumerate() {
            let start = if n == 0 { 0 } else { piece[0].0 };
            let end = offsets
                .get((n + 1) * max)
                .map_or(sentence.len(), |next| next.0);
            let piece_text = sentence[start..end].trim();
            if !piece_text.is_empty() {
                units.push(Unit {
                    text: piece_text,
                    tokens: piece.len(),
                    starts_paragraph: starts_paragraph && n == 0,
                });
            }
        }
    }
    let mut chunks = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut size = 0;
    for (i, unit) in units.iter().enumerate() {
        if size + unit.tokens > max && !current.is_empty() {
            chunks.push(join(&units, &current, size));
            let mut kept = 0;
            let mut from = current.len();
            while from > 1 && kept + units[current[from - 1]].tokens <= overlap {
                from -= 1;
                kept += units[current[from]].tokens;
            }
            current.drain(..from);
            size = kept;
            while size + unit.tokens > max && !current.is_empty() {
                size -= units[current.remove(0)].tokens;
            }
        }
        current.push(i);
        size += unit.tokens;
    }
    if !current.is_empty() {
        chunks.push(join(&units, &current, size));
    }
    Ok(chunks)
}

fn join(units: &[Unit], picked: &[usize], tokens: usize) -> Chunk {
    let mut text = String::new();
    for (n, &i) in picked.iter().enumerate() {
        if n > 0 {
            text.push_str(if units[i].starts_paragraph {
                "\n\n"
            } else {
                " "
            });
        }
        text.push_str(units[i].text);
    }
    Chunk { text, tokens }
}

/// The sentences of `text`, each with whether a paragraph (a run of lines between blank lines)
/// starts with it. A sentence ends at `.`, `!` or `?` (and any closing quote or bracket) before
/// white space.
fn sentences(text: &str) -> Vec<(&str, bool)> {
    let mut out = Vec::new();
    for paragraph in paragraphs(text) {
        let mut start = 0;
        let mut first = true;
        let mut chars = paragraph.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if !matches!(c, '.' | '!' | '?') {
                continue;
            }
            let mut end = i + c.len_utf8();
            while let Some(&(j, closer)) = chars.peek() {
                if matches!(closer, '"' | '\'' | ')' | ']' | '’' | '”') {
                    end = j + closer.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            if chars.peek().is_some_and(|&(_, next)| next.is_whitespace()) {
                let sentence = paragraph[start..end].trim();
                if !sentence.is_empty() {
                    out.push((sentence, first));
                    first = false;
                }
                start = end;
            }
        }
        let last = paragraph[start..].trim();
        if !last.is_empty() {
            out.push((last, first));
        }
    }
    out
}

/// The runs of non-blank lines of `text`.
fn paragraphs(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim().is_empty() {
            if let Some(s) = start.take() {
                out.push(&text[s..offset]);
            }
        } else if start.is_none() {
            start = Some(offset);
        }
        offset += line.len();
    }
    if let Some(s) = start {
        out.push(&text[s..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts of `text`'s chunks, counted in approximate tokens (four characters each).
    fn texts(text: &str, max: usize, overlap: usize) -> Vec<String> {
        let chunks = chunk(text, &Tokens::Approximate, max, overlap).unwrap();
        chunks.into_iter().map(|c| c.text).collect()
    }

    #[test]
    fn sentences_end_at_punctuation_before_white_space() {
        let got = sentences("Hi there. It's 3.5 \"ok!\" Fine?\nyes\n\n  Next para (a.b.) end");
        assert_eq!(
            got,
            [
                ("Hi there.", true),
                ("It's 3.5 \"ok!\"", false),
                ("Fine?", false),
                ("yes", false),
                ("Next para (a.b.)", true),
                ("end", false),
            ]
        );
    }

    #[test]
    fn chunks_pack_whole_sentences_with_overlap() {
        // Each sentence is 12 characters: 3 approximate tokens.
        let text = "Aaaa bbb cc. Dddd eee ff. Gggg hhh ii. Jjjj kkk ll.\n\nMmmm nnn oo.";
        assert_eq!(
            texts(text, 7, 3),
            [
                "Aaaa bbb cc. Dddd eee ff.",
                "Dddd eee ff. Gggg hhh ii.",
                "Gggg hhh ii. Jjjj kkk ll.",
                "Jjjj kkk ll.\n\nMmmm nnn oo.",
            ]
        );
        assert_eq!(
            texts(text, 7, 0),
            [
                "Aaaa bbb cc. Dddd eee ff.",
                "Gggg hhh ii. Jjjj kkk ll.",
                "Mmmm nnn oo."
            ]
        );
    }

    #[test]
    fn a_sentence_longer_than_a_chunk_is_cut_at_token_boundaries() {
        let text = "abcdefghijklmnopqrstuvwxyz";
        let chunks = chunk(text, &Tokens::Approximate, 3, 0).unwrap();
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["abcdefghijkl", "mnopqrstuvwx", "yz"]);
        assert_eq!(chunks[0].tokens, 3);
        assert_eq!(chunks[2].tokens, 1);
    }
}
