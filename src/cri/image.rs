//! CRI ImageService: proto ⇄ domain adapter over `crate::image::ImageService`.

use crate::cri::api as cri;
use tonic::{Request, Response, Status};

use crate::image::{FsUsage, Image, ImageService, RegistryAuth};

pub struct ImageCri {
    images: ImageService,
}

impl ImageCri {
    pub fn new(images: ImageService) -> Self {
        ImageCri { images }
    }

    /// The images a List or Stream call's filter selects (by reference or ID; none: all).
    fn filtered(&self, filter: Option<cri::ImageFilter>) -> Vec<Image> {
        let image = filter.and_then(|f| f.image).map(|spec| spec.image);
        self.images.list(image.as_deref())
    }
}

fn image_name(spec: Option<&cri::ImageSpec>) -> Result<&str, Status> {
    match spec.map(|s| s.image.as_str()) {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(Status::invalid_argument("image name is empty")),
    }
}

fn to_cri_image(image: Image) -> cri::Image {
    cri::Image {
        spec: Some(cri::ImageSpec {
            image: image.id.clone(),
            image_ref: image.id.clone(),
            ..Default::default()
        }),
        id: image.id,
        repo_tags: image.repo_tags,
        repo_digests: image.repo_digests,
        size: image.size,
        uid: image.uid.map(|value| cri::Int64Value { value }),
        username: image.username,
        pinned: image.pinned,
    }
}

/// The CRI AuthConfig as pull credentials. `auth` is base64 `user:password` (the docker
/// config form); explicit username/password win over it.
fn to_registry_auth(auth: cri::AuthConfig) -> Result<Option<RegistryAuth>, Status> {
    use base64::Engine as _;
    let (mut username, mut password) = (auth.username, auth.password);
    if username.is_empty() && !auth.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.auth.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            // Never echo the field: it is a credential.
            .ok_or_else(|| {
                Status::invalid_argument("auth config `auth` is not base64 user:password")
            })?;
        let (user, pass) = decoded.split_once(':').ok_or_else(|| {
            Status::invalid_argument("auth config `auth` is not base64 user:password")
        })?;
        username = user.to_string();
        password = pass.to_string();
    }
    let auth = RegistryAuth {
        username,
        password,
        identity_token: auth.identity_token,
        registry_token: auth.registry_token,
    };
    Ok((auth != RegistryAuth::default()).then_some(auth))
}

fn to_cri_usage(usage: FsUsage) -> cri::FilesystemUsage {
    cri::FilesystemUsage {
        timestamp: usage.timestamp,
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: usage.mountpoint.display().to_string(),
        }),
        used_bytes: Some(cri::UInt64Value {
            value: usage.used_bytes,
        }),
        inodes_used: Some(cri::UInt64Value {
            value: usage.inodes_used,
        }),
    }
}

#[tonic::async_trait]
impl cri::image_service_server::ImageService for ImageCri {
    type StreamImagesStream = super::stream::ResponseStream<cri::StreamImagesResponse>;

    async fn stream_images(
        &self,
        request: Request<cri::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let images = self.filtered(request.into_inner().filter);
        Ok(Response::new(super::stream::converted(
            images,
            to_cri_image,
            |images| cri::StreamImagesResponse { images },
        )))
    }

    async fn list_images(
        &self,
        request: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let images = self
            .filtered(request.into_inner().filter)
            .into_iter()
            .map(to_cri_image)
            .collect();
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        request: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let request = request.into_inner();
        let name = image_name(request.image.as_ref())?;
        // An unknown image is an empty answer, not an error (the CRI contract).
        let Some(image) = self.images.status(name)? else {
            return Ok(Response::new(cri::ImageStatusResponse::default()));
        };
        let mut info = std::collections::HashMap::new();
        if request.verbose {
            let config = self.images.config_json(&image.id).await?;
            let config: serde_json::Value = serde_json::from_str(&config)
                .map_err(|e| Status::internal(format!("image config of {}: {e}", image.id)))?;
            let verbose = serde_json::json!({
                "imageSpec": config,
                "chainIDs": image.chain_ids,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(Response::new(cri::ImageStatusResponse {
            image: Some(to_cri_image(image)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let request = request.into_inner();
        let name = image_name(request.image.as_ref())?.to_string();
        let auth = match request.auth {
            Some(auth) => to_registry_auth(auth)?,
            None => None,
        };
        let image_ref = self.images.pull(&name, auth).await?;
        Ok(Response::new(cri::PullImageResponse { image_ref }))
    }

    async fn remove_image(
        &self,
        request: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let request = request.into_inner();
        let name = image_name(request.image.as_ref())?;
        self.images.remove(name).await?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let usage = self.images.fs_info().await?;
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![to_cri_usage(usage)],
            container_filesystems: Vec::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_field_decodes_and_explicit_fields_win() {
        let auth = cri::AuthConfig {
            auth: "YmVydGg6YmVydGgtc2VjcmV0".into(), // berth:berth-secret
            ..Default::default()
        };
        let got = to_registry_auth(auth).unwrap().unwrap();
        assert_eq!(
            (got.username.as_str(), got.password.as_str()),
            ("berth", "berth-secret")
        );
        let auth = cri::AuthConfig {
            username: "u".into(),
            password: "p".into(),
            auth: "YmVydGg6YmVydGgtc2VjcmV0".into(),
            ..Default::default()
        };
        assert_eq!(to_registry_auth(auth).unwrap().unwrap().username, "u");
        assert_eq!(to_registry_auth(cri::AuthConfig::default()).unwrap(), None);
        let bad = cri::AuthConfig {
            auth: "%%%secret%%%".into(),
            ..Default::default()
        };
        let err = to_registry_auth(bad).unwrap_err();
        assert!(!err.message().contains("secret"), "{err}");
    }

    #[test]
    fn images_convert_with_uid_or_username() {
        let image = Image {
            id: "sha256:abc".into(),
            repo_tags: vec!["a:b".into()],
            repo_digests: vec![],
            size: 7,
            uid: Some(1002),
            username: String::new(),
            pinned: false,
            chain_ids: vec![],
        };
        let cri = to_cri_image(image);
        assert_eq!(cri.uid, Some(cri::Int64Value { value: 1002 }));
        assert_eq!(cri.spec.unwrap().image, "sha256:abc");
        assert_eq!(cri.size, 7);
    }
}
