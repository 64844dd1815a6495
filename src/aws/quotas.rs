//! [`QuotaReader`] on Service Quotas: one `GetServiceQuota` (service code `ec2`) per vCPU
//! quota the payers' launches count against.

use std::collections::BTreeSet;

use async_trait::async_trait;
use tracing::debug;

use super::aws_error;
use crate::ports::{AwsError, QuotaReader};
use crate::quota::{AccountQuotas, QuotaPool};

/// Service Quotas' code for EC2.
const SERVICE_CODE: &str = "ec2";

/// Service Quotas behind [`QuotaReader`].
#[derive(Debug, Clone)]
pub struct ServiceQuotas {
    client: aws_sdk_servicequotas::Client,
}

impl ServiceQuotas {
    pub fn new(client: aws_sdk_servicequotas::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl QuotaReader for ServiceQuotas {
    async fn vcpu_quotas(&self, pools: &BTreeSet<QuotaPool>) -> Result<AccountQuotas, AwsError> {
        let mut quotas = AccountQuotas::new();
        for &pool in pools {
            let named = |e: AwsError| AwsError {
                code: e.code,
                message: format!("GetServiceQuota {}: {}", pool.code(), e.message),
            };
            let out = self
                .client
                .get_service_quota()
                .service_code(SERVICE_CODE)
                .quota_code(pool.code())
                .send()
                .await
                .map_err(|e| named(aws_error(e)))?;
            let value = out
                .quota()
                .and_then(|q| q.value())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| {
                    named(AwsError {
                        code: "response".into(),
                        message: "the answer has no value".into(),
                    })
                })?;
            // vCPU quotas are whole numbers; a fraction would round down to what fits.
            let vcpus = value.min(f64::from(u32::MAX)) as u32;
            debug!(quota = pool.code(), vcpus, "Read a vCPU quota.");
            quotas.insert(pool, vcpus);
        }
        Ok(quotas)
    }
}
