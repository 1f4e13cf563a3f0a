//! The documents `vecgate ingest` reads: files found under its paths (txt, md, html, jsonl),
//! each turned into text with its title, tags and timestamp.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// One document: a file, or one line of a jsonl file.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    /// Names the document in its points' ids and payload: the file's absolute path, with
    /// `#line` for a jsonl line that has no `id` of its own.
    pub source_id: String,
    /// The text to chunk.
    pub text: String,
    /// An HTML `<title>`, a Markdown document's first heading, or a jsonl line's `title`.
    pub title: Option<String>,
    /// Tags from the command line and the jsonl line.
    pub tags: Vec<String>,
    /// RFC 3339: a jsonl line's `timestamp`, else the file's modification time.
    pub timestamp: Option<String>,
    /// A jsonl line's other fields, kept in every chunk's payload.
    pub metadata: Map<String, Value>,
}

/// The kinds of file read, by extension.
const EXTENSIONS: [&str; 7] = ["txt", "md", "markdown", "html", "htm", "jsonl", "ndjson"];

/// The files under `paths` (each a file or a directory, walked recursively) that ingest reads,
/// sorted and without repeats. A file named explicitly must have a known extension.
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.is_dir() {
            walk(path, &mut out)?;
        } else if readable(path) {
            out.push(absolute(path)?);
        } else {
            return Err(format!(
                "{}: not a file ingest reads (extensions: {})",
                path.display(),
                EXTENSIONS.join(", ")
            ));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn readable(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if kind.is_file() && readable(&path) {
            out.push(absolute(&path)?);
        }
    }
    Ok(())
}

/// The documents in `path`, each tagged with `tags`.
pub fn read(path: &Path, tags: &[String]) -> Result<Vec<Doc>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let source_id = path.display().to_string();
    let timestamp = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        });
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let doc = |text: String, title: Option<String>| Doc {
        source_id: source_id.clone(),
        text,
        title,
        tags: tags.to_vec(),
        timestamp: timestamp.clone(),
        metadata: Map::new(),
    };
    Ok(match ext.as_str() {
        "html" | "htm" => {
            let page = html_text(&text);
            vec![doc(page.text, page.title)]
        }
        "md" | "markdown" => {
            let title = text
                .lines()
                .find_map(|l| l.strip_prefix("# "))
                .map(|t| t.trim().to_string());
            vec![doc(text.into_owned(), title)]
        }
        "jsonl" | "ndjson" => jsonl(&source_id, &text, tags, timestamp.as_deref())?,
        _ => vec![doc(text.into_owned(), None)],
    })
}

/// One document per line of a jsonl file: `text` (required), `id`, `title`, `tags` (a list or
/// one string), `timestamp`, and any other fields kept as metadata. Blank lines are skipped.
fn jsonl(
    source_id: &str,
    text: &str,
    tags: &[String],
    modified: Option<&str>,
) -> Result<Vec<Doc>, String> {
    let mut docs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{source_id}:{}", n + 1);
        let Value::Object(mut fields) =
            serde_json::from_str(line).map_err(|e| format!("{at}: {e}"))?
        else {
            return Err(format!("{at}: a line must be a JSON object"));
        };
        let Some(Value::String(body)) = fields.remove("text") else {
            return Err(format!("{at}: \"text\" (a string) is missing"));
        };
        let id = match fields.remove("id") {
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            None => format!("{source_id}#{}", n + 1),
            Some(_) => return Err(format!("{at}: \"id\" must be a string or a number")),
        };
        let mut all_tags = tags.to_vec();
        match fields.remove("tags") {
            Some(Value::String(t)) => all_tags.push(t),
            Some(Value::Array(list)) => {
                for t in list {
                    match t {
                        Value::String(t) => all_tags.push(t),
                        _ => return Err(format!("{at}: \"tags\" must hold strings")),
                    }
                }
            }
            None => {}
            Some(_) => return Err(format!("{at}: \"tags\" must be a list of strings")),
        }
        let string = |v: Option<Value>, name: &str| match v {
            Some(Value::String(s)) => Ok(Some(s)),
            None => Ok(None),
            Some(_) => Err(format!("{at}: \"{name}\" must be a string")),
        };
        let title = string(fields.remove("title"), "title")?;
        let timestamp = string(fields.remove("timestamp"), "timestamp")?
            .or_else(|| modified.map(str::to_string));
        docs.push(Doc {
            source_id: id,
            text: body,
            title,
            tags: all_tags,
            timestamp,
            metadata: fields,
        });
    }
    Ok(docs)
}

/// An HTML page's readable text and title.
#[derive(Debug, Default, PartialEq)]
pub struct Page {
    /// The text: blocks separated by blank lines, whitespace collapsed outside `<pre>`.
    pub text: String,
    /// The `<title>`.
    pub title: Option<String>,
}

