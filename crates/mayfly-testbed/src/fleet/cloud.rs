//! What the fleet needs from EC2 beyond the [`Compute`](mayfly::ports::Compute) port: each
//! instance's user-data (DescribeInstanceAttribute, base64-decoded), the credentials of its
//! instance profile's role (as EC2 hands them to an instance: STS AssumeRole, the session
//! named after the instance), and the AWS settings its scripts get in their environment.

use std::fmt;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ec2::config::ProvideCredentials;
use aws_sdk_ec2::error::DisplayErrorContext;
use aws_sdk_ec2::types::InstanceAttributeName;
use base64::Engine as _;

use mayfly::aws::ec2::sdk_error;
use mayfly::ports::ComputeError;

/// Reads an instance's user-data.
#[async_trait]
pub trait UserDataReader: Send + Sync {
    /// The decoded user-data, or `None` if the instance has none.
    async fn user_data(&self, instance_id: &str) -> Result<Option<Vec<u8>>, ComputeError>;
}

/// [`UserDataReader`] on EC2.
#[derive(Debug, Clone)]
pub struct Ec2UserData {
    client: aws_sdk_ec2::Client,
}

impl Ec2UserData {
    pub fn new(client: aws_sdk_ec2::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl UserDataReader for Ec2UserData {
    async fn user_data(&self, instance_id: &str) -> Result<Option<Vec<u8>>, ComputeError> {
        let out = self
            .client
            .describe_instance_attribute()
            .instance_id(instance_id)
            .attribute(InstanceAttributeName::UserData)
            .send()
            .await
            .map_err(sdk_error)?;
        let Some(encoded) = out.user_data().and_then(|v| v.value()) else {
            return Ok(None);
        };
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map(Some)
            .map_err(|e| ComputeError::Transient {
                code: "response".into(),
                message: format!("user-data of {instance_id} is not base64: {e}"),
            })
    }
}

/// Temporary credentials of an instance's role, as its metadata endpoint serves them.
#[derive(Clone, PartialEq, Eq)]
pub struct RoleCredentials {
    pub role_name: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration: chrono::DateTime<chrono::Utc>,
}

impl fmt::Debug for RoleCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleCredentials")
            .field("role_name", &self.role_name)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

/// The role credentials EC2 would give an instance.
#[async_trait]
pub trait InstanceRoles: Send + Sync {
    /// Credentials of the role of `instance_id`'s instance profile, assumed with the
    /// instance id as the session name (so what it sends to SQS carries `SenderId`
    /// `<role id>:<instance id>`, as on EC2); `None` for an instance without a profile.
    async fn credentials(&self, instance_id: &str) -> Result<Option<RoleCredentials>, String>;
}

/// [`InstanceRoles`] on EC2, IAM and STS.
#[derive(Debug, Clone)]
pub struct StsInstanceRoles {
    ec2: aws_sdk_ec2::Client,
    iam: aws_sdk_iam::Client,
    sts: aws_sdk_sts::Client,
}

impl StsInstanceRoles {
    pub fn new(sdk: &SdkConfig) -> Self {
        Self {
            ec2: aws_sdk_ec2::Client::new(sdk),
            iam: aws_sdk_iam::Client::new(sdk),
            sts: aws_sdk_sts::Client::new(sdk),
        }
    }
}

#[async_trait]
impl InstanceRoles for StsInstanceRoles {
    async fn credentials(&self, instance_id: &str) -> Result<Option<RoleCredentials>, String> {
        let described = self
            .ec2
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "DescribeInstances {instance_id}: {}",
                    DisplayErrorContext(e)
                )
            })?;
        let Some(profile_arn) = described
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find_map(|i| i.iam_instance_profile().and_then(|p| p.arn()))
        else {
            return Ok(None);
        };
        let name = profile_arn.rsplit('/').next().unwrap_or(profile_arn);
        let profile = self
            .iam
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
            .map_err(|e| format!("GetInstanceProfile {name}: {}", DisplayErrorContext(e)))?;
        let role = profile
            .instance_profile()
            .and_then(|p| p.roles().first())
            .ok_or_else(|| format!("instance profile {name} holds no role"))?;
        let assumed = self
            .sts
            .assume_role()
            .role_arn(role.arn())
            .role_session_name(instance_id)
            .send()
            .await
            .map_err(|e| format!("AssumeRole {}: {}", role.arn(), DisplayErrorContext(e)))?;
        let c = assumed
            .credentials()
            .ok_or_else(|| format!("AssumeRole {} returned no credentials", role.arn()))?;
        let expiration = chrono::DateTime::from_timestamp(c.expiration().secs(), 0)
            .unwrap_or_else(|| chrono::Utc::now() + chrono::Duration::hours(1));
        Ok(Some(RoleCredentials {
            role_name: role.role_name().to_owned(),
            access_key_id: c.access_key_id().to_owned(),
            secret_access_key: c.secret_access_key().to_owned(),
            session_token: c.session_token().to_owned(),
            expiration,
        }))
    }
}

/// The AWS settings an instance's scripts see: the emulator endpoint, its region and the
/// (dummy) credentials the fleet itself uses.
#[derive(Clone, PartialEq, Eq)]
pub struct InstanceAws {
    pub endpoint_url: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for InstanceAws {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceAws")
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field("access_key_id", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl InstanceAws {
    /// From the fleet's own SDK configuration. The fleet only runs against an emulator, so
    /// an endpoint override is required.
    pub async fn from_sdk(sdk: &SdkConfig) -> Result<Self, String> {
        let endpoint_url = sdk
            .endpoint_url()
            .filter(|u| !u.is_empty())
            .ok_or("no emulator endpoint: pass --endpoint-url or set AWS_ENDPOINT_URL")?
            .to_owned();
        let region = sdk
            .region()
            .ok_or("no region: pass --region or set AWS_REGION")?
            .to_string();
        let provider = sdk
            .credentials_provider()
            .ok_or("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")?;
        let creds = provider
            .provide_credentials()
            .await
            .map_err(|e| format!("no credentials: {e}"))?;
        Ok(Self {
            endpoint_url,
            region,
            access_key_id: creds.access_key_id().to_owned(),
            secret_access_key: creds.secret_access_key().to_owned(),
            session_token: creds.session_token().map(str::to_owned),
        })
    }

    /// The endpoint and region for an instance's scripts, without credentials: an
    /// instance that has its role's credentials on its metadata endpoint reads them there.
    pub fn env_without_credentials(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".to_owned(), self.endpoint_url.clone()),
            ("AWS_REGION".to_owned(), self.region.clone()),
            ("AWS_DEFAULT_REGION".to_owned(), self.region.clone()),
        ]
    }

    /// The environment variables for an instance's scripts.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("AWS_ENDPOINT_URL".to_owned(), self.endpoint_url.clone()),
            ("AWS_REGION".to_owned(), self.region.clone()),
            ("AWS_DEFAULT_REGION".to_owned(), self.region.clone()),
            ("AWS_ACCESS_KEY_ID".to_owned(), self.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".to_owned(),
                self.secret_access_key.clone(),
            ),
        ];
        if let Some(token) = &self.session_token {
            env.push(("AWS_SESSION_TOKEN".to_owned(), token.clone()));
        }
        env
    }
}
