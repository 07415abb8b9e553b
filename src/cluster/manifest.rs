//! A release's manifests: the rendered files, parsed into objects, placed
//! in the release waves of spec 14.4 (the namespace first, then each
//! service in its matrix `release-wave`: Platform Core, Auth, the module
//! backends, Platform Admin), with what the history records about them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::matrix::Environment;
use crate::matrix::schema::SchemaLevel;
use crate::render::RenderedFile;

/// The wave of `namespace.yaml` (and of the ExternalSecrets, the alert
/// rules and the CronJobs): before any service.
pub const NAMESPACE_WAVE: u8 = 0;

const NAMESPACE_FILE: &str = "namespace.yaml";

/// One object of a manifest file.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub file: String,
    pub wave: u8,
    pub value: Value,
}

impl Object {
    pub fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// `Kind/name`, as messages name an object.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.kind(), self.name())
    }
}

/// The manifests of one release and what the history keeps about them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifests {
    /// File name -> text, as `kisumctl render` writes them.
    pub files: BTreeMap<String, String>,
    /// File name -> wave.
    pub waves: BTreeMap<String, u8>,
    /// Service id -> image reference of its Deployment.
    pub images: BTreeMap<String, String>,
    /// Service id -> schema level, from the matrix.
    pub schema: BTreeMap<String, SchemaLevel>,
}

#[derive(Debug, thiserror::Error)]
#[error("manifest {file}: {message}")]
pub struct ManifestError {
    pub file: String,
    pub message: String,
}

impl Manifests {
    /// The rendered files of `env`, placed in waves. `kustomization.yaml`
    /// is kustomize's, not the cluster's: left out.
    pub fn from_render(
        env: &Environment,
        files: &[RenderedFile],
    ) -> Result<Manifests, ManifestError> {
        let mut manifests = Manifests {
            files: BTreeMap::new(),
            waves: BTreeMap::new(),
            images: BTreeMap::new(),
            schema: env.base.schema_levels.clone(),
        };
        for file in files.iter().filter(|f| f.name != "kustomization.yaml") {
            let service = file.name.trim_end_matches(".yaml");
            let wave = match env.services.get(service) {
                Some(resolved) => resolved.spec.release_wave,
                None => NAMESPACE_WAVE,
            };
            manifests.files.insert(file.name.clone(), file.text.clone());
            manifests.waves.insert(file.name.clone(), wave);
        }
        for object in manifests.objects()? {
            if object.kind() == "Deployment" {
                let image = &object.value["spec"]["template"]["spec"]["containers"][0]["image"];
                if let Some(image) = image.as_str() {
                    manifests
                        .images
                        .insert(object.name().to_string(), image.to_string());
                }
            }
        }
        Ok(manifests)
    }

    /// Every object, in wave order, then file order, then document order.
    pub fn objects(&self) -> Result<Vec<Object>, ManifestError> {
        let mut objects = Vec::new();
        for (file, text) in &self.files {
            let wave = self.waves.get(file).copied().unwrap_or(NAMESPACE_WAVE);
            let documents: Vec<Value> =
                serde_saphyr::from_multiple(text).map_err(|e| ManifestError {
                    file: file.clone(),
                    message: e.to_string(),
                })?;
            for value in documents.into_iter().filter(|v| v.is_object()) {
                let object = Object {
                    file: file.clone(),
                    wave,
                    value,
                };
                if object.kind().is_empty() || object.name().is_empty() {
                    return Err(ManifestError {
                        file: file.clone(),
                        message: "a document without kind or metadata.name".into(),
                    });
                }
                objects.push(object);
            }
        }
        // The Namespace before anything that lives in it.
        objects.sort_by_key(|o| (o.wave, o.file != NAMESPACE_FILE));
        Ok(objects)
    }

    /// SHA-256 over every file name and text, in name order.
    pub fn digest(&self) -> String {
        let mut hash = Sha256::new();
        for (name, text) in &self.files {
            hash.update(name.as_bytes());
            hash.update([0]);
            hash.update(text.as_bytes());
            hash.update([0]);
        }
        format!("sha256:{}", hex::encode(hash.finalize()))
    }

    /// The waves present, in order, with their services' names.
    pub fn waves(&self) -> Vec<(u8, Vec<String>)> {
        let mut waves: BTreeMap<u8, Vec<String>> = BTreeMap::new();
        for (file, wave) in &self.waves {
            waves
                .entry(*wave)
                .or_default()
                .push(file.trim_end_matches(".yaml").to_string());
        }
        for names in waves.values_mut() {
            names.sort_by_key(|name| name != "namespace");
        }
        waves.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifests() -> Manifests {
        let matrix = crate::matrix::Matrix::load(std::path::Path::new("environments")).unwrap();
        let env = matrix.environment("staging").unwrap();
        let templates =
            crate::render::templates::Templates::load(std::path::Path::new("templates")).unwrap();
        let files = crate::render::render(&env, &templates).unwrap();
        Manifests::from_render(&env, &files).unwrap()
    }

    #[test]
    fn waves_follow_the_release_order_core_auth_modules_admin() {
        let waves = manifests().waves();
        let order: Vec<(u8, Vec<String>)> = waves;
        let first: Vec<&str> = order[0].1.iter().map(String::as_str).collect();
        assert_eq!(
            (order[0].0, first),
            (
                0,
                vec!["namespace", "alerts", "external-secrets", "schedules"]
            )
        );
        assert_eq!(order[1], (1, vec!["platform-core".to_string()]));
        assert_eq!(order[2], (2, vec!["auth".to_string()]));
        assert!(order[3].1.contains(&"finance".to_string()), "{order:?}");
        assert_eq!(order.last().unwrap().1, vec!["platform-admin".to_string()]);
    }

    #[test]
    fn objects_come_in_wave_order_without_the_kustomization() {
        let manifests = manifests();
        let objects = manifests.objects().unwrap();
        assert_eq!(objects[0].reference(), "Namespace/kisum-staging");
        assert!(
            objects
                .iter()
                .any(|o| o.kind() == "ExternalSecret" && o.wave == 0)
        );
        assert!(objects.windows(2).all(|w| w[0].wave <= w[1].wave));
        assert!(objects.iter().all(|o| o.kind() != "Kustomization"));
        assert_eq!(manifests.images.len(), 9);
        assert!(manifests.digest().starts_with("sha256:"));
    }
}
