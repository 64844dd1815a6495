//! Whose role a payer's jobs run as. `payers diff` shows, and `payers apply` refuses, a
//! profile whose instance profile is outside the deployment's IAM path (`/mayfly/NAME/`,
//! where `infra/payer.yaml` creates each payer's role: the scheduler may pass no other) or is
//! already another payer's: a payer's role reads that payer's data, so it is that payer's
//! alone. The deployment's own instance profile (`NAME-instance`), whose role reads nothing,
//! may be shared.

use std::collections::BTreeMap;

use crate::names::{deployment_instance_profile, payer_role_path};
use crate::ports::{AwsError, IdentityChecks, InstanceProfileInfo};

/// IAM's error code for a name that does not exist.
const NO_SUCH_ENTITY: &str = "NoSuchEntity";

/// What IAM says of an instance profile a payer names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The deployment's own, which needs no lookup.
    Deployment,
    Profile(InstanceProfileInfo),
    /// It does not exist (yet): `preflight` reports it; nothing here to refuse.
    Missing,
}

/// Looks up `name` unless it is the deployment's own instance profile.
pub async fn look_up(
    iam: &dyn IdentityChecks,
    deployment: &str,
    name: &str,
) -> Result<Found, AwsError> {
    if name == deployment_instance_profile(deployment) {
        return Ok(Found::Deployment);
    }
    match iam.instance_profile(name).await {
        Ok(info) => Ok(Found::Profile(info)),
        Err(e) if e.code == NO_SUCH_ENTITY => Ok(Found::Missing),
        Err(e) => Err(e),
    }
}

/// Why `payer_id` may not name instance profile `name` (as IAM `found` it), if it may not.
/// `owners` maps instance profiles to the payers that already name them.
pub fn refusal(
    deployment: &str,
    payer_id: &str,
    name: &str,
    found: &Found,
    owners: &BTreeMap<String, String>,
) -> Option<String> {
    let info = match found {
        Found::Deployment | Found::Missing => return None,
        Found::Profile(info) => info,
    };
    if let Some(other) = owners.get(name).filter(|other| *other != payer_id) {
        return Some(format!(
            "launch.instance_profile: instance profile {name} is already payer {other}'s; a \
             payer's role reads that payer's data, so each payer needs its own (one \
             infra/payer.yaml stack per payer)"
        ));
    }
    let path = payer_role_path(deployment);
    if info.path != path {
        return Some(format!(
            "launch.instance_profile: instance profile {name} is at IAM path {}, outside {path}: \
             the scheduler passes only roles of this deployment's payers (create the payer's \
             role and instance profile with infra/payer.yaml, DeploymentName={deployment})",
            info.path
        ));
    }
    if let Some((role, role_path)) = info
        .roles
        .iter()
        .zip(&info.role_paths)
        .find(|(_, p)| **p != path)
    {
        return Some(format!(
            "launch.instance_profile: instance profile {name} holds role {role} at IAM path \
             {role_path}, outside {path}: the scheduler may not pass it (infra/payer.yaml \
             creates the role under the path)"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &str, role_path: &str) -> Found {
        Found::Profile(InstanceProfileInfo {
            name: "p".into(),
            path: path.into(),
            roles: vec!["r".into()],
            role_paths: vec![role_path.into()],
        })
    }

    #[test]
    fn a_payer_names_a_profile_of_its_own_under_the_deployment_path() {
        let none = BTreeMap::new();
        let ok = at("/mayfly/prod/", "/mayfly/prod/");
        assert_eq!(refusal("prod", "a", "p", &ok, &none), None);
        assert_eq!(refusal("prod", "a", "p", &Found::Deployment, &none), None);
        assert_eq!(refusal("prod", "a", "p", &Found::Missing, &none), None);

        let outside = refusal("prod", "a", "p", &at("/", "/"), &none).unwrap();
        assert!(
            outside.starts_with("launch.instance_profile: instance profile p is at IAM path /, outside /mayfly/prod/"),
            "{outside}"
        );
        let other_deployment = refusal(
            "prod",
            "a",
            "p",
            &at("/mayfly/staging/", "/mayfly/staging/"),
            &none,
        );
        assert!(other_deployment.is_some());
        let role_outside = refusal("prod", "a", "p", &at("/mayfly/prod/", "/"), &none).unwrap();
        assert!(
            role_outside.contains("holds role r at IAM path /"),
            "{role_outside}"
        );

        let owners = BTreeMap::from([("p".to_owned(), "b".to_owned())]);
        let taken = refusal("prod", "a", "p", &ok, &owners).unwrap();
        assert!(
            taken.starts_with("launch.instance_profile: instance profile p is already payer b's"),
            "{taken}"
        );
        assert_eq!(refusal("prod", "b", "p", &ok, &owners), None, "its own");
    }
}
