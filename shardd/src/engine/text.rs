//! Text tokenizing for full-text matching: what `match.text` on a `text` index compares.

/// Lower-cased alphanumeric words.
pub fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}
