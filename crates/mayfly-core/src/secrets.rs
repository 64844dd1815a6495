//! Detection of values that look like secrets or credentials, so they are refused before they
//! reach a config row, a job parameter or rendered user-data. Secrets belong in a secret store
//! and are referenced (`ssm:/path`, `arn:aws:secretsmanager:…`), fetched by the instance at boot.

/// Names that suggest the value is a credential.
const SECRET_NAME_HINTS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "API_KEY",
    "APIKEY",
    "PRIVATE_KEY",
    "CREDENTIAL",
    "ACCESS_KEY",
];

/// Whether a variable name suggests it carries a credential (case-insensitive).
pub fn name_suggests_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase().replace('-', "_");
    SECRET_NAME_HINTS.iter().any(|h| upper.contains(h))
}

/// Whether `value` is a reference to a secret store rather than a secret.
pub fn is_secret_reference(value: &str) -> bool {
    value.starts_with("ssm:/")
        || value.starts_with("arn:aws:secretsmanager:")
        || value.starts_with("arn:aws:ssm:")
}

/// If `value` looks like a credential, says what it looks like.
pub fn looks_like_secret(value: &str) -> Option<&'static str> {
    if value.contains("-----BEGIN") {
        return Some("a PEM private key or certificate");
    }
    for prefix in ["AKIA", "ASIA"] {
        if let Some(pos) = value.find(prefix) {
            let rest = &value[pos + 4..];
            if rest.len() >= 16
                && rest[..16]
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            {
                return Some("an AWS access key id");
            }
        }
    }
    if value.starts_with("ghp_") || value.starts_with("xoxb-") || value.starts_with("sk_live_") {
        return Some("an API token");
    }
    if let Some((_, after_scheme)) = value.split_once("://") {
        let authority = after_scheme.split('/').next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if userinfo.contains(':') {
                return Some("a URL with an embedded password");
            }
        }
    }
    // A 40-character base64 run is the shape of an AWS secret access key.
    let longest_b64_run = value
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/'))
        .filter(|run| run.len() >= 40)
        .any(|run| {
            let has_upper = run.bytes().any(|b| b.is_ascii_uppercase());
            let has_lower = run.bytes().any(|b| b.is_ascii_lowercase());
            let has_digit = run.bytes().any(|b| b.is_ascii_digit());
            has_upper && has_lower && has_digit
        });
    if longest_b64_run {
        return Some("a long random key");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_credential_shapes() {
        assert!(looks_like_secret("AKIAABCDEFGHIJKLMNOP").is_some());
        assert!(looks_like_secret("key=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY12").is_some());
        assert!(looks_like_secret("postgres://etl:hunter2@db.internal/claims").is_some());
        assert!(looks_like_secret("-----BEGIN RSA PRIVATE KEY-----").is_some());
    }

    #[test]
    fn leaves_ordinary_values_alone() {
        for v in [
            "s3://payer-drops/acme/2026-11-01/claims.x12",
            "/opt/pipeline/bin/load-claims",
            "--strict",
            "https://example.org/path",
            "subnet-0a1b2c3d4e5f60718",
        ] {
            assert_eq!(looks_like_secret(v), None, "{v}");
        }
    }

    #[test]
    fn names_and_references() {
        assert!(name_suggests_secret("db_password"));
        assert!(name_suggests_secret("SFTP-TOKEN"));
        assert!(!name_suggests_secret("LOG_LEVEL"));
        assert!(is_secret_reference("ssm:/mayfly/acme/sftp"));
        assert!(is_secret_reference(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:acme-sftp"
        ));
    }
}
