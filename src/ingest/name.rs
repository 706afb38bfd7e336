//! The `name` parameter of the legacy `/ingest` API: `app.suffix{key=value,…}`.

use crate::model::Labels;

/// A parsed `name` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestName {
    /// The application name without the suffix; becomes `service_name`.
    pub app: String,
    /// The part after the last `.` of the name (`cpu`, `alloc_space`, …), if any.
    pub suffix: Option<String>,
    /// Tags from the braces.
    pub tags: Vec<(String, String)>,
}

/// Parses `myapp.cpu{env=prod,region=eu}`.
pub fn parse_ingest_name(raw: &str) -> Result<IngestName, String> {
    let raw = raw.trim();
    let (head, tags_part) = match raw.find('{') {
        Some(open) => {
            let close = raw
                .rfind('}')
                .filter(|&close| close > open)
                .ok_or("missing '}' in name")?;
            if !raw[close + 1..].trim().is_empty() {
                return Err("unexpected text after '}' in name".into());
            }
            (&raw[..open], Some(&raw[open + 1..close]))
        }
        None => (raw, None),
    };
    if head.is_empty() {
        return Err("name has no application name".into());
    }
    if let Some(bad) = head
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_./-".contains(*c)))
    {
        return Err(format!(
            "application name contains {bad:?}; allowed are A-Z a-z 0-9 _ . / -"
        ));
    }
    let mut tags = Vec::new();
    for tag in tags_part.unwrap_or("").split(',') {
        let tag = tag.trim();
        if tag.is_empty() {
            continue;
        }
        let (key, value) = tag
            .split_once('=')
            .ok_or_else(|| format!("tag {tag:?} is not key=value"))?;
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            return Err(format!("tag key {key:?} is invalid"));
        }
        if key == "__name__" {
            return Err("tag key __name__ is reserved".into());
        }
        tags.push((key.to_string(), value.trim().to_string()));
    }
    let (app, suffix) = match head.rsplit_once('.') {
        Some((app, suffix)) if !app.is_empty() => (app.to_string(), Some(suffix.to_string())),
        _ => (head.to_string(), None),
    };
    Ok(IngestName { app, suffix, tags })
}

impl IngestName {
    /// Series labels: the tags plus `service_name` (the app), unless a tag already sets it, in
    /// which case the app goes into `app_name`, as Pyroscope does.
    pub fn labels(&self, full_app: bool) -> Result<Labels, crate::model::LabelError> {
        let app = if full_app {
            match &self.suffix {
                Some(suffix) => format!("{}.{suffix}", self.app),
                None => self.app.clone(),
            }
        } else {
            self.app.clone()
        };
        let mut pairs = self.tags.clone();
        if pairs.iter().any(|(key, _)| key == "service_name") {
            pairs.push(("app_name".into(), app));
        } else {
            pairs.push(("service_name".into(), app));
        }
        pairs.retain(|(key, _)| !key.starts_with("__") || key == "__session_id__");
        Labels::new(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffix_and_tags() {
        let name = parse_ingest_name("my-app.cpu{env=prod, region = eu}").unwrap();
        assert_eq!(name.app, "my-app");
        assert_eq!(name.suffix.as_deref(), Some("cpu"));
        assert_eq!(
            name.tags,
            vec![("env".into(), "prod".into()), ("region".into(), "eu".into())]
        );
        let labels = name.labels(false).unwrap();
        assert_eq!(labels.get("service_name"), Some("my-app"));
        assert_eq!(parse_ingest_name("plain").unwrap().suffix, None);
    }

    #[test]
    fn refuses_bad_names() {
        for bad in ["", "{a=b}", "app{a}", "app{a=b", "a pp", "app{__name__=x}", "app{a=b}x"] {
            assert!(parse_ingest_name(bad).is_err(), "{bad}");
        }
    }
}
