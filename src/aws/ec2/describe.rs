//! Reading instances back from EC2: the paginated DescribeInstances by mayfly's tags, and the
//! conversion of each SDK [`Instance`] into a [`ManagedInstance`], done once here so nothing
//! past the adapter sees SDK types.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, Instance, InstanceLifecycleType, InstanceStateName};
use chrono::{DateTime, Utc};
use tracing::warn;

use super::{sdk_error_on, Ec2Compute};
use crate::ports::{ComputeError, InstanceState, ManagedInstance};
use crate::state_reason::StateReason;

impl Ec2Compute {
    /// Every instance matching `filters`, following every page.
    pub(super) async fn describe(
        &self,
        filters: Vec<Filter>,
    ) -> Result<Vec<ManagedInstance>, ComputeError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            self.limits.describe.acquire().await;
            let page = self
                .client
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .max_results(self.page_size)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(sdk_error_on("DescribeInstances", || {
                    "every instance (EC2 allows describes on no narrower resource)".to_owned()
                }))?;
            for reservation in page.reservations() {
                out.extend(reservation.instances().iter().filter_map(managed_instance));
            }
            match page.next_token() {
                Some(next) if !next.is_empty() => {
                    if token.as_deref() == Some(next) {
                        return Err(ComputeError::Transient {
                            code: "response".into(),
                            message: "DescribeInstances returned the same NextToken twice".into(),
                        });
                    }
                    token = Some(next.to_owned());
                }
                _ => break,
            }
        }
        out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(out)
    }
}

pub(super) fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{key}"))
        .values(value)
        .build()
}

pub(super) fn to_chrono(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

fn instance_state(name: Option<&InstanceStateName>) -> InstanceState {
    match name {
        Some(InstanceStateName::Pending) => InstanceState::Pending,
        Some(InstanceStateName::Running) => InstanceState::Running,
        Some(InstanceStateName::ShuttingDown) => InstanceState::ShuttingDown,
        Some(InstanceStateName::Terminated) => InstanceState::Terminated,
        Some(InstanceStateName::Stopping) => InstanceState::Stopping,
        Some(InstanceStateName::Stopped) => InstanceState::Stopped,
        other => {
            // A state this SDK does not know (or none): treat it as live, so the reconciler
            // still accounts for it and may reap it, rather than ignoring a billed instance.
            warn!(state = ?other, "Unknown instance state; treating it as pending.");
            InstanceState::Pending
        }
    }
}

fn managed_instance(i: &Instance) -> Option<ManagedInstance> {
    let Some(instance_id) = i.instance_id() else {
        warn!("DescribeInstances returned an instance without an id; skipped.");
        return None;
    };
    let tags: BTreeMap<String, String> = i
        .tags()
        .iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect();
    Some(ManagedInstance {
        instance_id: instance_id.to_owned(),
        state: instance_state(i.state().and_then(|s| s.name())),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        availability_zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_owned),
        spot: i.instance_lifecycle() == Some(&InstanceLifecycleType::Spot),
        launched_at: i.launch_time().and_then(to_chrono),
        tags,
        state_reason: i
            .state_reason()
            .and_then(|r| Some(StateReason::new(r.code()?, r.message().unwrap_or_default()))),
        launch_index: i.ami_launch_index().and_then(|n| u32::try_from(n).ok()),
    })
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::{InstanceType, Tag};

    use super::*;
    use crate::names::tags;

    #[test]
    fn converts_instances_once() {
        let i = Instance::builder()
            .instance_id("i-0abc")
            .instance_type(InstanceType::M5Large)
            .instance_lifecycle(InstanceLifecycleType::Spot)
            .state(
                aws_sdk_ec2::types::InstanceState::builder()
                    .name(InstanceStateName::ShuttingDown)
                    .build(),
            )
            .launch_time(aws_smithy_types::DateTime::from_secs(1_700_000_000))
            .state_reason(
                aws_sdk_ec2::types::StateReason::builder()
                    .code("Client.VolumeLimitExceeded")
                    .message("Client.VolumeLimitExceeded: Volume limit exceeded")
                    .build(),
            )
            .tags(Tag::builder().key(tags::CLUSTER).value("c1").build())
            .tags(Tag::builder().value("no key").build())
            .build();
        let m = managed_instance(&i).expect("has an id");
        assert_eq!(m.instance_id, "i-0abc");
        assert_eq!(m.instance_type, "m5.large");
        assert_eq!(m.state, InstanceState::ShuttingDown);
        assert!(m.spot);
        assert_eq!(m.launched_at.map(|t| t.timestamp()), Some(1_700_000_000));
        assert_eq!(m.tag(tags::CLUSTER), Some("c1"));
        assert_eq!(m.tags.len(), 1);
        assert_eq!(
            m.state_reason.map(|r| r.code),
            Some("Client.VolumeLimitExceeded".to_owned())
        );
        assert!(managed_instance(&Instance::builder().build()).is_none());
        assert_eq!(
            instance_state(Some(&InstanceStateName::from("hibernating"))),
            InstanceState::Pending
        );
    }
}
