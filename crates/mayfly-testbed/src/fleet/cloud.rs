//! What the fleet needs from EC2 beyond the [`Compute`](mayfly::ports::Compute) port: each
//! instance's user-data (DescribeInstanceAttribute, base64-decoded), and the AWS settings
//! its scripts get in their environment.

use std::fmt;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ec2::config::ProvideCredentials;
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
