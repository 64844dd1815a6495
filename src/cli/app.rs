//! Connecting to AWS once per command: SDK configuration from the global options and the
//! standard AWS chain, the counting clients, and the adapters behind each port.

use std::sync::Arc;

use super::{CliError, GlobalArgs, PassArgs};
use crate::aws::dynamo::{DynamoConfigStore, DynamoLedger};
use crate::aws::ec2::Ec2Compute;
use crate::aws::iam::IamReader;
use crate::aws::quotas::ServiceQuotas;
use crate::aws::sqs::SqsQueue;
use crate::aws::{self, counting::CallCounter, Clients};
use crate::ledger_index::Retention;
use crate::names::Names;
use crate::ports::{ConfigStore, Ledger, QueueError, StoreError};
use crate::ratelimit::Ec2Limits;
use crate::scheduler::{Deps, EventSenders, Scheduler, Settings, TickError};
use crate::userdata::{InstanceEnv, TemplateUserData};

/// The real adapters of one deployment.
#[derive(Debug)]
pub struct App {
    pub names: Names,
    clients: Clients,
    region: String,
    endpoint_url: Option<String>,
    retention: Retention,
}

impl App {
    pub async fn connect(global: &GlobalArgs) -> Result<Self, CliError> {
        let sdk = aws::load_sdk_config(
            global.region.as_deref(),
            global.endpoint_url.as_deref(),
            global.profile.as_deref(),
        )
        .await;
        let region = sdk.region().map(ToString::to_string).ok_or_else(|| {
            CliError::Invalid("no AWS region: pass --region or set AWS_REGION".into())
        })?;
        Ok(Self {
            names: Names::new(&global.name),
            clients: Clients::new(&sdk),
            region,
            retention: Retention {
                days: global.retention_days,
            },
            endpoint_url: global
                .endpoint_url
                .clone()
                .or_else(|| sdk.endpoint_url().map(str::to_owned))
                .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok()),
        })
    }

    pub fn dynamodb(&self) -> &aws_sdk_dynamodb::Client {
        &self.clients.dynamodb
    }

    pub fn calls(&self) -> &CallCounter {
        &self.clients.calls
    }

    /// The endpoint every AWS call goes to instead of AWS's own, when one is set (an
    /// emulator, in practice).
    pub fn endpoint_url(&self) -> Option<&str> {
        self.endpoint_url.as_deref()
    }

    /// The account's vCPU quotas (Service Quotas).
    pub fn quotas(&self) -> ServiceQuotas {
        ServiceQuotas::new(self.clients.servicequotas.clone())
    }

    /// EC2 as `preflight` checks a launch.
    pub fn ec2(&self) -> Ec2Compute {
        Ec2Compute::new(self.clients.ec2.clone(), Arc::new(Ec2Limits::default()))
    }

    /// IAM as `preflight` reads it.
    pub fn iam(&self) -> IamReader {
        IamReader::new(self.clients.iam.clone())
    }

    pub fn config(&self) -> Arc<dyn ConfigStore> {
        Arc::new(DynamoConfigStore::new(
            self.clients.dynamodb.clone(),
            self.names.payers_table(),
        ))
    }

    pub fn ledger(&self) -> Arc<dyn Ledger> {
        Arc::new(self.dynamo_ledger())
    }

    /// The ledger adapter itself, with the deployment's retention.
    pub fn dynamo_ledger(&self) -> DynamoLedger {
        DynamoLedger::new(self.clients.dynamodb.clone(), self.names.jobs_table())
            .with_retention(self.retention)
    }

    async fn queue(&self, name: String) -> Result<SqsQueue, CliError> {
        SqsQueue::by_name(self.clients.sqs.clone(), &name)
            .await
            .map_err(|e| self.queue_error(&format!("queue {name}"), e))
    }

    /// Where this command's AWS calls go, for messages.
    fn endpoint(&self) -> String {
        match &self.endpoint_url {
            Some(url) => url.clone(),
            None => format!("AWS in {}", self.region),
        }
    }

    /// The deployment's table or queue `what` is not there: say which deployment was looked
    /// for, how another is chosen, and how this one is created.
    fn missing(&self, what: &str) -> CliError {
        let name = &self.names.deployment;
        CliError::Runtime(format!(
            "deployment `{name}` not found ({what} does not exist at {}): choose another with --name or MAYFLY_NAME, or create it by deploying infra/mayfly.yaml with DeploymentName={name} (infra/README.md; in the emulator: scripts/emulator.sh deploy {name})",
            self.endpoint()
        ))
    }

    /// A call that got no answer: one sentence on where, what failed and what to check.
    fn unreachable(&self, service: &str, what: &str) -> CliError {
        CliError::Runtime(format!(
            "cannot reach {service} at {} ({what}): check --endpoint-url (or AWS_ENDPOINT_URL), --region and that the endpoint is up; -v shows the detail",
            self.endpoint()
        ))
    }

    /// A failure of the config table or the ledger, for an operator. A missing table points
    /// at the deployment; a refused connection or a throttle never does.
    pub fn store_error(&self, context: &str, e: StoreError) -> CliError {
        match e {
            StoreError::NotFound(what) => self.missing(&what),
            StoreError::Unreachable(what) => self.unreachable("DynamoDB", &what),
            StoreError::Throttled(what) => CliError::Runtime(format!(
                "{context}: DynamoDB is throttling ({what}); try again in a moment"
            )),
            other => CliError::Runtime(format!("{context}: {other}")),
        }
    }

    /// A failure of a queue, for an operator (as [`App::store_error`]).
    pub fn queue_error(&self, context: &str, e: QueueError) -> CliError {
        match e {
            QueueError::NotFound(what) => self.missing(&what),
            QueueError::Unreachable(what) => self.unreachable("SQS", &what),
            QueueError::Throttled(code) => CliError::Runtime(format!(
                "{context}: SQS is throttling ({code}); try again in a moment"
            )),
            QueueError::Denied(what) | QueueError::Other(what) => {
                CliError::Runtime(format!("{context}: {what}"))
            }
        }
    }

    /// A pass that could not run.
    pub fn tick_error(&self, e: TickError) -> CliError {
        match e {
            TickError::Store(e) => self.store_error("reading the ledger or config table", e),
        }
    }

    pub async fn intake(&self) -> Result<SqsQueue, CliError> {
        self.queue(self.names.intake_queue()).await
    }

    /// A scheduler wired to this deployment.
    pub async fn scheduler(&self, pass: &PassArgs) -> Result<Scheduler, CliError> {
        if pass.unverified_event_senders && self.endpoint_url.is_none() {
            return Err(CliError::Invalid(
                "--unverified-event-senders (MAYFLY_UNVERIFIED_EVENT_SENDERS): only against an \
                 emulator (--endpoint-url or AWS_ENDPOINT_URL); on AWS, SQS names every \
                 event's sender and mayfly applies an event only from the instance it names"
                    .into(),
            ));
        }
        let events = self.queue(self.names.events_queue()).await?;
        let events_url = events.url().to_owned();
        let env = InstanceEnv {
            events_queue_url: events_url.clone(),
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
            ..InstanceEnv::default()
        };
        let deps = Deps {
            events: Arc::new(events),
            config: self.config(),
            ledger: self.ledger(),
            intake: Arc::new(self.intake().await?),
            intake_dlq: Arc::new(self.queue(self.names.intake_dlq()).await?),
            events_dlq: Arc::new(self.queue(self.names.events_dlq()).await?),
            compute: Arc::new(Ec2Compute::new(
                self.clients.ec2.clone(),
                Arc::new(Ec2Limits::default()),
            )),
            user_data: Arc::new(TemplateUserData::builtin(env)),
        };
        let mut settings = Settings::new(self.names.cluster());
        settings.caps = pass.caps.caps();
        settings.vcpu_quota = pass.vcpu_quota;
        settings
            .root_volume_kms_key
            .clone_from(&pass.root_volume_kms_key);
        settings.max_launches = pass.max_launches;
        if pass.unverified_event_senders {
            settings.event_senders = EventSenders::Unverified;
        }
        settings.max_group = pass.max_group;
        settings.group_min_is_max = pass.group_min_is_max;
        settings.lost_grace = chrono::Duration::seconds(pass.reap.lost_grace.as_secs() as i64);
        settings.orphan_grace = chrono::Duration::seconds(pass.reap.orphan_grace.as_secs() as i64);
        Ok(Scheduler::new(deps, settings).with_quotas(Arc::new(self.quotas())))
    }
}
