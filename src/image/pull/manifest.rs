//! Manifests: OCI or Docker, an index resolved to linux/amd64.

use serde::Deserialize;

use super::error::PullError;
use crate::image::registry::{
    MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, Manifest,
};

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: std::collections::HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

const PLATFORM_OS: &str = "linux";
const PLATFORM_ARCH: &str = "amd64";

#[derive(Debug, Deserialize)]
pub(super) struct ManifestDoc {
    #[serde(rename = "mediaType")]
    pub(super) media_type: Option<String>,
    pub(super) config: Option<Descriptor>,
    pub(super) layers: Option<Vec<Descriptor>>,
    pub(super) manifests: Option<Vec<Descriptor>>,
}

pub(super) enum Parsed {
    Index(Vec<Descriptor>),
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

pub(super) fn parse_manifest(manifest: &Manifest) -> Result<Parsed, PullError> {
    let doc: ManifestDoc =
        serde_json::from_slice(&manifest.bytes).map_err(|source| PullError::BadManifest {
            digest: manifest.digest.clone(),
            source,
        })?;
    // The Content-Type header decides; registries that send a generic one are judged by the
    // document's own mediaType, then by its shape.
    let media_type = match manifest.media_type.as_str() {
        MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST | MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST => {
            manifest.media_type.clone()
        }
        _ => doc.media_type.clone().unwrap_or_else(|| {
            if doc.manifests.is_some() {
                MEDIA_OCI_INDEX.to_string()
            } else if doc.config.is_some() {
                MEDIA_OCI_MANIFEST.to_string()
            } else {
                manifest.media_type.clone()
            }
        }),
    };
    match media_type.as_str() {
        MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST => Ok(Parsed::Index(doc.manifests.unwrap_or_default())),
        MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST => match doc.config {
            Some(config) => Ok(Parsed::Image {
                config,
                layers: doc.layers.unwrap_or_default(),
            }),
            None => Err(PullError::UnsupportedManifest(media_type)),
        },
        _ => Err(PullError::UnsupportedManifest(media_type)),
    }
}

/// The linux/amd64 entry of an index; attestation and unknown-platform entries are skipped.
/// An entry without a variant is preferred to one with (amd64 variants are microarchitecture
/// levels this host may lack).
pub(super) fn select_platform(manifests: &[Descriptor]) -> Result<&Descriptor, PullError> {
    let candidates: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == PLATFORM_OS && p.architecture == PLATFORM_ARCH)
                && d.annotations
                    .get("vnd.docker.reference.type")
                    .is_none_or(|t| t != "attestation-manifest")
        })
        .collect();
    candidates
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.variant.is_none()))
        .or(candidates.first())
        .copied()
        .ok_or_else(|| PullError::NoPlatform {
            platforms: manifests
                .iter()
                .map(|d| match &d.platform {
                    Some(p) => match &p.variant {
                        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    },
                    None => "unknown".to_string(),
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
}
