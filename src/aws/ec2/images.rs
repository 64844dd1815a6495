//! The root device of the image a launch uses, read with DescribeImages once per image and
//! kept for the life of the adapter (one per process), so a launch after the first for an
//! image makes no call but its RunInstances.
//!
//! Images name their root device differently: Amazon Linux `/dev/xvda`; Ubuntu, Debian and
//! most marketplace images `/dev/sda1`. A block device mapping on any other device than the
//! image's root adds a second, empty volume and leaves the root as the image made it (its
//! size, and unencrypted if its snapshot is), so the launch sizes and encrypts the device
//! the image names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::{debug, warn};

use super::{sdk_error, Ec2Compute};
use crate::ports::ComputeError;

/// Image id → root device name, shared by the adapter's clones.
#[derive(Debug, Default, Clone)]
pub(super) struct RootDevices(Arc<Mutex<HashMap<String, String>>>);

impl RootDevices {
    fn get(&self, image_id: &str) -> Option<String> {
        self.lock().get(image_id).cloned()
    }

    fn insert(&self, image_id: &str, device: &str) {
        self.lock().insert(image_id.to_owned(), device.to_owned());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // The map is only ever inserted into whole entries: a panic elsewhere leaves it valid.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Ec2Compute {
    /// The root device name of `image_id`, or `None` when EC2 does not know the image (or it
    /// names no root device): RunInstances then gives EC2's own answer about the image. Only
    /// a known device is kept; an image not found is asked about again on its next launch.
    pub(super) async fn root_device(&self, image_id: &str) -> Result<Option<String>, ComputeError> {
        if let Some(device) = self.root_devices.get(image_id) {
            return Ok(Some(device));
        }
        self.limits.describe.acquire().await;
        let out = match self
            .client
            .describe_images()
            .image_ids(image_id)
            .send()
            .await
            .map_err(sdk_error)
        {
            Ok(out) => out,
            Err(ComputeError::Configuration { code, message })
                if code.starts_with("InvalidAMIID.") =>
            {
                warn!(%image_id, %code, %message, "DescribeImages does not know the image; RunInstances will answer for it.");
                return Ok(None);
            }
            Err(ComputeError::Configuration { code, message }) => {
                return Err(ComputeError::Configuration {
                    code,
                    message: format!("DescribeImages of {image_id} (its root device): {message}"),
                })
            }
            Err(other) => return Err(other),
        };
        let device = out
            .images()
            .iter()
            .find(|i| i.image_id() == Some(image_id))
            .and_then(|i| i.root_device_name())
            .filter(|d| !d.is_empty());
        match device {
            Some(device) => {
                debug!(%image_id, root_device = %device, "Read the image's root device.");
                self.root_devices.insert(image_id, device);
                Ok(Some(device.to_owned()))
            }
            None => {
                warn!(%image_id, "DescribeImages named no root device for the image; RunInstances will answer for it.");
                Ok(None)
            }
        }
    }
}
