//! [`IdentityChecks`] on IAM: the two reads `preflight` makes, an instance profile (does it
//! exist, which role does it hold) and whether a role exists (the spot service-linked role).

use async_trait::async_trait;

use super::aws_error;
use crate::ports::{AwsError, IdentityChecks, InstanceProfileInfo};

/// IAM's error code for a name that does not exist.
const NO_SUCH_ENTITY: &str = "NoSuchEntity";

/// IAM behind [`IdentityChecks`].
#[derive(Debug, Clone)]
pub struct IamReader {
    client: aws_sdk_iam::Client,
}

impl IamReader {
    pub fn new(client: aws_sdk_iam::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl IdentityChecks for IamReader {
    async fn instance_profile(&self, name: &str) -> Result<InstanceProfileInfo, AwsError> {
        let out = self
            .client
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
            .map_err(aws_error)?;
        let profile = out.instance_profile();
        let roles = profile.map(|p| p.roles()).unwrap_or_default();
        Ok(InstanceProfileInfo {
            name: name.to_owned(),
            path: profile.map_or("/", |p| p.path()).to_owned(),
            roles: roles.iter().map(|r| r.role_name().to_owned()).collect(),
            role_paths: roles.iter().map(|r| r.path().to_owned()).collect(),
        })
    }

    async fn role_exists(&self, name: &str) -> Result<bool, AwsError> {
        match self.client.get_role().role_name(name).send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = aws_error(e);
                if e.code == NO_SUCH_ENTITY {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }
}