/// Elements whose content is never text of the page.
const SKIPPED: [&str; 10] = [
    "script", "style", "head", "nav", "header", "footer", "aside", "noscript", "svg", "form",
];
/// ARIA roles of the parts of a page around its content.
const SKIPPED_ROLES: [&str; 4] = ["navigation", "search", "banner", "contentinfo"];
/// Elements that end a block of text.
const BLOCKS: [&str; 24] = [
    "p",
    "div",
    "section",
    "article",
    "main",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "pre",
    "blockquote",
    "table",
    "tr",
    "br",
    "hr",
    "figcaption",
];

/// The text of an HTML page: only what is inside its `<main>` (or `role="main"`) element when
/// it has one, without navigation, scripts, styles, headers and footers.
pub fn html_text(html: &str) -> Page {
    let has_main = html.contains("<main") || html.contains("role=\"main\"");
    let mut page = Page::default();
    let mut out = String::new();
    // Open elements that are skipped (or, with a main element, the main one): tag and depth.
    let mut skipping: Option<(String, usize)> = None;
    let mut main: Option<(String, usize)> = None;
    let mut pre = 0usize;
    let mut title: Option<String> = None;
    let mut rest = html;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            text(rest, &mut out, &mut title, &skipping, &main, has_main, pre);
            break;
        };
        text(
            &rest[..lt],
            &mut out,
            &mut title,
            &skipping,
            &main,
            has_main,
            pre,
        );
        rest = &rest[lt..];
        if let Some(comment) = rest.strip_prefix("<!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        let Some(gt) = rest.find('>') else { break };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        let closing = tag.starts_with('/');
        let tag = tag.trim_start_matches('/');
        let name_end = tag
            .find(|c: char| c.is_whitespace() || c == '/')
            .unwrap_or(tag.len());
        let name = tag[..name_end].to_ascii_lowercase();
        if name.is_empty() || name.starts_with('!') || name.starts_with('?') {
            continue;
        }
        let attrs = &tag[name_end..];
        let self_closing = attrs.ends_with('/')
            || matches!(
                name.as_str(),
                "br" | "hr" | "img" | "meta" | "link" | "input"
            );
        if name == "title" {
            if !closing {
                title = Some(String::new());
            } else if let Some(t) = title.take() {
                let words: Vec<&str> = t.split_whitespace().collect();
                page.title = Some(decode(&words.join(" ")));
            }
            continue;
        }
        for open in [&mut skipping, &mut main] {
            if let Some((t, depth)) = open.as_mut() {
                if *t == name && !self_closing {
                    if closing {
                        *depth -= 1;
                    } else {
                        *depth += 1;
                    }
                }
            }
        }
        if skipping.as_ref().is_some_and(|(_, d)| *d == 0) {
            skipping = None;
            continue;
        }
        if main.as_ref().is_some_and(|(_, d)| *d == 0) {
            main = None;
            out.push_str("\n\n");
            continue;
        }
        if skipping.is_some() {
            continue;
        }
        if !closing && !self_closing {
            let role = attribute(attrs, "role");
            if SKIPPED.contains(&name.as_str())
                || role.as_deref().is_some_and(|r| SKIPPED_ROLES.contains(&r))
                || attribute(attrs, "class")
                    .is_some_and(|c| c.split(' ').any(|c| c == "headerlink"))
            {
                skipping = Some((name, 1));
                continue;
            }
            if has_main && main.is_none() && (name == "main" || role.as_deref() == Some("main")) {
                main = Some((name.clone(), 1));
            }
        }
        if name == "pre" && !self_closing {
            pre = if closing {
                pre.saturating_sub(1)
            } else {
                pre + 1
            };
        }
        if BLOCKS.contains(&name.as_str()) && (main.is_some() || !has_main) {
            out.push_str(if name == "br" { "\n" } else { "\n\n" });
        }
    }
    page.text = tidy(&out);
    page
}

/// Appends a run of text between tags to `out` (or to the title being read).
fn text(
    raw: &str,
    out: &mut String,
    title: &mut Option<String>,
    skipping: &Option<(String, usize)>,
    main: &Option<(String, usize)>,
    has_main: bool,
    pre: usize,
) {
    if raw.is_empty() {
        return;
    }
    if let Some(t) = title {
        t.push_str(raw);
        return;
    }
    if skipping.is_some() || (has_main && main.is_none()) {
        return;
    }
    let decoded = decode(raw);
    if pre > 0 {
        out.push_str(&decoded);
    } else {
        let mut words = decoded.split_whitespace().peekable();
        let line_start = out.is_empty() || out.ends_with('\n');
        if decoded.starts_with(char::is_whitespace) && words.peek().is_some() && !line_start {
            out.push(' ');
        }
        let mut first = true;
        for w in words {
            if !first {
                out.push(' ');
            }
            out.push_str(w);
            first = false;
        }
        if decoded.ends_with(char::is_whitespace) && !first {
            out.push(' ');
        }
    }
}

