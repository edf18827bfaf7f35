//! The UI, embedded in the binary: plain HTML, CSS and JavaScript, no build step, no CDN.

/// `index.html` template; `{{BASE_PATH}}` (HTML) and `{{BASE_PATH_JSON}}` (JS) are filled in
/// once by [`index_html`], `{{LOOKUPD_JSON}}` and `{{SAMPLE_MS}}` per request (the lookupd
/// list can change at run time).
pub const INDEX_HTML: &str = include_str!("../assets/index.html");
/// The single-page app.
pub const APP_JS: &str = include_str!("../assets/app.js");
/// Styles.
pub const STYLE_CSS: &str = include_str!("../assets/style.css");

/// An asset by name, with its content type.
pub fn find(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "app.js" => Some((APP_JS, "application/javascript; charset=utf-8")),
        "style.css" => Some((STYLE_CSS, "text/css; charset=utf-8")),
        _ => None,
    }
}

/// `index.html` for base path `base` (`""` or `/prefix`).
pub fn index_html(base: &str) -> String {
    let html_attr: String = base
        .chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            c => c.to_string(),
        })
        .collect();
    let js = String::from_utf8(nsq_http::json::to_vec(base)).unwrap_or_else(|_| "\"\"".into());
    INDEX_HTML
        .replace("{{BASE_PATH_JSON}}", &js)
        .replace("{{BASE_PATH}}", &html_attr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_filled_and_escaped() {
        let html = index_html("/adm\"<x>");
        assert!(!html.contains("{{BASE_PATH"));
        assert!(html.contains("/adm&quot;&lt;x&gt;/static/app.js"));
        assert!(html.contains(r#""/adm\"\u003cx\u003e""#));
        assert!(find("app.js").is_some() && find("../etc/passwd").is_none());
    }
}
