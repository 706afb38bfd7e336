//! Self-contained interactive SVG flame graphs, drawn by inferno from folded stacks, with the
//! count labelled in the profile type's unit.

use inferno::flamegraph::{Direction, Options, from_lines};

use super::folded::stacks;
use super::{DEFAULT_MAX_NODES, OTHER_NAME, RenderError};
use crate::model::FlameTree;
use crate::model::ProfileType;

/// What to write around the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvgOptions {
    /// Names the query; shown on top.
    pub title: String,
    pub subtitle: Option<String>,
    /// Decides the unit the counts are labelled with.
    pub profile_type: ProfileType,
    /// The tree is cut to this many nodes (plus one "other" per cut parent) before inferno lays
    /// anything out ([`FlameTree::truncated`]); none: [`DEFAULT_MAX_NODES`]. inferno's own
    /// `min_width` would drop narrow frames only after reading and sorting every line.
    pub max_nodes: Option<usize>,
}

/// An SVG flame graph of `tree`. An empty tree still yields a well-formed SVG saying so,
/// so exporting a window without data gives a valid file rather than an error.
pub fn svg(tree: &FlameTree, options: &SvgOptions) -> Result<Vec<u8>, RenderError> {
    let tree = &tree.truncated(options.max_nodes.unwrap_or(DEFAULT_MAX_NODES), OTHER_NAME);
    // inferno only reads non-negative integer counts.
    let lines: Vec<String> = stacks(tree, |value| value > 0)
        .into_iter()
        .map(|(stack, value)| format!("{stack} {value}"))
        .collect();
    if lines.is_empty() {
        return Ok(empty_svg(options));
    }
    draw(lines.iter().map(String::as_str), options, tree.total())
}

/// Runs inferno over folded lines (one or two counts each), counts labelled for `total`.
fn draw<'a>(lines: impl Iterator<Item = &'a str>, options: &SvgOptions, total: i64) -> Result<Vec<u8>, RenderError> {
    let (count_name, factor) = count_unit(&options.profile_type, total);
    let mut inferno_options = Options::default();
    inferno_options.title = options.title.clone();
    inferno_options.subtitle = options.subtitle.clone();
    inferno_options.count_name = count_name;
    inferno_options.factor = factor;
    // Root on top, as the web UI (Grafana's flame graph) draws it: an export looks like the view.
    inferno_options.direction = Direction::Inverted;
    // Colours from name hashes: the same input gives the same bytes.
    inferno_options.deterministic = true;
    let mut out = Vec::new();
    from_lines(&mut inferno_options, lines, &mut out)?;
    Ok(out)
}

/// A differential flame graph: frames sized by `after`, red where they grew since `before`, blue
/// where they shrank (inferno's colouring of two-count folded lines).
/// Each tree is cut to `max_nodes` first, so the graph has at most twice as many frames.
pub fn svg_diff(before: &FlameTree, after: &FlameTree, options: &SvgOptions) -> Result<Vec<u8>, RenderError> {
    let max_nodes = options.max_nodes.unwrap_or(DEFAULT_MAX_NODES);
    let (before, after) = (
        &before.truncated(max_nodes, OTHER_NAME),
        &after.truncated(max_nodes, OTHER_NAME),
    );
    let folded = super::folded::folded_diff(before, after);
    if folded.is_empty() {
        return Ok(empty_svg(options));
    }
    draw(folded.lines(), options, after.total().max(before.total()))
}

/// The label and scale factor of the counts. Nanosecond totals are shown in the largest of
/// ms / µs / ns that still leaves the whole graph at least 1000 units wide.
fn count_unit(profile_type: &ProfileType, total: i64) -> (String, f64) {
    let sample_type = profile_type.sample_type.as_str();
    let (name, factor) = match profile_type.sample_unit.as_str() {
        "nanoseconds" if total >= 1_000_000_000 => ("ms", 1e-6),
        "nanoseconds" if total >= 1_000_000 => ("µs", 1e-3),
        "nanoseconds" => ("ns", 1.0),
        "bytes" => ("bytes", 1.0),
        "count" if sample_type.starts_with("goroutine") => ("goroutines", 1.0),
        "count" if sample_type.contains("objects") => ("objects", 1.0),
        "count" | "" => ("samples", 1.0),
        unit => (unit, 1.0),
    };
    (name.to_string(), factor)
}

/// Marks the SVG of a window without data, so `pyrite export` can tell it from a flame graph
/// (inferno's SVGs carry no XML comments; frame names are escaped text, never markup).
pub const EMPTY_SVG_MARKER: &str = "<!-- pyrite: no data -->";

