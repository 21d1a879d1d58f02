//! The pull pipeline's pure parts and its failure reports.

use bytes::Bytes;

use super::error::*;
use super::manifest::*;
use crate::error::ErrorKind;
use crate::image::registry::{
    MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, Manifest,
    RegistryError,
};
use crate::image::store::{self};

fn entry(os: &str, arch: &str, variant: Option<&str>, digest_byte: char) -> serde_json::Value {
    let mut platform = serde_json::json!({"os": os, "architecture": arch});
    if let Some(v) = variant {
        platform["variant"] = v.into();
    }
    serde_json::json!({
        "mediaType": MEDIA_OCI_MANIFEST,
        "digest": format!("sha256:{}", digest_byte.to_string().repeat(64)),
        "size": 100,
        "platform": platform,
    })
}

fn manifest(media_type: &str, json: serde_json::Value) -> Manifest {
    let bytes = Bytes::from(serde_json::to_vec(&json).unwrap());
    Manifest {
        digest: store::sha256_digest(&bytes),
        bytes,
        media_type: media_type.into(),
    }
}

#[test]
fn index_resolves_to_linux_amd64_skipping_attestations() {
    let mut attestation = entry("unknown", "unknown", None, 'd');
    attestation["annotations"] =
        serde_json::json!({"vnd.docker.reference.type": "attestation-manifest"});
    let index = manifest(
        MEDIA_OCI_INDEX,
        serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                entry("linux", "arm64", Some("v8"), 'a'),
                attestation,
                entry("linux", "amd64", Some("v3"), 'e'),
                entry("linux", "amd64", None, 'b'),
                entry("windows", "amd64", None, 'c'),
            ]
        }),
    );
    let Parsed::Index(entries) = parse_manifest(&index).unwrap() else {
        panic!("an index")
    };
    assert_eq!(
        select_platform(&entries).unwrap().digest,
        format!("sha256:{}", "b".repeat(64))
    );
    // With only a variant entry, that one is taken.
    let only_variant = [serde_json::from_value(entry("linux", "amd64", Some("v2"), 'f')).unwrap()];
    assert!(select_platform(&only_variant).is_ok());
}

#[test]
fn index_without_amd64_names_what_it_has() {
    let list = manifest(
        MEDIA_DOCKER_LIST,
        serde_json::json!({
            "schemaVersion": 2,
            "manifests": [entry("linux", "arm64", Some("v8"), 'a'), entry("linux", "s390x", None, 'b')]
        }),
    );
    let Parsed::Index(entries) = parse_manifest(&list).unwrap() else {
        panic!("an index")
    };
    let err = select_platform(&entries).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("linux/amd64"), "{text}");
    assert!(text.contains("linux/arm64/v8, linux/s390x"), "{text}");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
}

#[test]
fn image_manifests_of_both_kinds_parse() {
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": format!("sha256:{}", "1".repeat(64)), "size": 5},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": format!("sha256:{}", "2".repeat(64)), "size": 7}]
    });
    for media_type in [
        MEDIA_DOCKER_MANIFEST,
        MEDIA_OCI_MANIFEST,
        "application/json",
    ] {
        let Parsed::Image { config, layers } =
            parse_manifest(&manifest(media_type, doc.clone())).unwrap()
        else {
            panic!("an image manifest for {media_type}")
        };
        assert_eq!(config.size, 5);
        assert_eq!(layers.len(), 1);
    }
    let schema1 = manifest(
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        serde_json::json!({"schemaVersion": 1}),
    );
    assert!(matches!(
        parse_manifest(&schema1),
        Err(PullError::UnsupportedManifest(_))
    ));
    let garbage = Manifest {
        bytes: Bytes::from_static(b"not json"),
        media_type: MEDIA_OCI_MANIFEST.into(),
        digest: String::new(),
    };
    assert!(matches!(
        parse_manifest(&garbage),
        Err(PullError::BadManifest { .. })
    ));
}

#[test]
fn endpoint_failures_choose_the_kind() {
    let attempt = |error| Attempt {
        endpoint: "http://x/v2".into(),
        error,
    };
    let not_found = || RegistryError::NotFound { url: "u".into() };
    let err = PullError::Endpoints {
        what: "w".into(),
        attempts: vec![attempt(not_found()), attempt(not_found())],
    };
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = PullError::Endpoints {
        what: "w".into(),
        attempts: vec![
            attempt(not_found()),
            attempt(RegistryError::Unauthorized {
                url: "u".into(),
                status: 401,
            }),
        ],
    };
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    let err = PullError::Endpoints {
        what: "w".into(),
        attempts: vec![attempt(RegistryError::Status {
            url: "u".into(),
            status: 500,
        })],
    };
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.to_string().contains("http://x/v2 (u: HTTP 500)"),
        "{err}"
    );
}
