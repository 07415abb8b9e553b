//! The service images: one Containerfile builds every image the matrix
//! names (the binary is a build argument); it parses (known instructions,
//! continuations, JSON-form entry point), builds in more than one stage
//! and runs as the platform's non-root UID;
//! and staging and production either pin every image by digest or say, in
//! their assumptions, that they do not yet. The kisumctl image's own
//! Containerfile (at the root) puts the matrix where `kisumctl.matrix-dir`
//! says and carries the tools the backups call. No container engine runs on
//! these machines, so no image is built here.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::common::root;

const INSTRUCTIONS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Image name of the matrix -> crate directory under services/ and the
/// binary the image is built with.
const IMAGES: [(&str, &str, &str); 4] = [
    ("auth", "auth", "kisum-auth"),
    ("platform-core", "core", "kisum-core"),
    ("platform-admin", "admin", "kisum-admin"),
    ("module", "module", "kisum-module"),
];

fn base() -> Value {
    let text = std::fs::read_to_string(root().join("environments/base.yaml")).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

/// Instructions with their arguments, continuations joined, comments and
/// blank lines dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => current += &format!("{part} "),
            None => {
                current += trimmed;
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(current.is_empty(), "a continuation runs past the end");
    joined
        .iter()
        .map(|line| {
            let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
            (word.to_string(), rest.trim().to_string())
        })
        .collect()
}

#[test]
fn one_multi_stage_containerfile_builds_every_image_as_the_platform_user() {
    let base = base();
    let run_as = base["platform"]["run-as-user"].as_i64().unwrap();
    let named: BTreeSet<&str> = base["services"]
        .as_object()
        .unwrap()
        .values()
        .map(|s| s["image"].as_str().unwrap())
        .collect();
    let covered: BTreeSet<&str> = IMAGES.iter().map(|(image, _, _)| *image).collect();
    assert_eq!(
        named, covered,
        "an image of the matrix the Containerfile does not build"
    );
    for (image, dir, binary) in IMAGES {
        let manifest =
            std::fs::read_to_string(root().join("services").join(dir).join("Cargo.toml"));
        let manifest = manifest.unwrap();
        assert!(
            manifest.contains(&format!("name = \"{binary}\"")),
            "{image}: no binary {binary}"
        );
    }

    let text = std::fs::read_to_string(root().join("services/Containerfile")).unwrap();
    let parsed = instructions(&text);
    for (word, _) in &parsed {
        assert!(
            INSTRUCTIONS.contains(&word.as_str()),
            "unknown instruction {word}"
        );
    }
    let stages: Vec<usize> = (0..parsed.len())
        .filter(|i| parsed[*i].0 == "FROM")
        .collect();
    assert!(stages.len() >= 2, "not multi-stage");
    assert_eq!(parsed[0].0, "FROM", "must start with FROM");
    let build = &parsed[stages[0]..stages[1]];
    assert!(
        build.iter().any(|(w, a)| w == "ARG" && a == "BINARY"),
        "no BINARY argument"
    );
    let last = &parsed[*stages.last().unwrap()..];
    let user = last
        .iter()
        .rev()
        .find(|(w, _)| w == "USER")
        .map(|(_, a)| a.clone());
    let user = user.expect("the run stage sets no USER");
    let uid: i64 = user.split(':').next().unwrap().parse().unwrap();
    assert_eq!(uid, run_as, "runs as {user}");
    assert_ne!(uid, 0);
    let entrypoint = last.iter().find(|(w, _)| w == "ENTRYPOINT").unwrap();
    let form: Vec<String> = serde_json::from_str(&entrypoint.1).unwrap();
    assert_eq!(form, ["/usr/local/bin/kisum-service"]);
    assert!(
        last.iter()
            .any(|(w, a)| w == "COPY" && a.starts_with("--from=build ")),
        "the run stage copies nothing from the build stage"
    );
    assert!(
        !parsed.iter().any(|(w, a)| w == "ADD" && a.contains("://")),
        "ADD of a URL"
    );
}

#[test]
fn staging_and_production_pin_images_by_digest_or_say_why_not() {
    for env in ["staging", "production"] {
        let text =
            std::fs::read_to_string(root().join(format!("environments/{env}.yaml"))).unwrap();
        let file: Value = serde_saphyr::from_str(&text).unwrap();
        let digest = |tag: &Value| tag.as_str().is_some_and(|t| t.starts_with("sha256:"));
        let services = file["services"].as_object().cloned().unwrap_or_default();
        let pinned = digest(&file["image-tag"])
            && services
                .values()
                .all(|s| s.get("image-tag").is_none_or(digest));
        let assumed =
            file["assumptions"].as_array().unwrap().iter().any(|a| {
                a["path"] == "image-tag" && a["reason"].as_str().unwrap().contains("digest")
            });
        assert!(
            pinned || assumed,
            "{env}: images neither pinned by digest nor listed as an assumption"
        );
    }
}

#[test]
fn the_kisumctl_containerfile_bakes_in_the_matrix_where_the_pods_look_for_it() {
    let base = base();
    let run_as = base["platform"]["run-as-user"].as_i64().unwrap();
    let matrix_dir = base["kisumctl"]["matrix-dir"].as_str().unwrap();
    let text = std::fs::read_to_string(root().join("Containerfile")).unwrap();
    let parsed = instructions(&text);
    assert!(
        parsed
            .iter()
            .all(|(w, _)| INSTRUCTIONS.contains(&w.as_str()))
    );
    let stages: Vec<usize> = (0..parsed.len())
        .filter(|i| parsed[*i].0 == "FROM")
        .collect();
    assert_eq!(stages.len(), 2, "a build and a run stage");
    let last = &parsed[stages[1]..];
    assert!(last[0].1.contains("debian:bookworm-slim"), "{:?}", last[0]);
    let has = |word: &str, part: &str| last.iter().any(|(w, a)| w == word && a.contains(part));
    for package in ["postgresql-client", "redis-tools", "ca-certificates"] {
        assert!(has("RUN", package), "{package} is not installed");
    }
    assert!(has("COPY", &format!("environments {matrix_dir}")));
    assert!(has("ENV", &format!("KISUM_MATRIX={matrix_dir}")));
    // The migrations `validate` checks the schema levels against.
    for database in base["databases"].as_object().unwrap().values() {
        if let Some(dir) = database["migrations"].as_str() {
            let crate_dir = dir.split('/').take(3).collect::<Vec<_>>().join("/");
            assert!(has("COPY", &crate_dir), "{dir} is not in the image");
        }
    }
    let user = last.iter().rev().find(|(w, _)| w == "USER").unwrap();
    assert_eq!(user.1, format!("{run_as}:{run_as}"));
    let entrypoint = last.iter().find(|(w, _)| w == "ENTRYPOINT").unwrap();
    let form: Vec<String> = serde_json::from_str(&entrypoint.1).unwrap();
    assert_eq!(form, ["/usr/local/bin/kisumctl"]);
}