fn empty_svg(options: &SvgOptions) -> Vec<u8> {
    format!(
        concat!(
            r#"<?xml version="1.0" standalone="no"?>"#,
            "\n",
            "{}",
            "\n",
            r#"<svg version="1.1" width="1200" height="80" viewBox="0 0 1200 80" xmlns="http://www.w3.org/2000/svg">"#,
            "\n",
            r##"<rect x="0" y="0" width="100%" height="100%" fill="#f8f8f8"/>"##,
            "\n",
            r#"<text x="600" y="28" text-anchor="middle" font-family="Verdana" font-size="17">{}</text>"#,
            "\n",
            r#"<text x="600" y="56" text-anchor="middle" font-family="Verdana" font-size="12">no data</text>"#,
            "\n</svg>\n"
        ),
        EMPTY_SVG_MARKER,
        escape(&options.title)
    )
    .into_bytes()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use quick_xml::Reader;
    use quick_xml::events::Event;

    use super::*;
    use crate::render::testutil::sample_tree;

    /// The `y` of the rectangle drawn for the frame whose title starts with `title`.
    fn frame_y(svg: &str, title: &str) -> f64 {
        let at = svg
            .find(&format!("<title>{title}"))
            .unwrap_or_else(|| panic!("no frame {title}"));
        let rest = &svg[at..];
        let y = &rest[rest.find(" y=\"").unwrap() + 4..];
        y[..y.find('"').unwrap()].parse().unwrap()
    }

    #[test]
    fn the_root_is_drawn_on_top_as_in_the_web_ui() {
        let svg = svg(
            &sample_tree(),
            &options("shop", "process_cpu:cpu:nanoseconds:cpu:nanoseconds"),
        )
        .unwrap();
        let svg = String::from_utf8(svg).unwrap();
        let (root, main, memmove) = (frame_y(&svg, "all "), frame_y(&svg, "main "), frame_y(&svg, "memmove "));
        assert!(
            root < main && main < memmove,
            "root {root}, main {main}, memmove {memmove}"
        );
    }

    fn options(title: &str, profile_type: &str) -> SvgOptions {
        SvgOptions {
            title: title.to_string(),
            subtitle: Some("last 1h".to_string()),
            profile_type: ProfileType::parse(profile_type).unwrap(),
            max_nodes: None,
        }
    }

    /// Reads the whole document to the end; returns its text content, unescaped, one line per
    /// element.
    fn well_formed_text(svg: &[u8]) -> String {
        let mut reader = Reader::from_reader(svg);
        reader.config_mut().check_end_names = true;
        let mut buf = Vec::new();
        let mut text = String::new();
        let mut depth = 0i32;
        loop {
            match reader.read_event_into(&mut buf).expect("well-formed XML") {
                Event::Start(_) => depth += 1,
                Event::End(_) => {
                    depth -= 1;
                    text.push('\n');
                }
                Event::Text(t) => text.push_str(&t.decode().unwrap()),
                Event::GeneralRef(r) => {
                    let name = r.decode().unwrap();
                    text.push_str(quick_xml::escape::resolve_predefined_entity(&name).expect("known entity"));
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        assert_eq!(depth, 0, "unbalanced elements");
        text
    }

    #[test]
    fn renders_a_well_formed_graph_with_units() {
        let tree = sample_tree();
        let svg = svg(
            &tree,
            &options("cpu of {service=\"api\"}", "memory:inuse_space:bytes:space:bytes"),
        )
        .unwrap();
        let text = well_formed_text(&svg);
        assert!(text.contains("cpu of {service=\"api\"}"), "title missing");
        for name in ["main", "work", "hash", "gc", "mark"] {
            assert!(text.contains(name), "{name} missing");
        }
        assert!(text.contains("bytes"), "unit missing");
        assert!(text.contains("last 1h"));
    }

    #[test]
    fn nanoseconds_are_scaled() {
        let mut tree = FlameTree::new();
        tree.insert_names(&["main", "spin"], 3_000_000_000);
        tree.insert_names(&["main"], 1_000_000_000);
        let svg = svg(&tree, &options("cpu", "process_cpu:cpu:nanoseconds:cpu:nanoseconds")).unwrap();
        let text = well_formed_text(&svg);
        assert!(text.contains("spin (3,000 ms, 75.00%)"), "{text}");
        assert_eq!(
            count_unit(&ProfileType::parse("g:goroutine:count:goroutine:count").unwrap(), 5).0,
            "goroutines"
        );
        assert_eq!(
            count_unit(&ProfileType::parse("m:alloc_objects:count:space:bytes").unwrap(), 5).0,
            "objects"
        );
        assert_eq!(
            count_unit(&ProfileType::parse("c:samples:count:cpu:nanoseconds").unwrap(), 5).0,
            "samples"
        );
        assert_eq!(
            count_unit(&ProfileType::parse("w:wall:nanoseconds::").unwrap(), 5_000_000).0,
            "µs"
        );
    }

    #[test]
    fn a_huge_tree_is_cut_to_max_nodes_before_inferno_sees_it() {
        // A 200 000-frame chain (what an unbounded folded line stored) and 50 000 leaves.
        let mut tree = FlameTree::new();
        let chain: Vec<u32> = (0..200_000).map(|i| tree.intern(&format!("deep{i}"))).collect();
        tree.insert(&chain, 1_000);
        for i in 0..50_000 {
            tree.insert_names(&["main", &format!("leaf{i}")], 1 + i % 5);
        }
        let mut options = options("huge", "process_cpu:samples:count:cpu:nanoseconds");
        options.max_nodes = Some(500);
        let svg = svg(&tree, &options).unwrap();
        let text = String::from_utf8(svg).unwrap();
        // inferno draws one <g> per frame (plus a few fixed groups).
        let frames = text.matches("<g>").count();
        assert!(frames <= 2 * 500 + 10, "{frames} frames");
        assert!(
            text.contains("deep0") && text.contains("other"),
            "kept the heaviest nodes"
        );
    }

    #[test]
    fn empty_tree_still_gives_a_document() {
        let svg = svg(
            &FlameTree::new(),
            &options("a <b> & 'c'", "memory:inuse_space:bytes:space:bytes"),
        )
        .unwrap();
        let text = well_formed_text(&svg);
        assert!(text.contains("no data"));
        assert!(text.contains("a <b> & 'c'"), "title missing");
    }
}
