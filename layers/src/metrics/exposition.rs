//! Serving a registry: OpenMetrics text (with exemplars) to scrapers that ask for it, the
//! Prometheus text format 0.0.4 to everyone else (promtool, curl, older scrapers).

use prometheus_client::registry::Registry;

/// The content type of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text format.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Encodes `registry` in the format the `Accept` header prefers; returns the content type and body.
///
/// ```
/// use prometheus_client::{metrics::counter::Counter, registry::Registry};
/// use mcp_gateway_layers::metrics::render;
///
/// let mut registry = Registry::default();
/// let hits: Counter = Counter::default();
/// registry.register("hits", "Hits", hits.clone());
/// hits.inc();
/// let (content_type, text) = render(&registry, None);
/// assert!(content_type.starts_with("text/plain; version=0.0.4"));
/// assert_eq!(text, "# HELP hits_total Hits.\n# TYPE hits_total counter\nhits_total 1\n");
/// ```
pub fn render(registry: &Registry, accept: Option<&str>) -> (&'static str, String) {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        (OPENMETRICS_CONTENT_TYPE, text)
    } else {
        (PROMETHEUS_TEXT_CONTENT_TYPE, to_prometheus_text(&text))
    }
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: counter and info families are named as
/// their samples are, exemplars and `# EOF` are dropped.
fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut pending_help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            pending_help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "gauge" | "histogram" | "summary" => ("", kind),
                _ => ("", "untyped"),
            };
            if let Some(help) = pending_help.take() {
                let help_text = help.split_once(' ').map_or("", |(_, h)| h);
                out.push_str(&format!("# HELP {name}{suffix} {help_text}\n"));
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
            continue;
        }
        out.push_str(strip_exemplar(line));
        out.push('\n');
    }
    out
}

/// The sample line without its ` # {...} value` exemplar; label values may contain anything.
fn strip_exemplar(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut i = 0;
    let (mut in_labels, mut in_quote) = (false, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quote => i += 1,
            b'"' if in_labels => in_quote = !in_quote,
            b'{' if !in_quote => in_labels = true,
            b'}' if !in_quote => in_labels = false,
            b'#' if !in_labels && !in_quote && i > 0 && bytes[i - 1] == b' ' => {
                return line[..i - 1].trim_end();
            }
            _ => {}
        }
        i += 1;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_exemplars_but_not_label_values_that_look_like_them() {
        assert_eq!(
            strip_exemplar(r#"a_bucket{le="0.5"} 3 # {trace_id="ab"} 0.2"#),
            r#"a_bucket{le="0.5"} 3"#
        );
        assert_eq!(
            strip_exemplar(r#"a{ns="x # {y}\" # z"} 1"#),
            r#"a{ns="x # {y}\" # z"} 1"#
        );
        assert_eq!(strip_exemplar("plain 4"), "plain 4");
    }

    #[test]
    fn negotiates_openmetrics_for_scrapers_that_ask() {
        let registry = Registry::default();
        let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        let (content_type, text) = render(&registry, Some(accept));
        assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(render(&registry, Some("text/plain")).1, "");
    }
}
