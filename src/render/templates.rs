//! User-editable tera templates under `templates/`, for the parts of a
//! manifest where text is the natural form (controller annotations,
//! response headers). Their output is parsed back into typed values
//! before anything is written, so a template cannot emit an invalid object.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::RenderError;
use crate::matrix::load::parse_str;

/// Templates every render needs.
pub const REQUIRED: [&str; 2] = [
    "ingress-annotations.yaml.tera",
    "security-headers.yaml.tera",
];

pub struct Templates {
    dir: PathBuf,
    tera: tera::Tera,
}

impl Templates {
    /// Loads the required templates from `dir`.
    pub fn load(dir: &Path) -> Result<Templates, RenderError> {
        let mut tera = tera::Tera::default();
        for name in REQUIRED {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).map_err(|error| RenderError::Template {
                template: path.display().to_string(),
                message: format!("cannot read: {error}"),
            })?;
            tera.add_raw_template(name, &text)
                .map_err(|error| RenderError::Template {
                    template: path.display().to_string(),
                    message: error.to_string(),
                })?;
        }
        Ok(Templates {
            dir: dir.to_path_buf(),
            tera,
        })
    }

    /// Renders `name` and parses the result as `T`.
    pub fn render<T: DeserializeOwned + serde::Serialize>(
        &self,
        name: &str,
        context: &tera::Context,
    ) -> Result<T, RenderError> {
        let path = self.dir.join(name).display().to_string();
        let text = self
            .tera
            .render(name, context)
            .map_err(|error| RenderError::Template {
                template: path.clone(),
                message: error.to_string(),
            })?;
        let typed = parse_str::<T>(&text).map_err(|error| {
            let at = error
                .position
                .map(|p| format!(" at line {} of its output", p.line))
                .unwrap_or_default();
            let field = if error.field.is_empty() {
                String::new()
            } else {
                format!("{}: ", error.field)
            };
            RenderError::Template {
                template: path.clone(),
                message: format!("produced an invalid object{at}: {field}{}", error.message),
            }
        })?;
        // Typed Kubernetes values skip fields they do not know; compare the
        // round trip with what the template wrote so nothing is dropped.
        let written: serde_json::Value =
            parse_str(&text).map_err(|error| RenderError::Template {
                template: path.clone(),
                message: error.message,
            })?;
        let kept = serde_json::to_value(&typed).map_err(|error| RenderError::Template {
            template: path.clone(),
            message: error.to_string(),
        })?;
        if let Some(field) = dropped_field(&written, &kept, String::new()) {
            return Err(RenderError::Template {
                template: path,
                message: format!("produced `{field}`, which is not a field of the object"),
            });
        }
        Ok(typed)
    }
}

/// The first path present in `written` but absent from `kept`.
fn dropped_field(
    written: &serde_json::Value,
    kept: &serde_json::Value,
    path: String,
) -> Option<String> {
    use serde_json::Value;
    match (written, kept) {
        (Value::Object(w), Value::Object(k)) => w.iter().find_map(|(key, value)| {
            let here = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match k.get(key) {
                Some(kept_value) => dropped_field(value, kept_value, here),
                None if value.is_null() => None,
                None => Some(here),
            }
        }),
        (Value::Array(w), Value::Array(k)) => w
            .iter()
            .zip(k)
            .enumerate()
            .find_map(|(n, (a, b))| dropped_field(a, b, format!("{path}.{n}"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_field_the_type_ignores_is_reported() {
        let written = json!({"metadata": {"name": "a", "nmae": "b"}});
        let kept = json!({"metadata": {"name": "a"}});
        assert_eq!(
            dropped_field(&written, &kept, String::new()).as_deref(),
            Some("metadata.nmae")
        );
    }

    #[test]
    fn identical_values_have_no_dropped_field() {
        let value = json!({"data": {"a": "1"}, "list": [{"x": 1}]});
        assert_eq!(dropped_field(&value, &value, String::new()), None);
    }
}