/// Lines trimmed at the end, runs of blank lines made one, the text trimmed.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(line);
    }
    out
}

/// The value of attribute `name` in a tag's attribute text.
fn attribute(attrs: &str, name: &str) -> Option<String> {
    let mut rest = attrs;
    while let Some(at) = rest.find(name) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + name.len()..].trim_start();
        rest = &rest[at + name.len()..];
        if before.is_some_and(|c| !c.is_whitespace()) {
            continue;
        }
        let Some(value) = after.strip_prefix('=') else {
            continue;
        };
        let value = value.trim_start();
        let (quote, value) = match value.chars().next() {
            Some(q @ ('"' | '\'')) => (q, &value[1..]),
            _ => (' ', value),
        };
        let end = value.find(quote).unwrap_or(value.len());
        return Some(value[..end].to_string());
    }
    None
}

/// `s` with HTML character references replaced (numeric ones and the common named ones).
fn decode(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest[1..]
            .find(|c: char| c == ';' || !c.is_ascii_alphanumeric() && c != '#')
            .map(|e| e + 1);
        let replaced = match end {
            Some(end) if rest.as_bytes()[end] == b';' => {
                entity(&rest[1..end]).map(|c| (c, end + 1))
            }
            _ => None,
        };
        match replaced {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(code);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "para" => '¶',
        "copy" => '©',
        "mdash" => '—',
        "ndash" => '–',
        "hellip" => '…',
        "rsquo" => '’',
        "lsquo" => '‘',
        "rdquo" => '”',
        "ldquo" => '“',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_text_keeps_the_main_content_without_navigation_or_scripts() {
        let html = r#"<html><head><title>8. Errors &#8212; Docs</title><style>p{}</style></head>
<body><div class="related" role="navigation"><ul><li><a href="x">next</a></li></ul></div>
<div class="body" role="main"><h1>Errors<a class="headerlink">&para;</a></h1>
<p>There are   (at least) two
kinds of <em>errors</em>: &lt;syntax&gt; &amp; exceptions.</p><div><p>Nested</p></div>
<pre>while True print('Hello')
    ^</pre><script>var x = "<p>no</p>";</script></div>
<div class="sphinxsidebar" role="navigation"><p>Table of Contents</p></div><footer>(c)</footer></body></html>"#;
        let page = html_text(html);
        assert_eq!(page.title.as_deref(), Some("8. Errors — Docs"));
        assert_eq!(
            page.text,
            "Errors\n\nThere are (at least) two kinds of errors: <syntax> & exceptions.\n\nNested\n\nwhile True print('Hello')\n    ^"
        );
    }

    #[test]
    fn html_without_a_main_element_keeps_the_body() {
        let page = html_text("<p>one</p><nav>menu</nav><p>two &#x41;&bogus; &</p>");
        assert_eq!(page.text, "one\n\ntwo A&bogus; &");
        assert_eq!(page.title, None);
    }

    #[test]
    fn jsonl_lines_carry_their_ids_tags_and_metadata() {
        let text = "{\"text\": \"a\", \"id\": 7, \"tags\": [\"x\"], \"lang\": \"en\"}\n\n{\"text\": \"b\", \"tags\": \"y\", \"timestamp\": \"2024-01-01T00:00:00Z\"}\n";
        let docs = jsonl(
            "/d/f.jsonl",
            text,
            &["cli".into()],
            Some("2025-01-01T00:00:00Z"),
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].source_id, "7");
        assert_eq!(docs[0].tags, ["cli", "x"]);
        assert_eq!(docs[0].metadata["lang"], "en");
        assert_eq!(docs[0].timestamp.as_deref(), Some("2025-01-01T00:00:00Z"));
        assert_eq!(docs[1].source_id, "/d/f.jsonl#3");
        assert_eq!(docs[1].tags, ["cli", "y"]);
        assert_eq!(docs[1].timestamp.as_deref(), Some("2024-01-01T00:00:00Z"));
        let bad = jsonl("/d/f.jsonl", "{\"id\": 1}\n", &[], None).unwrap_err();
        assert_eq!(bad, "/d/f.jsonl:1: \"text\" (a string) is missing");
    }

    #[test]
    fn files_walks_directories_and_refuses_unknown_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for name in ["a.md", "sub/b.html", "sub/c.bin", "d.TXT"] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        let found = files(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<String> = found
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path().canonicalize().unwrap())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["a.md", "d.TXT", "sub/b.html"]);
        let refused = files(&[dir.path().join("sub/c.bin")]).unwrap_err();
        assert!(refused.contains("not a file ingest reads"), "{refused}");
    }
}
